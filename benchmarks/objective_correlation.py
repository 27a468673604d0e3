"""How differently the multi-objective weight grid ranks the bench's logged samples.

    python benchmarks/objective_correlation.py [--run workspace/bench/runs/seed-0] [--grid-steps 3]
                                               [--out workspace/bench/objective_correlation.json]

On the logged samples the bench's weight-grid policies train on (cycle 1's collected responses of a
`rlhfops bench` seed workspace, scored by its last cycle's reward ensembles, as
`rlhfops.bench.trained_pareto` scores them), prints the Pearson correlation between the objectives'
rewards and, per weight vector of the simplex grid, the Spearman rank correlation of its scalarised
reward with the configured weighted sum's. Offline RL learns from the standardised rewards, so if
every grid weight ranked the samples alike, the grid's policies could only differ by training
noise; if they rank them differently and the policies still do not differ, the cause is the
policy update, not the rewards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rlhfops.bench import logged_rewards
from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.reward.objectives import simplex_grid, weighted_sum
from rlhfops.workspace import Workspace


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 (ties broken by position; the rewards are continuous)."""
    out = torch.empty_like(x)
    out[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("workspace/bench/runs/seed-0"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--grid-steps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ws = Workspace(args.run)
    if not ws.cycle_numbers():
        raise SystemExit(f"error: no cycles in '{args.run}'; run `rlhfops bench` first")
    cfg = load_config(args.config)
    names = list(cfg.reward.objectives)
    prompts, _, vectors = logged_rewards(cfg, ws)
    rewards, extra = vectors["rewards"], vectors["extra"]  # (N, M), (N,)
    objectives = {
        f"{a}~{b}": pearson(rewards[:, i], rewards[:, j])
        for i, a in enumerate(names)
        for j, b in enumerate(names)
        if i < j
    }
    total_ranks = ranks(vectors["total"])
    grid = [
        {
            "weights": dict(zip(names, w.tolist(), strict=True)),
            "spearman_vs_weighted_sum": pearson(ranks(weighted_sum(rewards, w) + extra), total_ranks),
        }
        for w in simplex_grid(len(names), args.grid_steps)
    ]
    rho = [g["spearman_vs_weighted_sum"] for g in grid]
    result = {
        "run": str(args.run),
        "samples": len(prompts),
        "objective_pearson": objectives,
        "grid": grid,
        "spearman_min": min(rho),
        "spearman_mean": sum(rho) / len(rho),
    }
    print(f"{len(prompts)} logged samples of {args.run}")
    print("Pearson r between objective rewards: " + ", ".join(f"{k} {v:+.2f}" for k, v in objectives.items()))
    print(
        f"Spearman rho of each of {len(grid)} grid weights' reward with the weighted sum's: "
        f"min {min(rho):.3f}, mean {result['spearman_mean']:.3f}"
    )
    for g in grid:
        w = "/".join(f"{x:.2f}" for x in g["weights"].values())
        print(f"  w {w}: {g['spearman_vs_weighted_sum']:.3f}")
    if args.out:
        atomic_write_json(args.out, result)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
