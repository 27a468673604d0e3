"""Offline RL's extracted policy vs its shifted decoder (rl/ilql.py): how much of the gold gain survives extraction.

    python benchmarks/offline_extraction.py [--workspace workspace] [--seeds 0 1 2] [--set offline.distill_lr=3e-4 ...]
                                            [--out workspace/bench/offline_extraction.json]

Per seed, from the workspace's SFT policy: its own samples on `offline.n_prompts` train prompts x
`offline.samples_per_prompt`, scored by `offline.reward` (here `gold` by default: no reward models
needed), are the logged data; `train_offline` trains the Q / V heads, writes the shifted decoder
(LM + heads, decoded with log_softmax(logits) + beta (Q - V)) and the extracted plain LM. SFT, the
shifted decoder and the extracted LM are gold-evaluated on the test split with the same seed.
Prints per seed the three gold composites and the retained share (extracted gain / shifted gain
over SFT), then mean and population std over seeds, the wall times and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rlhfops.bench import mean_std
from rlhfops.config import load_config
from rlhfops.evaluation import evaluate_dir
from rlhfops.files import atomic_write_json
from rlhfops.reward.build import reward_fn
from rlhfops.rl.ilql import build_offline_data, train_offline
from rlhfops.workspace import Workspace


def run_seed(ws: Workspace, seed: int, overrides: list[str], scratch: Path) -> dict:
    cfg = load_config(None, [f"seed={seed}", "offline.reward=gold", *overrides])
    sft = ws.model_dir("sft")
    row: dict = {"seed": seed, "samples": cfg.offline.n_prompts * cfg.offline.samples_per_prompt}
    start = time.perf_counter()
    data = build_offline_data(
        cfg, sft, scratch / "data.jsonl", reward_fn(cfg, cfg.offline.reward, ws.model_dir("reward"))
    )
    row["data_s"] = time.perf_counter() - start
    start = time.perf_counter()
    train_offline(cfg, sft, data, scratch / "extracted", progress=False, shifted_dir=scratch / "shifted")
    row["train_s"] = time.perf_counter() - start  # heads, the shifted policy's samples and the extraction
    start = time.perf_counter()
    for name, path in (("sft", sft), ("shifted", scratch / "shifted"), ("extracted", scratch / "extracted")):
        row[name] = evaluate_dir(cfg, path)["gold_composite"]
    row["eval_s"] = time.perf_counter() - start
    shifted_gain = row["shifted"] - row["sft"]
    row["retained"] = (row["extracted"] - row["sft"]) / shifted_gain if shifted_gain > 0 else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    if not ws.model_dir("sft").exists():
        raise SystemExit(f"error: no 'sft' model in '{ws.root}/models'; run `rlhfops sft -w {ws.root}` first")

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"overrides: {args.overrides or 'none'}", flush=True)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="rlhfops-extraction-bench-") as scratch:
            rows.append(run_seed(ws, seed, args.overrides, Path(scratch)))
        r = rows[-1]
        retained = "n/a (no shifted gain)" if r["retained"] is None else f"{r['retained']:.0%}"
        print(
            f"seed {seed}: gold SFT {r['sft']:.4f}  shifted decoder {r['shifted']:.4f}  extracted LM "
            f"{r['extracted']:.4f}  retained {retained}  (data {r['data_s']:.0f} s, train + extract "
            f"{r['train_s']:.0f} s, 3 evaluations {r['eval_s']:.0f} s)",
            flush=True,
        )

    summary: dict = {"overrides": args.overrides, "seeds": args.seeds, "rows": rows}
    print(f"\ngold composite on the test split ({len(rows)} seeds, mean +- population std):")
    for name in ("sft", "shifted", "extracted"):
        summary[name] = mean_std([r[name] for r in rows])
        print(f"  {name:10s} {summary[name]['mean']:.4f} +- {summary[name]['std']:.4f}")
    for name in ("shifted", "extracted"):
        summary[f"{name}_gain"] = mean_std([r[name] - r["sft"] for r in rows])
        g = summary[f"{name}_gain"]
        print(f"  {name} gain over SFT {g['mean']:+.4f} +- {g['std']:.4f}")
    shares = [r["retained"] for r in rows if r["retained"] is not None]
    if shares:
        summary["retained"] = mean_std(shares)
        r = summary["retained"]
        print(f"  retained share per seed {r['mean']:.0%} +- {r['std']:.0%} ({len(shares)} seeds)")
    if summary["shifted_gain"]["mean"] > 0:
        summary["retained_of_mean_gain"] = summary["extracted_gain"]["mean"] / summary["shifted_gain"]["mean"]
        print(f"  retained share of the mean gain {summary['retained_of_mean_gain']:.0%}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out:
        atomic_write_json(args.out, summary)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
