"""Tune the scalarisation weights on the validation split (the `tune-weights` stage).

For each validation prompt, k candidate responses (noisy teacher + policy samples, as for the
preference pairs) are scored by every objective's ensemble, giving reward vectors (P, C, M);
their true utility is the gold composite (mean of the gold objectives). A weight grid over the
simplex is scored by the utility of the candidate each weight vector would pick, and a small
model learns per-prompt weights from cheap prompt features. Both are compared with equal
weights on held-out test prompts, and the best global weights are written for
`scalarisation.weights`.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from rlhfops.annotation.pairs import collect_responses
from rlhfops.config import Config
from rlhfops.files import atomic_write_json
from rlhfops.modeling import load_decoder
from rlhfops.reward.functions import load_ensembles
from rlhfops.reward.objectives import fit_weight_model, grid_search, select, simplex_grid
from rlhfops.tasks import Task, make_task

GRID_STEPS = 4  # weights in steps of 1/4 over the simplex


def prompt_features(prompt: str) -> list[float]:
    """Cheap features a router could compute per request: asks for the secret, divides by zero,
    number of operators, and a bias."""
    return [
        float("secret" in prompt),
        float(bool(re.search(r"/0(?!\d)", prompt))),
        len(re.findall(r"[-+*/]", prompt)),
        1.0,
    ]


def candidate_table(cfg: Config, task: Task, split: str, n: int, policy, ensembles) -> dict[str, Any]:
    examples = task.examples(split, n)
    k = cfg.reward.data.responses_per_prompt
    responses = collect_responses(task, examples, k, cfg.seed + 7, cfg, policy)
    prompts = [ex.prompt for ex in examples for _ in range(k)]
    flat = [r for row in responses for r in row]
    rewards = torch.stack(
        [e.score(prompts, flat, cfg.reward.aggregation, cfg.reward.uwo_lambda)[0] for e in ensembles.values()], dim=1
    ).view(n, k, -1)  # (P, C, M)
    utility = torch.tensor(
        [[fmean(task.judge(ex, r).values()) for r in row] for ex, row in zip(examples, responses, strict=True)]
    )
    features = torch.tensor([prompt_features(ex.prompt) for ex in examples])
    return {"rewards": rewards, "utility": utility, "features": features}


def tune_weights(cfg: Config, policy_dir: str | Path, rm_dir: str | Path, out_path: str | Path) -> dict[str, Any]:
    task = make_task(cfg.task, seed=cfg.seed)
    policy = load_decoder(cfg, policy_dir)
    ensembles = load_ensembles(rm_dir, cfg.reward.objectives)
    names = list(ensembles)
    val = candidate_table(cfg, task, "val", cfg.task.n_val, policy, ensembles)
    test = candidate_table(cfg, task, "test", cfg.task.n_val, policy, ensembles)
    grid = simplex_grid(len(names), GRID_STEPS)
    result = grid_search(val["rewards"], val["utility"], grid)
    model = fit_weight_model(val["features"], val["rewards"], val["utility"], grid, seed=cfg.seed)

    def test_utility(weights: torch.Tensor) -> float:
        picked = select(test["rewards"], weights)
        return test["utility"].gather(1, picked[:, None]).mean().item()

    with torch.no_grad():
        learned = model(test["features"])
    report = {
        "objectives": names,
        "grid_size": len(grid),
        "best_weights": dict(zip(names, result.weights.tolist(), strict=True)),
        "val_utility_best": result.score,
        "test_utility": {
            "equal_weights": test_utility(torch.full((len(names),), 1 / len(names))),
            "grid_best": test_utility(result.weights),
            "learned_per_prompt": test_utility(learned),
            "oracle": test["utility"].max(1).values.mean().item(),
            "random_candidate": test["utility"].mean().item(),
        },
    }
    atomic_write_json(out_path, report)
    return report
