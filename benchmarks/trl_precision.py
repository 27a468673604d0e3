"""TRL's precision defaults against ours on a CPU: seconds to train one reward-model member.

    python benchmarks/trl_precision.py [--steps 20] [--repeats 2] [--pairs 2000]

TRL's `*Config` classes default to bf16 autocast and gradient checkpointing. `training.trl_run_args`
turns both off unless a GPU with bf16 is present. This trains the same tiny reward member
(`reward.train.train_member`, the embedded default's model, arithmetic preference pairs) under four
settings in turn, `--repeats` times each, and prints the best seconds and the first and last
training loss of each: TRL's defaults, bf16 alone, gradient checkpointing alone, and neither (ours).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import rlhfops.reward.train as reward_train
from rlhfops.config import Config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.training import trl_run_args

SETTINGS = {
    "TRL defaults (bf16 + checkpointing)": {"bf16": True, "activation_checkpointing": True},
    "bf16 only": {"bf16": True, "activation_checkpointing": False},
    "checkpointing only": {"bf16": False, "activation_checkpointing": True},
    "fp32, no checkpointing (ours)": {"bf16": False, "activation_checkpointing": False},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=2000)
    args = ap.parse_args()

    cfg = Config()
    cfg.reward.max_steps = args.steps
    root = Path(tempfile.mkdtemp(prefix="rlhfops-precision-"))
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, root / "init")
    rng = random.Random(0)
    operands = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(args.pairs)]
    pairs = [
        {"prompt": f"q: {a}+{b}?\n", "chosen": f"{a}+{b}={a + b}\nanswer: {a + b}", "rejected": f"answer: {a + b + 1}"}
        for a, b in operands
    ]
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    losses: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(args.repeats):  # the settings take turns, so a loaded machine slows all alike
            for name, setting in SETTINGS.items():
                reward_train.trl_run_args = lambda seed, setting=setting: {**trl_run_args(seed), **setting}
                start = time.perf_counter()
                log = reward_train.train_member(cfg, pairs, root / "init", root / "member", 0)
                seconds[name].append(time.perf_counter() - start)
                trained = [r["loss"] for r in log if "loss" in r]
                losses[name] = (trained[0], trained[-1])
    finally:
        reward_train.trl_run_args = trl_run_args
    fastest = min(min(s) for s in seconds.values())
    print(f"one tiny reward member, {args.steps} steps of batch {cfg.reward.batch_size}, best of {args.repeats}:")
    for name, s in seconds.items():
        first, last = losses[name]
        print(f"  {name:<38} {min(s):6.1f} s  ({min(s) / fastest:.1f}x the fastest)  loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
