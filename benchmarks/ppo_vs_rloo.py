"""PPO (rl/ppo.py) vs TRL's RLOOTrainer: training throughput on the same model, batch and length.

    python benchmarks/ppo_vs_rloo.py [--workspace workspace] [--steps 10] [--completions 32]

Both start from the workspace's SFT policy, optimise the exact gold reward, and see the same
number of completions per update (`--completions`: PPO samples that many prompts once; RLOO
samples completions/4 prompts 4 times) of the same maximum length. Prints completions per
second including generation, reward and update (wall clock of the whole training call, so
model loading and the final save are in both), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rlhfops.bench.speed import ppo_vs_rloo
from rlhfops.config import Config
from rlhfops.workspace import Workspace, is_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--completions", type=int, default=32)
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    policy = Workspace(args.workspace).model_dir("sft")
    if not is_model_dir(policy):
        raise SystemExit(f"error: no SFT policy in '{policy}'; run `rlhfops run` first")
    with tempfile.TemporaryDirectory(prefix="rlhfops-bench-") as scratch:
        results = ppo_vs_rloo(policy, args.steps, args.completions, Path(scratch))
    print(f"{args.steps} updates x {args.completions} completions, max {Config().policy.max_new_tokens} new tokens")
    print(f"PPO (rlhfops)      {results['ppo']:8.1f} completions/s")
    print(f"RLOO (TRL trainer) {results['rloo']:8.1f} completions/s")
    print(f"ratio PPO / RLOO   {results['ratio']:8.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({k: results[k] for k in ("steps", "completions", "ppo", "rloo")}))


if __name__ == "__main__":
    main()
