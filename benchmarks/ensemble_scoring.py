"""Fused vs member-by-member reward-ensemble scoring, measured on this machine.

    python benchmarks/ensemble_scoring.py [--members 3 5] [--batches 1 4 16 64] [--runs 3] [--repeats 5]
    python benchmarks/ensemble_scoring.py --model ~/.cache/rlhfops/models/SmolLM2-135M-Instruct --batches 1 4

K random-weight reward models of the tiny Llama architecture (`configs/tiny.yaml`), or of the
architecture of `--model`, score the same batch of (prompt, response) texts three ways: member by
member (K forward passes), the stacked scorer (one pass over weights stacked along K;
`reward/stacked.py`), and `kind: heads` (one shared trunk pass plus K linear heads). The three
take turns within a run (`bench.speed.ensemble_scoring_speed`, medians of `--repeats` calls);
each of `--runs` runs builds the members afresh. Prints seconds per call (median over runs) and
the speed-up over member by member as the median over runs with its range, min-max.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from rlhfops.bench.speed import ensemble_scoring_speed
from rlhfops.config import Config
from rlhfops.files import atomic_write_json
from rlhfops.report.benchmark_blocks import speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, help="a Llama model directory whose architecture the members take")
    parser.add_argument("--out", type=Path, help="also write every run's measurements as JSON here")
    args = parser.parse_args()

    cfg = Config()
    if args.model:
        cfg.model.name_or_path = str(args.model.expanduser())
    name = args.model.name if args.model else "tiny Llama"
    results = {}
    for k in args.members:
        runs = [ensemble_scoring_speed(cfg, k, tuple(args.batches), args.repeats) for _ in range(args.runs)]
        results[k] = runs
        print(f"K={k} members of the {name}, torch threads {torch.get_num_threads()}, {args.runs} runs")
        print(f"{'batch':>6} {'member-by-member s':>19} {'stacked s':>10} {'ratio [min-max]':>21} {'heads s':>9} ratio")
        for i, b in enumerate(args.batches):
            rows = [run[i] for run in runs]
            seq, fused, shared = (
                statistics.median(r[key] for r in rows) for key in ("member_by_member_s", "stacked_s", "heads_s")
            )
            stacked = speedup(rows, "stacked_s")
            print(f"{b:>6} {seq:>19.4f} {fused:>10.4f} {stacked:>21} {shared:>9.4f} {seq / shared:>5.2f}x")

    if args.out:  # `make readme` renders it (report.benchmark_blocks.scoring_block)
        atomic_write_json(args.out, {"threads": torch.get_num_threads(), "model": name, "runs": results})


if __name__ == "__main__":
    main()
