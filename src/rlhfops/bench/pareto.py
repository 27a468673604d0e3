"""The multi-objective row: the Pareto front of a simplex grid of weight vectors vs the configured
weighted sum, for Best-of-N selections (`draw.pareto`) and for policies trained per weight vector
(`trained_pareto`), with the training-seed null."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rlhfops.bench.plan import bench_eval_config
from rlhfops.bench.records import Front, FrontPoint, TrainedFront
from rlhfops.config import Config
from rlhfops.workspace import RESPONSES, Workspace

HV_REF = -0.05  # hypervolume reference point in every gold coordinate: just below 0, so a 0 score still counts


def front_summary(points: list[FrontPoint], single: FrontPoint, names: list[str], seed: int) -> Front:
    """The Pareto front of the grid's `points` (each with "gold" per objective; marked in place with
    "front") and its hypervolume, vs the configured weighted sum's point `single`. The single policy
    is not part of the grid, so the front can lose to it: a grid of specialised policies whose front
    the balanced one dominates has the smaller hypervolume."""
    from rlhfops.reward.objectives import hypervolume_mc, pareto_mask

    vectors = torch.tensor([[p["gold"][o] for o in names] for p in points])
    front = pareto_mask(vectors)
    for p, on in zip(points, front.tolist(), strict=True):
        p["front"] = on
    single_vec = torch.tensor([single["gold"][o] for o in names])
    return {
        "objectives": names,
        "points": points,
        "single": single,
        "front_size": int(front.sum()),
        "hv_front": hypervolume_mc(vectors[front], torch.full((len(names),), HV_REF), n_samples=200_000, seed=seed),
        "hv_single": math.prod(single["gold"][o] - HV_REF for o in names),
        "single_dominated": bool(((vectors >= single_vec).all(1) & (vectors > single_vec).any(1)).any()),
        "best_on_front": {o: max(p["gold"][o] for p in points if p["front"]) for o in names},
    }


def logged_rewards(cfg: Config, ws: Workspace) -> tuple[list[str], list[str], dict[str, torch.Tensor]]:
    """Cycle 1's collected samples (the SFT policy's own) of a bench seed workspace, scored by its
    last cycle's reward ensembles: prompts, responses and `CompositeReward.vectors` of them, plus
    "extra" (N,), the terms the scalarisation does not weigh (uncertainty penalty, PRM, shaping)."""
    from rlhfops.annotation.collect import read_responses
    from rlhfops.cycle import cycle_models
    from rlhfops.reward.build import composite_reward

    rows = read_responses(ws.cycle_dir(1) / RESPONSES)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    rm_dir = cycle_models(ws, max(ws.cycle_numbers())) / "reward"
    vectors = composite_reward(cfg, rm_dir).vectors(prompts, responses)
    return prompts, responses, {**vectors, "extra": vectors["uncertainty"] + vectors["prm"] + vectors["shaping"]}


def trained_pareto(cfg: Config, ws: Workspace, out: Path, grid_steps: int, log: Callable[[str], None]) -> TrainedFront:
    """One policy trained per weight vector of the simplex grid, and one under the configured
    scalarisation (the single weighted-sum policy), each gold-evaluated; `front_summary` of them.

    The null: the front of G policies beats one policy's point even when the weights do nothing,
    because the best of G noisy evaluations is higher than one. So grid policy i trains with seed
    s_i, and the weighted-sum policy is trained again with each s_i (same data and evaluation
    seed); the grid's front is compared with the front of those ("hv_null"): the same G training
    seeds on both sides, so only the weights differ.

    Every policy is offline RL (`train_offline`, the cycle's offline candidate) from SFT on the
    same logged data: cycle 1's collected samples, which the SFT policy drew, scored once by the
    last cycle's reward ensembles. Only the weights that scalarise the per-objective rewards differ
    (uncertainty penalty and shaping are kept as in `CompositeReward`), so the grid costs one
    offline training and one evaluation per weight vector and no sampling."""
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.reward.objectives import simplex_grid, weighted_sum
    from rlhfops.rl.ilql import train_offline, write_offline_data

    names = list(cfg.reward.objectives)
    prompts, responses, vectors = logged_rewards(cfg, ws)
    extra = vectors["extra"]
    configured = torch.tensor([cfg.scalarisation.weights[o] for o in names])
    grid = simplex_grid(len(names), grid_steps)
    seeds = [cfg.seed * 1000 + k for k in range(1, len(grid) + 1)]
    runs = [
        (f"w {'/'.join(f'{x:.2f}' for x in w.tolist())}, seed {s}", w, weighted_sum(vectors["rewards"], w) + extra, s)
        for w, s in zip(grid, seeds, strict=True)
    ]
    runs += [(f"weighted sum, seed {s}", configured, vectors["total"], s) for s in [cfg.seed, *seeds]]
    eval_cfg = bench_eval_config(cfg)
    points: list[FrontPoint] = []
    seconds = 0.0
    log(f"  offline-RL policies, gold {'/'.join(names)}:")
    for i, (label, w, reward, seed) in enumerate(runs):
        run_dir = out / f"run-{i:02d}"
        data = write_offline_data(run_dir / "data.jsonl", prompts, responses, reward)
        start = time.perf_counter()
        train_offline(
            cfg.model_copy(update={"seed": seed}), ws.model_dir("sft"), data, run_dir / "model", progress=False
        )
        seconds += time.perf_counter() - start
        result = evaluate_dir(eval_cfg, run_dir / "model")  # one evaluation seed for all: common random numbers
        points.append(
            {
                "weights": dict(zip(names, w.tolist(), strict=True)),
                "training_seed": seed,
                "gold": {o: result["gold"][o] for o in names},
                "gold_composite": result["gold_composite"],
                "over_refusal": result["over_refusal_rate"],
            }
        )
        log(f"    {label}: " + "/".join(f"{result['gold'][o]:.3f}" for o in names))
    g = len(grid)
    summary = front_summary(points[:g], points[g], names, cfg.seed)
    null = front_summary(points[g + 1 :], points[g], names, cfg.seed)
    return {
        **summary,
        "null_points": null["points"],
        "hv_null": null["hv_front"],
        "null_front_size": null["front_size"],
        "samples": len(prompts),
        "train_seconds": seconds,
        "policies": len(runs),
    }
