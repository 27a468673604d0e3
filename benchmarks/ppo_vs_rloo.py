"""PPO (rl/ppo.py) vs TRL's RLOOTrainer: training throughput on the same model, batch and length.

    python benchmarks/ppo_vs_rloo.py [--workspace workspace] [--steps 10] [--completions 32]

Both start from the workspace's SFT policy, optimise the exact gold reward, and see the same
number of completions per update (`--completions`: PPO samples that many prompts once; RLOO
samples completions/4 prompts 4 times) of the same maximum length. Prints completions per
second including generation, reward and update (wall clock of the whole training call, so
model loading and the final save are in both), and the ratio. Then PPO's own wall time per update
(median over updates, from its log's `charts/update_s`: sampling to optimiser step, no loading) with
its configured epochs x minibatches and with RLOO's one epoch of one minibatch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import median

from rlhfops.bench.speed import ppo_vs_rloo
from rlhfops.config import Config, load_config
from rlhfops.rl.train import train_policy
from rlhfops.workspace import TRAIN_LOG, Workspace, is_model_dir


def update_seconds(out: Path) -> float:
    """Median wall seconds of one PPO update in the run saved in `out` (the first, warm-up, left out)."""
    log = json.loads((out / TRAIN_LOG).read_text())
    return median(row["charts/update_s"] for row in log[1:] or log)


# PPO's settings in `bench/speed.ppo_vs_rloo` (gold reward, one-prompt in-training evaluation).
SAME_AS_BENCH = ["policy.algorithm=ppo", "policy.reward=gold", "policy.eval_prompts=1"]


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
        results["ppo_update_s"] = update_seconds(Path(scratch) / "ppo")
        one_epoch = [*SAME_AS_BENCH, f"policy.steps={args.steps}", f"policy.prompts_per_step={args.completions}"]
        one_epoch += ["policy.ppo_epochs=1", "policy.minibatches=1"]
        train_policy(load_config(None, one_epoch), policy, Path(scratch) / "ppo-1", progress=False)
        results["ppo_one_epoch_update_s"] = update_seconds(Path(scratch) / "ppo-1")
    pc = Config().policy
    print(f"{args.steps} updates x {args.completions} completions, max {Config().policy.max_new_tokens} new tokens")
    print(f"PPO (rlhfops)      {results['ppo']:8.1f} completions/s")
    print(f"RLOO (TRL trainer) {results['rloo']:8.1f} completions/s")
    print(f"ratio PPO / RLOO   {results['ratio']:8.2f}x")
    print(
        f"PPO seconds per update, {pc.ppo_epochs} epochs x {pc.minibatches} minibatches: {results['ppo_update_s']:.3f}"
    )
    print(f"PPO seconds per update, 1 epoch x 1 minibatch (as RLOO):  {results['ppo_one_epoch_update_s']:.3f}")
    print(f"RLOO seconds per update (whole call / updates):          {args.completions / results['rloo']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        keys = ("steps", "completions", "ppo", "rloo", "ppo_update_s", "ppo_one_epoch_update_s")
        args.out.write_text(json.dumps({k: results[k] for k in keys}))


if __name__ == "__main__":
    main()
