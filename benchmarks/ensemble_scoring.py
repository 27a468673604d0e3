"""Fused vs member-by-member reward-ensemble scoring, measured on this machine.

    python benchmarks/ensemble_scoring.py [--members 5] [--repeats 5]

K reward models of the tiny Llama architecture (`configs/tiny.yaml`) score the same batch of
(prompt, response) texts three ways: member by member (K forward passes), the stacked scorer
(one pass over weights stacked along K; `reward/stacked.py`), and `kind: heads` (one shared
trunk pass plus K linear heads). Prints seconds per call and the speed-up over member by member
for several batch sizes; numbers are medians of `--repeats` timed calls after one warm-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlhfops.bench.speed import ensemble_scoring_speed
from rlhfops.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()

    rows = ensemble_scoring_speed(Config(), args.members, tuple(args.batches), args.repeats)
    print(f"K={args.members} members of the tiny Llama, torch threads {torch.get_num_threads()}")
    print(f"{'batch':>6} {'member-by-member s':>19} {'stacked s':>10} {'ratio':>6} {'heads s':>9} {'ratio':>6}")
    for r in rows:
        seq, fused, shared = r["member_by_member_s"], r["stacked_s"], r["heads_s"]
        print(f"{r['batch']:>6} {seq:>19.4f} {fused:>10.4f} {seq / fused:>5.2f}x {shared:>9.4f} {seq / shared:>5.2f}x")

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"members": args.members, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
