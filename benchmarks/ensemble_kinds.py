"""Full reward-model members vs K heads on the frozen policy trunk: accuracy and cost.

    python benchmarks/ensemble_kinds.py [--workspace workspace] [--out workspace/bench/ensemble_kinds.json]

Trains both kinds of ensemble (`reward.kind: full | heads`, everything else from the embedded
default) on the preference pairs `rlhfops train-rm` built in the workspace, from the workspace's
SFT policy, and prints per objective the validation accuracy of the mean member and of the
ensemble (mean aggregation), the training time and the time to score the validation pairs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rlhfops.annotation.pairs import read_pairs
from rlhfops.config import load_config
from rlhfops.reward.ensemble import RewardEnsemble
from rlhfops.reward.train import SUMMARY, train_reward_models
from rlhfops.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    data, policy = ws.data_dir("preferences"), ws.model_dir("sft")
    if not (data / "stats.json").exists():
        raise SystemExit(f"error: no preference data in '{data}'; run `rlhfops train-rm` first")

    results = {}
    with tempfile.TemporaryDirectory(prefix="rlhfops-kinds-") as scratch:
        for kind in ("full", "heads"):
            cfg = load_config(None, [f"reward.kind={kind}"])
            start = time.perf_counter()
            out = train_reward_models(cfg, data, policy, Path(scratch) / kind, progress=False)
            train_s = time.perf_counter() - start
            summary = json.loads((out / SUMMARY).read_text())
            score_s = 0.0
            for obj in cfg.reward.objectives:
                val = read_pairs(data / "val" / f"{obj}.jsonl")
                ensemble = RewardEnsemble(out / obj)
                start = time.perf_counter()
                ensemble.score(
                    [r["prompt"] for r in val] * 2, [r["chosen"] for r in val] + [r["rejected"] for r in val]
                )
                score_s += time.perf_counter() - start
            results[kind] = {
                "train_s": train_s,
                "score_val_s": score_s,
                "objectives": {
                    o: {
                        "mean_member": summary[o]["mean_member_accuracy"],
                        "ensemble": summary[o]["ensemble_accuracy"]["mean"],
                    }
                    for o in cfg.reward.objectives
                },
            }

    print(
        f"{'kind':<6} {'train s':>8} {'score s':>8}  "
        + "  ".join(f"{o[:12]:>12}" for o in results["full"]["objectives"])
    )
    for kind, r in results.items():
        accs = "  ".join(f"{v['mean_member']:.3f}/{v['ensemble']:.3f}" for v in r["objectives"].values())
        print(f"{kind:<6} {r['train_s']:>8.1f} {r['score_val_s']:>8.2f}  {accs}")
    print("(accuracy: mean member / ensemble mean, clean validation pairs)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
