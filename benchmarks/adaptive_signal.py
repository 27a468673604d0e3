"""Which first-sample signal should give a prompt more samples? Adaptive N's two signals compared on
one draw, with a cycle's reward models.

    python benchmarks/adaptive_signal.py --workspace WS [--seed 0] [--cycle 3] [--out FILE]

WS is a `make demo` workspace (`rlhfops run -w WS --set seed=N`): its SFT policy draws Best-of-16
candidates on the `bon` stage's test prompts (`best_of_n.n_prompts`), the reward ensembles and PRM
of cycle `--cycle` score them with `best_of_n.scorer` (as `rlhfops bon` does), and the evaluation
judges grade them. For each signal the prompts are ordered hardest first:

    spread  the reward ensembles' mean spread on the first sample (high = hard)
    score   the scorer's own value of the first sample (low = hard)

and the hardest share f of prompts gets Best-of-16, the others keep their first sample. Printed
per signal and f: the share of Best-of-16's samples spent and the share of its gold gain over N=1
reached; and for the score signal at fixed thresholds (`best_of_n.adaptive_score`) the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean

from rlhfops.annotation.judges import eval_judges, labelled_mean
from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.inference.best_of_n import _draw, first_sample_spreads, score_candidates
from rlhfops.reward.build import best_of_n_scorer, composite_reward
from rlhfops.reward.functions import load_ensembles
from rlhfops.reward.prm import ProcessRewardModel
from rlhfops.tasks import make_task

N = 16
SHARES = (0.1, 0.2, 0.3, 0.4, 0.467, 0.6)  # 0.467 of the prompts at N=16 is 50% of its samples
THRESHOLDS = (-0.2, 0.0, 0.1, 0.2, 0.3)


def measure(workspace: Path, seed: int, cycle: int) -> dict:
    cfg = load_config("tiny", [f"seed={seed}"])
    task = make_task(cfg.task, seed=cfg.seed)
    prompts = [e.prompt for e in task.examples("test", cfg.best_of_n.n_prompts)]
    candidates = _draw(cfg, workspace / "models" / "sft", prompts, N)
    models = workspace / "models" / f"cycle-{cycle:04d}"
    ensembles = load_ensembles(models / "reward", cfg.reward.objectives)
    prm = ProcessRewardModel.load(models / "prm")
    scores = score_candidates(best_of_n_scorer(cfg, ensembles, prm), prompts, candidates)
    composite = composite_reward(cfg, ensembles=ensembles, prm=prm, prm_dir=models / "prm")
    flat = [(p, c) for p, cs in zip(prompts, candidates, strict=True) for c in cs]
    judged = iter(eval_judges(cfg, task)([p for p, _ in flat], [c for _, c in flat]))
    gold = [[labelled_mean(next(judged).values()) for _ in cs] for cs in candidates]
    best = [max(range(N), key=lambda j, s=s: s[j]) for s in scores]
    gold_1 = fmean(g[0] for g in gold)
    gold_n = fmean(g[b] for g, b in zip(gold, best, strict=True))

    def reached(boosted: set[int]) -> dict:
        picked = fmean(gold[i][best[i] if i in boosted else 0] for i in range(len(prompts)))
        samples = (N * len(boosted) + len(prompts) - len(boosted)) / (N * len(prompts))
        return {"share_of_samples": samples, "share_of_gain": (picked - gold_1) / (gold_n - gold_1)}

    hardness = {
        "spread": first_sample_spreads(composite, prompts, [cs[0] for cs in candidates]),
        "score": [-s[0] for s in scores],
    }
    curves = {}
    for signal, hard in hardness.items():
        order = sorted(range(len(prompts)), key=lambda i: -hard[i])
        curves[signal] = [{"prompts": f, **reached(set(order[: round(f * len(prompts))]))} for f in SHARES]
    fixed = [{"threshold": t, **reached({i for i, s in enumerate(scores) if s[0] < t})} for t in THRESHOLDS]
    return {
        "seed": seed,
        "cycle": cycle,
        "gold_1": gold_1,
        f"gold_{N}": gold_n,
        "curves": curves,
        "score_thresholds": fixed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycle", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.workspace, args.seed, args.cycle)
    print(f"seed {args.seed}: gold N=1 {result['gold_1']:.3f}, Best-of-{N} {result[f'gold_{N}']:.3f}")
    for signal, rows in result["curves"].items():
        cells = ", ".join(f"{r['share_of_samples']:.0%} -> {r['share_of_gain']:.0%}" for r in rows)
        print(f"  {signal:<6} samples -> gain: {cells}")
    cells = ", ".join(
        f"{r['threshold']:+.1f}: {r['share_of_samples']:.0%} -> {r['share_of_gain']:.0%}"
        for r in result["score_thresholds"]
    )
    print(f"  score thresholds: {cells}")
    if args.out:
        atomic_write_json(args.out, result)
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
