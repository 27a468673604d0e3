"""The dense-PRM row: PPO with dense process-reward step rewards vs outcome-only PPO, same start,
reward, seed and evaluation prompts. `benchmarks/ppo_dense_prm.py` runs the same measurement
(`train_and_evaluate_ppo`) over several seeds on the gold reward."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlhfops.bench.plan import bench_eval_config
from rlhfops.bench.records import DensePRM, PPORun
from rlhfops.config import Config
from rlhfops.workspace import Workspace


def ppo_metrics(result: dict[str, Any]) -> PPORun:
    """The row's metrics of an `evaluation.evaluate` result."""
    return PPORun(
        gold_composite=result["gold_composite"],
        solve_accuracy=result["solve_accuracy"],
        step_validity=result["step_validity"],
    )


def train_and_evaluate_ppo(
    cfg: Config, start_dir: Path, out: Path, rm_dir: Path | None, prm_dir: Path | None, eval_cfg: Config
) -> tuple[PPORun, float]:
    """PPO (`policy.dense_prm` as `cfg` says) from `start_dir` into `out`, gold-evaluated under
    `eval_cfg`: the row's metrics, and the seconds of the training call."""
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.rl.train import train_policy

    if cfg.policy.algorithm != "ppo":
        raise ValueError(f"the dense-PRM row compares PPO runs; policy.algorithm is '{cfg.policy.algorithm}'")
    start = time.perf_counter()
    train_policy(cfg, start_dir, out, rm_dir, prm_dir, progress=False)
    seconds = time.perf_counter() - start
    result = evaluate_dir(eval_cfg, out)
    return ppo_metrics(result), seconds


def dense_prm_ppo(cfg: Config, ws: Workspace, out: Path) -> DensePRM:
    """PPO with dense PRM step rewards from SFT on cycle 1's reward models and PRM: the twin of
    cycle 1's outcome-only candidate, whose evaluation is read from the cycle."""
    from rlhfops.cycle import cycle_eval_path, cycle_models

    models = cycle_models(ws, 1)
    dense_cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"dense_prm": True})})
    dense, seconds = train_and_evaluate_ppo(
        dense_cfg, ws.model_dir("sft"), out, models / "reward", models / "prm", bench_eval_config(cfg)
    )
    outcome = json.loads(cycle_eval_path(ws, 1).read_text())["results"]["ppo"]
    return {"dense": dense, "outcome": ppo_metrics(outcome), "dense_seconds": seconds}
