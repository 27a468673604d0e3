"""Offline RL (rl/ilql.py) vs PPO (rl/ppo.py) from the same SFT policy on the same data budget.

    python benchmarks/offline_vs_ppo.py [--workspace workspace] [--seeds 0 1 2] [--set offline.lr=1e-4 ...]
                                        [--no-ppo] [--out workspace/bench/offline_vs_ppo.json]

Per seed: the SFT policy's own samples on `offline.n_prompts` train prompts x
`offline.samples_per_prompt`, scored by the composite reward (the workspace's reward-model
ensembles), are the offline data; offline RL trains on them. PPO gets the same number of
completions (policy.steps x policy.prompts_per_step = the offline sample count), sampled on line
and scored by the same composite reward. All three policies (SFT, offline, PPO) are gold-evaluated
on the test split with the same seed. Prints per seed and mean +- std of the gains over SFT, and the
wall time of each side (offline: sampling + scoring + training; PPO: training).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from rlhfops.bench import mean_std
from rlhfops.config import load_config
from rlhfops.evaluation import evaluate_dir
from rlhfops.files import atomic_write_json
from rlhfops.reward.build import reward_fn
from rlhfops.rl.ilql import build_offline_data, train_offline
from rlhfops.rl.train import train_policy
from rlhfops.workspace import Workspace

METRICS = ("gold_composite", "solve_accuracy", "over_refusal_rate", "undefined_recall")


def _summary(result: dict) -> dict:
    out = {m: result[m] for m in METRICS}
    out.update({f"gold/{k}": v for k, v in result["gold"].items()})
    return out


def run_seed(ws: Workspace, seed: int, overrides: list[str], ppo: bool, scratch: Path) -> dict:
    cfg = load_config(None, [f"seed={seed}", "policy.reward=composite", "offline.reward=composite", *overrides])
    sft, rm_dir = ws.model_dir("sft"), ws.model_dir("reward")
    n_samples = cfg.offline.n_prompts * cfg.offline.samples_per_prompt
    row: dict = {"seed": seed, "samples": n_samples}

    # The logged data depends on the seed and the sampling settings only: cached across hyper-parameter sweeps.
    data = ws.data_dir("offline") / f"bench-seed{seed}-n{n_samples}-composite.jsonl"
    start = time.perf_counter()
    if not data.exists():
        build_offline_data(cfg, sft, data, reward_fn(cfg, "composite", rm_dir))
        row["offline_data_s"] = time.perf_counter() - start
    start = time.perf_counter()
    train_offline(cfg, sft, data, scratch / "offline", progress=False)
    row["offline_train_s"] = time.perf_counter() - start

    baseline = ws.root / "bench" / f"sft-eval-seed{seed}.json"
    if not baseline.exists():
        atomic_write_json(baseline, evaluate_dir(cfg, sft))
    row["sft"] = _summary(json.loads(baseline.read_text()))
    row["offline"] = _summary(evaluate_dir(cfg, scratch / "offline"))
    if ppo:
        steps = math.ceil(n_samples / cfg.policy.prompts_per_step)
        ppo_cfg = load_config(None, [f"seed={seed}", "policy.reward=composite", f"policy.steps={steps}", *overrides])
        start = time.perf_counter()
        train_policy(ppo_cfg, sft, scratch / "ppo", rm_dir, progress=False)
        row["ppo_train_s"] = time.perf_counter() - start
        row["ppo_steps"] = steps
        row["ppo"] = _summary(evaluate_dir(ppo_cfg, scratch / "ppo"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("workspace"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--no-ppo", action="store_true", help="offline side only (hyper-parameter sweeps)")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    for needed in ("sft", "reward"):
        if not (ws.model_dir(needed)).exists():
            raise SystemExit(f"error: no '{needed}' model in '{ws.root}/models'; run `make demo rewards` first")

    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="rlhfops-offline-bench-") as scratch:
            rows.append(run_seed(ws, seed, args.overrides, not args.no_ppo, Path(scratch)))
        r = rows[-1]
        line = f"seed {seed}: gold SFT {r['sft']['gold_composite']:.4f}  offline {r['offline']['gold_composite']:.4f}"
        if "ppo" in r:
            line += f"  PPO {r['ppo']['gold_composite']:.4f}"
        print(line, flush=True)

    sides = ["offline", *(["ppo"] if not args.no_ppo else [])]
    summary = {"overrides": args.overrides, "seeds": args.seeds, "rows": rows, "gain": {}, "wall_s": {}}
    print(f"\ngold composite gain over SFT on the test split ({len(rows)} seeds, mean +- std):")
    for side in sides:
        gains = [r[side]["gold_composite"] - r["sft"]["gold_composite"] for r in rows]
        summary["gain"][side] = mean_std(gains)
        key = f"{side}_train_s"
        summary["wall_s"][side] = mean_std([r[key] for r in rows])
        g = summary["gain"][side]
        print(f"  {side:8s} {g['mean']:+.4f} +- {g['std']:.4f}   training {summary['wall_s'][side]['mean']:.0f} s")
    summary["samples"] = rows[0]["samples"]
    if args.out:
        atomic_write_json(args.out, summary)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
