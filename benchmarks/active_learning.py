"""Active learning vs random selection: reward-model accuracy against the number of labelled pairs.

A pool of train prompts, each with k responses (noisy teacher + policy samples, as for the
reward data), judged by the verifier judge with label noise; the ensemble is K linear
Bradley-Terry heads on the frozen policy trunk (`reward.kind: heads`, so a round trains in
seconds). Both strategies start from the same random batch of prompts; each round adds `batch`
prompts: `random` at random, `uncertainty` the prompts with the highest mean ensemble spread
(`annotation.active.prompt_uncertainty`). Accuracy is the ensemble mean's accuracy on clean
validation pairs, averaged over the objectives, mean over seeds.

    python benchmarks/active_learning.py --policy workspace/models/sft --out active.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from statistics import fmean, pstdev

import torch
from transformers import AutoModel

from rlhfops.annotation.active import prompt_uncertainty, select_prompts
from rlhfops.annotation.judges import VerifierJudge
from rlhfops.annotation.pairs import collect_responses, judged_pairs
from rlhfops.config import load_config
from rlhfops.modeling import load_decoder, load_tokenizer
from rlhfops.reward.train import train_heads, trunk_features
from rlhfops.tasks import make_task


def featurise(trunk, tokenizer, prompts, responses, max_length):
    return trunk_features(trunk, tokenizer, prompts, responses, max_length)  # (N, H)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--pool", type=int, default=600, help="candidate train prompts")
    ap.add_argument("--val", type=int, default=300, help="validation prompts (clean labels)")
    ap.add_argument("--start", type=int, default=20, help="prompts labelled before the first round")
    ap.add_argument("--batch", type=int, default=20, help="prompts labelled per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()

    cfg = load_config(args.config)
    objectives = list(cfg.reward.objectives)
    task = make_task(cfg.task, seed=cfg.seed)
    policy = load_decoder(cfg, args.policy)
    tokenizer = load_tokenizer(args.policy)
    trunk = AutoModel.from_pretrained(str(args.policy), use_safetensors=True).eval()
    k = cfg.reward.data.responses_per_prompt

    def judged(split, n, noise):
        examples = task.examples(split, n)
        responses = [list(dict.fromkeys(r)) for r in collect_responses(task, examples, k, cfg.seed, cfg, policy)]
        judge = VerifierJudge(task, objectives, noise, cfg.seed)
        groups = []
        for ex, rs in zip(examples, responses, strict=True):
            groups.append((ex.prompt, rs, judge([ex.prompt] * len(rs), rs)))
        return groups

    pool = judged("train", args.pool, cfg.annotation.judge.label_noise)
    val = judged("val", args.val, 0.0)
    flat = [(p, r) for p, rs, _ in pool for r in rs]
    feats = featurise(trunk, tokenizer, [p for p, _ in flat], [r for _, r in flat], cfg.reward.max_length)
    index = {pr: i for i, pr in enumerate(flat)}
    groups_idx = [[index[(p, r)] for r in rs] for p, rs, _ in pool]
    pool_pairs = [judged_pairs([g], objectives, "max_min", cfg.seed) for g in pool]  # per prompt, per objective
    val_pairs = judged_pairs(val, objectives, "max_min", cfg.seed)
    val_feats = {}
    for obj in objectives:
        ps = val_pairs[obj]
        val_feats[obj] = (
            featurise(trunk, tokenizer, [x["prompt"] for x in ps], [x["chosen"] for x in ps], cfg.reward.max_length),
            featurise(trunk, tokenizer, [x["prompt"] for x in ps], [x["rejected"] for x in ps], cfg.reward.max_length),
        )

    def train_and_score(labelled: list[int], seed: int):
        """Val accuracy (mean over objectives), number of labelled pairs, per-response spread dicts."""
        accs, n_pairs = [], 0
        spreads = [{} for _ in flat]
        for obj in objectives:
            pairs = [x for i in labelled for x in pool_pairs[i][obj]]
            n_pairs += len(pairs)
            if not pairs:
                accs.append(0.5)
                for s in spreads:
                    s[obj] = 1.0
                continue
            fc = torch.stack([feats[index[(x["prompt"], x["chosen"])]] for x in pairs])
            fr = torch.stack([feats[index[(x["prompt"], x["rejected"])]] for x in pairs])
            weight, _ = train_heads(fc, fr, args.members, seed)  # (K, H)
            scores = weight @ feats.T  # (K, N)
            mu, sd = scores.mean(1, keepdim=True), scores.std(1, keepdim=True).clamp_min(1e-6)
            norm = (scores - mu) / sd
            for i, v in enumerate(norm.std(0, correction=0).tolist()):
                spreads[i][obj] = v
            vc, vr = val_feats[obj]
            margin = (((weight @ vc.T) - mu) / sd).mean(0) - (((weight @ vr.T) - mu) / sd).mean(0)
            accs.append((margin > 0).float().mean().item())
        return fmean(accs), n_pairs, spreads

    curves: dict[str, list[list[tuple[int, float]]]] = {"random": [], "uncertainty": []}
    for seed in range(args.seeds):
        start = random.Random(seed).sample(range(len(pool)), args.start)
        for strategy in curves:
            labelled = list(start)
            curve = []
            for _ in range(args.rounds + 1):
                acc, n_pairs, spreads = train_and_score(labelled, seed)
                curve.append((n_pairs, acc))
                rest = [i for i in range(len(pool)) if i not in set(labelled)]
                unc = prompt_uncertainty(spreads, [groups_idx[i] for i in rest])
                pick = select_prompts(unc, len(rest), args.batch, strategy, seed * 1000 + len(labelled))
                labelled += [rest[j] for j in pick]
            curves[strategy].append(curve)
            print(f"seed {seed} {strategy:11s} " + " ".join(f"{n}:{a:.3f}" for n, a in curve), flush=True)

    summary = {}
    for strategy, runs in curves.items():
        summary[strategy] = [
            {
                "round": r,
                "pairs_mean": fmean(run[r][0] for run in runs),
                "accuracy_mean": fmean(run[r][1] for run in runs),
                "accuracy_std": pstdev([run[r][1] for run in runs]),
            }
            for r in range(args.rounds + 1)
        ]
    result = {
        "config": vars(args) | {"policy": str(args.policy), "out": str(args.out)},
        "objectives": objectives,
        "curves": summary,
        "runs": curves,
        "seconds": time.time() - t0,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'round':>5} {'random pairs':>12} {'acc':>6} {'active pairs':>12} {'acc':>6}")
    for a, b in zip(summary["random"], summary["uncertainty"], strict=True):
        print(
            f"{a['round']:>5} {a['pairs_mean']:>12.1f} {a['accuracy_mean']:>6.3f} "
            f"{b['pairs_mean']:>12.1f} {b['accuracy_mean']:>6.3f}"
        )
    print(f"written to {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
