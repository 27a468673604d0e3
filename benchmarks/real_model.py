"""A real pretrained model through evaluation and SFT: wall time and peak memory at tiny size.

    python benchmarks/real_model.py [--n-test 4] [--sft-steps 2] [--set KEY=VALUE ...]
                                    [--out workspace/bench/real_model.json]

Prepares SmolLM2-135M-Instruct (`rlhfops.real_model`, once, cached), then runs
`evaluation.evaluate_dir` (greedy, `--n-test` test prompts) and `sft.run_sft` (`--sft-steps`
optimizer steps) with it as `model.name_or_path`, each in a fresh process so that its peak
resident set size (getrusage ru_maxrss: imports, model, optimizer and activations) is its own.
Sizes start from configs/smoke.yaml; `--set` overrides any key after them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.real_model import prepare_real_model

SIZES = {
    "eval": ["eval.greedy=true", "generation.max_new_tokens=32", "generation.batch_size=8"],
    "sft": ["task.n_train=32", "sft.batch_size=4", "sft.max_length=128", "sft.logging_steps=1", "sft.lr=2e-5"],
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_stage(stage: str, overrides: list[str]) -> dict:
    """In this (child) process: one library call, its wall time, this process's peak RSS."""
    cfg = load_config("smoke", overrides)
    with tempfile.TemporaryDirectory(prefix="rlhfops-real-") as scratch:
        start = time.perf_counter()
        if stage == "eval":
            from rlhfops.evaluation import evaluate_dir

            result = evaluate_dir(cfg, cfg.model.name_or_path)
            summary = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
        else:
            from rlhfops.sft import run_sft
            from rlhfops.workspace import TRAIN_LOG

            log = json.loads((run_sft(cfg, Path(scratch) / "sft", progress=False) / TRAIN_LOG).read_text())
            losses = [row["loss"] for row in log if "loss" in row]
            summary = {"steps": log[-1].get("step"), "first_loss": losses[0], "final_loss": losses[-1]}
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_rss_mib()), "result": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=4, help="test prompts evaluated (greedy)")
    ap.add_argument("--sft-steps", type=int, default=2, help="SFT optimizer steps")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE after the sizes")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--stage", choices=sorted(SIZES), help=argparse.SUPPRESS)  # the child's job
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.overrides)))
        return

    start = time.perf_counter()
    try:
        model_dir = prepare_real_model()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    prepared_s = time.perf_counter() - start
    sizes = {
        "eval": [*SIZES["eval"], f"eval.n_test={args.n_test}"],
        "sft": [*SIZES["sft"], f"sft.max_steps={args.sft_steps}"],
    }
    record = {
        "model": str(model_dir),
        "prepare_seconds": round(prepared_s, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    for stage, overrides in sizes.items():
        overrides = [f"model.name_or_path={model_dir}", *overrides, *args.overrides]
        child = subprocess.run(
            [sys.executable, __file__, "--stage", stage, *(f"--set={o}" for o in overrides)],
            capture_output=True,
            text=True,
        )
        if child.returncode:
            raise SystemExit(f"error: the {stage} run failed:\n{child.stderr[-3000:]}")
        record[stage] = {"overrides": overrides, **json.loads(child.stdout.strip().splitlines()[-1])}
        m = record[stage]
        print(f"{stage:5s} {m['seconds']:7.1f} s  peak RSS {m['peak_rss_mib']:6d} MiB  {json.dumps(m['result'])}")
    print(f"model {model_dir} (prepared in {prepared_s:.1f} s)")
    if args.out:
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
