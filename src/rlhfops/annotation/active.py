"""Active learning: annotate the prompts the reward ensemble is least sure about first.

A prompt's uncertainty is the mean, over its responses and the objectives, of the ensemble
spread (the std of the K members' normalised rewards, `reward.ensemble.aggregate`): where the
members disagree, a new label teaches them most. Within an annotation budget the most uncertain
prompts are taken; `random` (or no ensemble yet, in cycle 1) takes a seeded random sample.
"""

from __future__ import annotations

import random
from statistics import fmean


def prompt_uncertainty(spreads: list[dict[str, float]], groups: list[list[int]]) -> list[float]:
    """Mean spread per prompt. spreads: per response, objective -> ensemble std; groups: per
    prompt, the indices of its responses.

    >>> prompt_uncertainty([{"h": 0.2}, {"h": 0.4}, {"h": 1.0}], [[0, 1], [2]])
    [0.30000000000000004, 1.0]
    """
    return [fmean(v for i in idx for v in spreads[i].values()) for idx in groups]


def select_prompts(uncertainty: list[float] | None, n: int, budget: int | None, strategy: str, seed: int) -> list[int]:
    """Indices of the prompts to annotate, in annotation order.

    budget None (or >= n): all n, most uncertain first when uncertainties are known.
    `uncertainty` strategy with uncertainties: the `budget` highest (ties: earlier prompt first);
    `random`, or no uncertainties: a `random.Random(seed)` sample.

    >>> select_prompts([0.1, 0.9, 0.5], 3, 2, "uncertainty", 0)
    [1, 2]
    """
    if strategy not in ("uncertainty", "random"):
        raise ValueError(f"unknown active-learning strategy '{strategy}'; expected uncertainty or random")
    k = n if budget is None else min(budget, n)
    if strategy == "uncertainty" and uncertainty is not None:
        if len(uncertainty) != n:
            raise ValueError(f"{len(uncertainty)} uncertainties for {n} prompts")
        return sorted(range(n), key=lambda i: -uncertainty[i])[:k]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[:k]
