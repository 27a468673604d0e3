"""Sampling speed of `generation.generate` against an earlier revision of it, side by side in one run.

    python benchmarks/sampling_speed.py [--baseline REV] [--models tiny real] [--batches 8 64]
                                        [--max-new-tokens 32] [--repeats 3] [--out FILE.json]

The baseline is `src/rlhfops/generation.py` as it was at git revision REV (default c9337f4, before
issue 19's buffers and last-position logits), loaded from `git show` as a module of its own beside
the current one; both run on the same model, prompts and seed, alternately, `--repeats` times per
batch size, and the best time of each counts (the least disturbed by other load). Tokens/s counts
generated tokens (the completion mask), per wall second and per CPU second of the process (on a
machine shared with other jobs the second is the steadier measure). The texts of both are
compared: the same seed should give the same samples. Models: the tiny Llama of
configs/tiny.yaml (random weights: it rarely stops early, so every batch runs close to
max_new_tokens) and SmolLM2-135M-Instruct (`rlhfops.real_model`), in their checkpoint's dtype on
the CPU, prompts from the built-in task.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.generation import generate
from rlhfops.modeling import build_char_tokenizer, build_tiny_llama, load_policy
from rlhfops.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]


def baseline_generate(rev: str):
    """`generate` from src/rlhfops/generation.py at git revision `rev`, as a separate module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/rlhfops/generation.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"generation_{rev}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    exec(compile(source, f"generation.py@{rev}", "exec"), module.__dict__)  # noqa: S102 - our own file at a revision
    return module.generate


def load(name: str):
    cfg = load_config("tiny")
    if name == "tiny":
        tokenizer = build_char_tokenizer()
        return tokenizer, build_tiny_llama(cfg.model, tokenizer, seed=0).eval()
    from rlhfops.real_model import prepare_real_model

    return load_policy(prepare_real_model(), train=False)


def timed(fn, model, tokenizer, prompts, max_new_tokens) -> tuple[float, float, int, list[str]]:
    """(wall s, CPU s of this process, generated tokens, texts) of one seeded call."""
    start, cpu = time.perf_counter(), time.process_time()
    gen = fn(model, tokenizer, prompts, max_new_tokens, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start, time.process_time() - cpu, int(gen.completion_mask.sum()), gen.texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="c9337f4")
    ap.add_argument("--models", nargs="+", default=["tiny", "real"], choices=["tiny", "real"])
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    before = baseline_generate(args.baseline)
    task = make_task(load_config("tiny").task, seed=0)
    prompts = [ex.prompt for ex in task.examples("test", max(args.batches))]
    rows: list[dict[str, Any]] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':5s} {'batch':>5s} {'tokens':>6s} {args.baseline + ' tok/s':>14s} {'now tok/s':>10s} speed-up "
          f"{'tok/CPU-s before':>16s} {'now':>6s} same")  # fmt: skip
    for name in args.models:
        tokenizer, model = load(name)
        for batch in args.batches:
            best = {"before": float("inf"), "now": float("inf"), "before_cpu": float("inf"), "now_cpu": float("inf")}
            for _ in range(args.repeats):
                s0, c0, n0, t0 = timed(before, model, tokenizer, prompts[:batch], args.max_new_tokens)
                s1, c1, n1, t1 = timed(generate, model, tokenizer, prompts[:batch], args.max_new_tokens)
                for key, value in (("before", s0), ("now", s1), ("before_cpu", c0), ("now_cpu", c1)):
                    best[key] = min(best[key], value)
            row = {
                "model": name,
                "batch": batch,
                "max_new_tokens": args.max_new_tokens,
                "tokens": n1,
                "before_tokens_per_s": n0 / best["before"],
                "now_tokens_per_s": n1 / best["now"],
                "speedup": (n1 / best["now"]) / (n0 / best["before"]),
                "before_tokens_per_cpu_s": n0 / best["before_cpu"],
                "now_tokens_per_cpu_s": n1 / best["now_cpu"],
                "same_texts": t0 == t1,
            }
            rows.append(row)
            print(f"{name:5s} {batch:5d} {n1:6d} {row['before_tokens_per_s']:14.1f} {row['now_tokens_per_s']:10.1f} "
                  f"{row['speedup']:7.2f}x {row['before_tokens_per_cpu_s']:16.1f} {row['now_tokens_per_cpu_s']:6.1f} "
                  f"{row['same_texts']}", flush=True)  # fmt: skip
    if args.out:
        atomic_write_json(args.out, {"baseline": args.baseline, "load_average": os.getloadavg()[0], "rows": rows})
        print(f"wrote {args.out}")
    if not all(r["same_texts"] for r in rows):
        sys.exit("error: the current generate gave other texts than the baseline for the same seed")


if __name__ == "__main__":
    main()
