"""Where one PPO update's time goes: sampling, the reference pass, reward scoring, the actor / critic
forward and backward passes, the optimiser.

    python benchmarks/profile_ppo.py [--workspace workspace] [--steps 4] [--ops 15] [--set KEY=VALUE ...]

Runs PPO (`rl/ppo.py`, gold reward unless `--set policy.reward=composite`) from the workspace's SFT
policy (a fresh tiny model when there is none) twice: the first run warms up, the second runs under
`torch.profiler`. Prints the seconds per update of each phase `train_ppo` times (`time/<phase>` in
its log: rollout = sampling with the old log-probs and values, values = the critic on the rollout's
states, reference, score, advantages, forward, backward, optimizer), the share of each, the whole
update's wall time, and the `--ops` operators that took the most CPU time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean

import torch
from torch.profiler import ProfilerActivity, profile

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.rl.ppo import TRAIN_LOG, train_ppo
from rlhfops.workspace import Workspace, is_model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("workspace"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--ops", type=int, default=15, help="top operators by CPU time (0: none)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE")
    args = ap.parse_args()
    overrides = ["policy.reward=gold", f"policy.steps={args.steps}", "policy.eval_prompts=1", *args.overrides]
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="rlhfops-profile-ppo-") as scratch:
        policy = Workspace(args.workspace).model_dir("sft")
        if not is_model_dir(policy):
            tokenizer, model = init_policy(cfg)
            policy = save_policy(model, tokenizer, cfg, Path(scratch) / "init")
            print(f"no SFT policy in '{args.workspace}': a fresh tiny model (samples run to the length bound)")
        rm_dir = Path(args.workspace) / "models" / "cycle-0001" / "reward"
        train_ppo(cfg, policy, Path(scratch) / "warm", rm_dir=rm_dir, progress=False)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = train_ppo(cfg, policy, Path(scratch) / "ppo", rm_dir=rm_dir, progress=False)
        total = time.perf_counter() - start
        log = json.loads((out / TRAIN_LOG).read_text())

    phases = sorted({k for row in log for k in row if k.startswith("time/")})
    per_update = {k.removeprefix("time/"): fmean(row.get(k, 0.0) for row in log) for k in phases}
    timed = sum(per_update.values())
    pc = cfg.policy
    print(
        f"{len(log)} updates x {pc.prompts_per_step} completions (max {pc.max_new_tokens} new tokens, "
        f"{pc.ppo_epochs} epochs x {pc.minibatches} minibatches, critic {pc.critic}, "
        f"reference {'yes' if pc.kl_coef > 0 else 'no'}), {torch.get_num_threads()} threads; "
        f"whole run {total:.1f} s (loading, evaluation and the save included)"
    )
    for name, seconds in sorted(per_update.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12s} {seconds:7.3f} s/update  {seconds / timed:6.1%}")
    wall = fmean(row["charts/update_s"] for row in log)
    print(f"  {'update':12s} {wall:7.3f} s/update wall ({pc.prompts_per_step / wall:.1f} completions/s)")
    if args.ops:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()
