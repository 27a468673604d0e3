"""PPO with dense PRM step rewards vs outcome-only PPO, same budget, several seeds.

    python benchmarks/ppo_dense_prm.py [--workspace workspace] [--seeds 0 1 2]

Both optimise the exact gold outcome reward from the workspace's SFT policy with the default
`policy.*` budget; the dense variant also gets `policy.prm_step_coef * (2p - 1)` at every
step separator from the workspace's PRM (`rlhfops train-prm`). Each result is gold-evaluated on
the test split (`eval.*` defaults); prints mean and spread (population std) over seeds. Each run
is the bench's dense-PRM measurement (`rlhfops.bench.train_and_evaluate_ppo`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rlhfops.bench import mean_std, train_and_evaluate_ppo
from rlhfops.config import load_config
from rlhfops.workspace import Workspace, is_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    policy, prm = ws.model_dir("sft"), ws.model_dir("prm")
    if not is_model_dir(prm):
        raise SystemExit(f"error: no PRM in '{prm}'; run `rlhfops train-prm` first")
    runs: dict[str, list[dict]] = {"outcome": [], "dense_prm": []}
    with tempfile.TemporaryDirectory(prefix="rlhfops-bench-") as scratch:
        for seed in args.seeds:
            for variant in runs:
                cfg = load_config(
                    None, ["policy.reward=gold", f"seed={seed}", f"policy.dense_prm={variant == 'dense_prm'}"]
                )
                result, seconds = train_and_evaluate_ppo(
                    cfg, policy, Path(scratch) / f"{variant}-{seed}", None, prm, load_config(None)
                )
                runs[variant].append({"seed": seed, "seconds": seconds, **result})
                print(
                    f"seed {seed} {variant:<9} gold {result['gold_composite']:.3f} "
                    f"solve {result['solve_accuracy']:.3f} steps {result['step_validity']:.3f} ({seconds:.0f} s)",
                    flush=True,
                )
    for variant, rows in runs.items():
        for key in ("gold_composite", "solve_accuracy", "step_validity"):
            s = mean_std([r[key] for r in rows])
            print(f"{variant:<9} {key:<15} {s['mean']:.3f} +- {s['std']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
