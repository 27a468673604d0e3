"""Can the reward models select? Helpfulness ensemble and PRM, trained per variant, measured on
validation solve prompts over seeds.

    python benchmarks/reward_accuracy.py --workspace /tmp/h1ws [--seeds 0 1 2] [--prompts 200]
        [--variant "name key=value key=value ..."]... [--out reward_accuracy.json]

The workspace needs an SFT policy (`rlhfops sft --workspace ...`). Per seed, one evaluation draw
shared by every variant: `--prompts` validation prompts, 16 samples each from the SFT policy, and
clean solve validation pairs as `rlhfops train-rm` builds them (2 teacher + 2 policy responses,
max_min). Per variant (a name and config overrides on top of the embedded default) and seed, the
reward side is trained as its stages do (`build_preference_data` -> the helpfulness ensemble;
`train_prm_on_task` -> the PRM) and measured:

    pairs val     helpfulness ensemble (mean of normalised members) accuracy on the solve val pairs
    pairs policy  the same on every (right, wrong) pair of the 16 policy samples of a solve prompt
    recall        PRM recall of bad lines at the threshold that keeps 0.90 of good lines, on the
                  exactly labelled lines (sound step rule) of the 16 policy samples of every prompt
    recall teach  the same on the PRM's own validation records (noisy teacher + policy samples)
    BoN first / member / RM / RM min / RM uwo / PRM   solve accuracy of the first sample, and of
                  Best-of-16 reranked by one member of the helpfulness ensemble, by the ensemble
                  (mean, min, uwo of its normalised members) and by the PRM (`prm.aggregation`)

and the seconds to build the data and to train the ensemble and the PRM.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean, pstdev

import torch

from rlhfops.annotation import pairs, steps
from rlhfops.annotation.pairs import build_preference_data, collect_responses, preference_pairs, read_pairs
from rlhfops.annotation.steps import exact_step_labels, read_step_data
from rlhfops.config import Config, load_config
from rlhfops.files import write_jsonl
from rlhfops.generation import sample_texts
from rlhfops.modeling import load_decoder
from rlhfops.reward.ensemble import RewardEnsemble, aggregate
from rlhfops.reward.prm import ProcessRewardModel, train_prm_on_task
from rlhfops.reward.train import train_reward_ensemble
from rlhfops.tasks import make_task, steps_of
from rlhfops.workspace import Workspace

N = 16
KEEP_GOOD = 0.90
METRICS = (
    "pairs_val",
    "pairs_policy",
    "recall",
    "recall_teacher",
    "bon_first",
    "bon_member",
    "bon_rm",
    "bon_rm_min",
    "bon_rm_uwo",
    "bon_prm",
)


class CachedSampling:
    """`generation.sample_texts` memoised on its arguments: the decoding is seeded, so variants
    that sample the same prompts with the same seed get the same texts; only the first pays."""

    def __init__(self, sample):
        self.sample, self.memo = sample, {}

    def __call__(self, model, tokenizer, prompts, gen, seed, **overrides):
        key = (id(model), tuple(prompts), gen.model_dump_json(), seed, repr(sorted(overrides.items())))
        if key not in self.memo:
            self.memo[key] = self.sample(model, tokenizer, prompts, gen, seed, **overrides)
        return self.memo[key]


def evaluation_draw(cfg: Config, policy, n_prompts: int) -> dict:
    """The seed's shared draw: validation examples, N policy samples each, solve val pairs."""
    task = make_task(cfg.task, seed=cfg.seed)
    examples = task.examples("val", n_prompts)
    prompts = [ex.prompt for ex in examples for _ in range(N)]
    tokenizer, model, hook = policy
    flat = sample_texts(model, tokenizer, prompts, cfg.generation, cfg.seed + 7, logits_hook=hook)
    samples = [flat[i * N : (i + 1) * N] for i in range(len(examples))]
    solve = [ex for ex in examples if ex.kind == "solve"]
    responses = collect_responses(task, solve, 4, cfg.seed, cfg, policy)
    pairs, _ = preference_pairs(task, solve, responses, ["helpfulness"], "max_min", 0.0, cfg.seed)
    return {"task": task, "examples": examples, "samples": samples, "val_pairs": pairs["helpfulness"]}


