"""Peak resident memory of each command, on the tiny model and on a real 135M model, at small sizes.

    python benchmarks/memory.py [--models tiny real] [--commands sft eval ...] [--workspace DIR]
                                [--set KEY=VALUE ...] [--out workspace/bench/memory.json]

Runs the `rlhfops` CLI itself (`python -m rlhfops.cli <command> --config tiny --json`), one fresh
process per command, in dependency order in one scratch workspace per model:

    sft -> eval -> train-rm -> bon -> offline -> train-policy (ppo)

and prints each process's own peak resident set size (`os.wait4`'s rusage, as `/usr/bin/time -v`
reports it) and wall time. The real model is SmolLM2-135M-Instruct (`rlhfops.real_model`, prepared
once). Sizes (`SIZES`) keep the counts small (a few prompts, a few optimizer steps, 24 new tokens)
and the shapes that set peak memory at their defaults: Best-of-N generates 256 sequences per
`generate` call (`best_of_n.batch_size`, 16 prompts x N=16), offline RL trains on batches of 32
sequences of up to 96 tokens (`offline.batch_size`, `offline.max_length`), evaluation and the
other samplers decode 64 sequences per call. `--set` overrides any key after them, for every
command. The load average is read before and after: wall times are only comparable at the same load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model import cli, run_child  # noqa: E402  (the sibling benchmark's CLI runner)

from rlhfops.files import atomic_write_json  # noqa: E402

COMMON = [
    "eval.greedy=true",
    "eval.n_test=8",
    "generation.max_new_tokens=24",
    "generation.batch_size=64",
    "reward.objectives=[helpfulness, conciseness]",
    "reward.members=1",
    "scalarisation.weights={helpfulness: 0.5, conciseness: 0.5}",
]
SIZES = {
    "sft": ["task.n_train=32", "sft.batch_size=8", "sft.max_length=128", "sft.max_steps=2", "sft.logging_steps=1"],
    "eval": [],
    "train-rm": ["reward.max_steps=2", "reward.batch_size=8", "reward.max_length=96"]
    + ["reward.data.n_prompts=8", "reward.data.n_val_prompts=8", "reward.data.responses_per_prompt=2"],
    "bon": ["best_of_n.n_values=[1, 4, 16]", "best_of_n.n=16", "best_of_n.n_prompts=16", "best_of_n.batch_size=256"],
    "offline": ["offline.n_prompts=16", "offline.samples_per_prompt=4", "offline.max_steps=2"]
    + ["offline.batch_size=32", "offline.max_length=96", "offline.distill_samples_per_prompt=1"]
    + ["offline.distill_epochs=1.0"],
    "train-policy": ["policy.algorithm=ppo", "policy.steps=2", "policy.prompts_per_step=8"]
    + ["policy.max_new_tokens=24", "policy.eval_every=2", "policy.eval_prompts=8"],
}


def run_model(name: str, model_dir: Path | None, workspace: Path, commands: list[str], extra: list[str]) -> dict:
    """Every command in `commands` (in `SIZES` order) on one model in one workspace."""
    base = [*([f"model.name_or_path={model_dir}"] if model_dir else []), *COMMON]
    rows: dict[str, Any] = {}
    for command, sizes in SIZES.items():
        if command not in commands:
            continue
        argv = cli(command, workspace, [*base, *sizes, *extra], config="tiny")
        code, seconds, rss, _, err = run_child(argv, workspace.parent, f"{name}-{command}")
        rows[command] = {"code": code, "seconds": round(seconds, 1), "peak_rss_mib": round(rss), "argv": argv[3:]}
        status = "" if code == 0 else f"  FAILED (exit {code})"
        print(f"{name:5s} {command:13s} {seconds:7.1f} s {rss:7.0f} MiB{status}", flush=True)
        if code != 0:
            rows[command]["stderr"] = err[-4000:]
            print(err[-4000:], file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "real"], choices=["tiny", "real"])
    ap.add_argument("--commands", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--workspace", type=Path, help="scratch directory (kept), one workspace per model inside")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE after the sizes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    start = time.perf_counter()
    record: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "common": COMMON,
        "sizes": SIZES,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="rlhfops-memory-") as tmp:
        root = args.workspace or Path(tmp)
        for name in args.models:
            model_dir = None
            if name == "real":
                from rlhfops.real_model import prepare_real_model

                model_dir = prepare_real_model()
            (root / name).mkdir(parents=True, exist_ok=True)
            rows = run_model(name, model_dir, root / name / "workspace", args.commands, args.overrides)
            record["models"][name] = {"model": str(model_dir) if model_dir else "tiny (model.*)", "commands": rows}
    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    record["total_seconds"] = round(time.perf_counter() - start, 1)

    names = list(record["models"])
    print()
    print("| command | " + " | ".join(f"{n} peak RSS MiB | {n} wall s" for n in names) + " |")
    print("|---|" + "--:|--:|" * len(names))
    for command in args.commands:
        cells = []
        for n in names:
            row = record["models"][n]["commands"].get(command)
            failed = row is not None and row["code"] != 0
            cells += ["failed" if failed else str(row["peak_rss_mib"]), str(row["seconds"])] if row else ["-", "-"]
        print(f"| {command} | " + " | ".join(cells) + " |")
    print(f"\n{record['machine']}; load average (1, 5, 15 min) {record['load_before']} before, "
          f"{record['load_after']} after; {record['total_seconds']:.0f} s in all")  # fmt: skip
    if args.out:
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    failed = [f"{n} {c}" for n, m in record["models"].items() for c, r in m["commands"].items() if r["code"] != 0]
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed (stderr above and in --out)")


if __name__ == "__main__":
    main()