def threshold_recall(good: list[float], bad: list[float]) -> float:
    """Share of bad-line probabilities below the threshold that keeps KEEP_GOOD of good lines."""
    threshold = torch.tensor(good).quantile(1 - KEEP_GOOD).item()
    return sum(p < threshold for p in bad) / len(bad)


def prm_recall(prm: ProcessRewardModel, records: list[dict]) -> float:
    probs = prm.line_probs([r["prompt"] for r in records], [r["completions"] for r in records])
    good, bad = [], []
    for row, record in zip(probs, records, strict=True):
        for p, label in zip(row, record["labels"], strict=True):
            if p is not None and label is not None:
                (good if label else bad).append(p)
    return threshold_recall(good, bad)


def correct_of(draw: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each sample's answer is right (P, N), and which prompts are solve prompts (P,)."""
    task, examples = draw["task"], draw["examples"]
    correct = torch.tensor(
        [[task.verify(ex, c).answer_correct for c in row] for ex, row in zip(examples, draw["samples"], strict=True)]
    )
    return correct, torch.tensor([ex.kind == "solve" for ex in examples])


def flat_draw(draw: dict) -> tuple[list[str], list[str]]:
    return [ex.prompt for ex in draw["examples"] for _ in range(N)], [c for row in draw["samples"] for c in row]


def best_of_n(correct: torch.Tensor, solve: torch.Tensor, scores: torch.Tensor) -> float:
    """Solve accuracy of the argmax of `scores` (P, N) over each solve prompt's samples."""
    c = correct[solve].float()
    return c[torch.arange(len(c)), scores[solve].argmax(1)].mean().item()


def measure_rm(draw: dict, ensemble: RewardEnsemble) -> dict:
    """Pair accuracy (val pairs; every right-wrong pair of policy samples) and Best-of-N by the RM."""
    val = draw["val_pairs"]
    mean = ensemble.member_rewards(
        [r["prompt"] for r in val] * 2, [r["chosen"] for r in val] + [r["rejected"] for r in val]
    ).mean(0)
    correct, solve = correct_of(draw)
    members = ensemble.member_rewards(*flat_draw(draw))  # (K, P * N), normalised
    rm = members.mean(0).view(correct.shape)
    lam = ensemble.manifest["uwo_lambda"]
    by = {how: aggregate(members, how, ensemble.accuracies, lam)[0].view(correct.shape) for how in ("min", "uwo")}
    hits, total = 0, 0
    for i in solve.nonzero()[:, 0].tolist():
        right, wrong = rm[i][correct[i]], rm[i][~correct[i]]
        hits += (right[:, None] > wrong[None, :]).sum().item()
        total += len(right) * len(wrong)
    return {
        "pairs_val": (mean[: len(val)] > mean[len(val) :]).float().mean().item(),
        "pairs_policy": hits / total,
        "bon_first": correct[solve][:, 0].float().mean().item(),
        "bon_rm": best_of_n(correct, solve, rm),
        "bon_rm_min": best_of_n(correct, solve, by["min"]),
        "bon_rm_uwo": best_of_n(correct, solve, by["uwo"]),
        "bon_member": best_of_n(correct, solve, members[0].view(correct.shape)),
        "n_policy_pairs": total,
        "n_val_pairs": len(val),
        "n_solve_prompts": int(solve.sum()),
    }


def measure_prm(draw: dict, prm: ProcessRewardModel, prm_val: list[dict], cfg: Config) -> dict:
    """Bad-line recall (policy samples' exact labels; the PRM's own validation) and Best-of-N by the PRM."""
    steps = steps_of(draw["task"])
    records = [
        record
        for ex, row in zip(draw["examples"], draw["samples"], strict=True)
        for text in dict.fromkeys(row)
        if (record := exact_step_labels(steps, ex, text)) is not None
    ]
    correct, solve = correct_of(draw)
    scores = torch.tensor(prm.score(*flat_draw(draw), aggregation=cfg.prm.aggregation)).view(correct.shape)
    return {
        "recall": prm_recall(prm, records),
        "recall_teacher": prm_recall(prm, prm_val),
        "bon_first": correct[solve][:, 0].float().mean().item(),
        "bon_prm": best_of_n(correct, solve, scores),
    }


def pair_shapes(task, records: list[dict]) -> dict:
    """Over the solve pairs: how often the chosen response is longer, and how often both have as
    many lines (a hard pair: the same format, only the arithmetic differs)."""
    solve = [r for r in records if task.example(r["prompt"]).kind == "solve"]
    return {
        "chosen_longer": fmean(len(r["chosen"]) > len(r["rejected"]) for r in solve),
        "same_lines": fmean(r["chosen"].count("\n") == r["rejected"].count("\n") for r in solve),
    }


def run_variant(
    overrides: list[str], seed: int, policy_dir: Path, draw: dict, policy, scratch: Path, only: str
) -> dict:
    cfg = load_config(None, [*overrides, f"seed={seed}"])
    result: dict = {}
    if only in ("both", "rm"):
        pairs_dir, out = scratch / "pairs", scratch / "reward" / "helpfulness"
        clock = time.perf_counter()
        build_preference_data(cfg, pairs_dir, policy=policy, splits=("train",))
        write_jsonl(pairs_dir / "val" / "helpfulness.jsonl", draw["val_pairs"])
        result["data_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        train_reward_ensemble(cfg, "helpfulness", pairs_dir, policy_dir, out)
        result["rm_s"] = time.perf_counter() - clock
        result |= measure_rm(draw, RewardEnsemble(out))
        train = read_pairs(pairs_dir / "train" / "helpfulness.jsonl")
        result |= {"n_train_pairs": len(train), **pair_shapes(draw["task"], train)}
    if only in ("both", "prm"):
        clock = time.perf_counter()
        train_prm_on_task(cfg, policy_dir, scratch / "steps", scratch / "prm", progress=False)
        result["prm_s"] = time.perf_counter() - clock
        prm_val = read_step_data(scratch / "steps" / "val.jsonl")
        result |= measure_prm(draw, ProcessRewardModel.load(scratch / "prm"), prm_val, cfg)
        result["n_step_records"] = sum(1 for _ in (scratch / "steps" / "train.jsonl").open())
    return result


def summarise(runs: list[dict]) -> dict:
    keys = [k for k in (*METRICS, "data_s", "rm_s", "prm_s") if k in runs[0]]
    return {k: (fmean(r[k] for r in runs), pstdev(r[k] for r in runs)) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=200, help="validation prompts of the evaluation draw")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='"name key=value ...": config overrides measured as one variant (default: the embedded default)',
    )
    parser.add_argument("--only", choices=("both", "rm", "prm"), default="both", help="train and measure only these")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    policy_dir = Workspace(args.workspace).model_dir("sft")
    if not policy_dir.exists():
        raise SystemExit(f"error: no SFT policy in '{policy_dir}'; run `rlhfops sft --workspace {args.workspace}`")
    variants = [(v.split()[0], v.split()[1:]) for v in args.variant] or [("default", [])]
    cached = CachedSampling(pairs.sample_texts)
    pairs.sample_texts = steps.sample_texts = cached
    runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="rlhfops-rmacc-") as scratch:
        for seed in args.seeds:
            cfg = load_config(None, [f"seed={seed}"])
            policy = load_decoder(cfg, policy_dir)
            draw = evaluation_draw(cfg, policy, args.prompts)
            for name, overrides in variants:
                run = run_variant(
                    overrides, seed, policy_dir, draw, policy, Path(scratch) / name / str(seed), args.only
                )
                runs[name].append(run)
                print(
                    f"seed {seed} {name}: "
                    + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items()),
                    flush=True,
                )

    header = [
        "variant",
        "pairs val",
        "pairs policy",
        "recall",
        "recall teach",
        "BoN first",
        "BoN member",
        "BoN RM",
        "BoN RM min",
        "BoN RM uwo",
        "BoN PRM",
        "data s",
        "RM s",
        "PRM s",
    ]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for name, rs in runs.items():
        s = summarise(rs)
        cells = [f"{s[k][0]:.3f} +- {s[k][1]:.3f}" if k in s else "-" for k in METRICS] + [
            f"{s[k][0]:.0f}" if k in s else "-" for k in ("data_s", "rm_s", "prm_s")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"(mean +- population std over seeds {', '.join(map(str, args.seeds))}; "
        f"{args.prompts} validation prompts, Best-of-{N} from SFT)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"variants": dict(variants), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
