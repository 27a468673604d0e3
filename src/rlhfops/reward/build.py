"""The one place a reward is built from the config: every consumer (our PPO, TRL's GRPO / RLOO,
offline RL, Best-of-N, serving, the bench) calls `build_reward` or `reward_fn`, so they all
optimise or select with the same thing.

    build_reward(cfg, source, rm_dir, prm_dir) -> (callables, weights)

in TRL's `reward_funcs` / `reward_weights` convention; `weighted_sum` folds them into one callable
for the consumers that want a single score.

`source` is where the numbers come from:

    gold       the task's exact judges, one callable per objective weighted by
               `scalarisation.weights`, plus shaping (when `shaping.enabled`) weighted by the
               helpfulness weight: shaping is partial credit toward a correct answer, so it stays
               below that weight's outcome gap (`shaping.cap` < 1).
    composite  the reward-model ensembles of `rm_dir`. As one weighted sum of per-objective
               `EnsembleReward`s when that is all the config asks for (TRL then logs each
               objective on its own); as the single `CompositeReward` (weight 1) when it asks for
               more than a weighted sum: hierarchical scalarisation, the uncertainty penalty, the
               PRM term (`reward.prm_weight`, from `prm_dir`) or shaping.

Every objective in `reward.objectives` needs a weight in `scalarisation.weights`: a missing one is
an error, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rlhfops.config import Config
from rlhfops.reward.ensemble import RewardEnsemble
from rlhfops.reward.functions import (
    CompositeReward,
    EnsembleReward,
    GoldReward,
    PRMReward,
    ShapingReward,
    load_ensembles,
)
from rlhfops.tasks import check_objectives, make_task
from rlhfops.workspace import is_model_dir

RewardFn = Callable[..., list]
SOURCES = ("gold", "composite")


def objective_weights(cfg: Config) -> list[float]:
    """`scalarisation.weights` in the order of `reward.objectives`; a missing weight is an error."""
    objectives = list(cfg.reward.objectives)
    missing = [o for o in objectives if o not in cfg.scalarisation.weights]
    if missing:
        raise ValueError(f"scalarisation.weights has no weight for {', '.join(missing)}")
    return [float(cfg.scalarisation.weights[o]) for o in objectives]


def needs_composite(cfg: Config) -> bool:
    """True when the reward-model reward is more than a weighted sum of per-objective rewards."""
    return (
        cfg.scalarisation.method == "hierarchical"
        or cfg.reward.uncertainty_penalty > 0
        or cfg.reward.prm_weight > 0
        or cfg.shaping.enabled
    )


def load_prm(prm_dir: str | Path | None, why: str):
    """The process reward model in `prm_dir`; `why` names the setting that needs it."""
    if prm_dir is None or not is_model_dir(prm_dir):
        where = f" (none in '{prm_dir}')" if prm_dir is not None else ""
        raise ValueError(f"{why} needs a trained process reward model{where}; train one with `rlhfops train-prm`")
    from rlhfops.reward.prm import ProcessRewardModel

    return ProcessRewardModel.load(prm_dir)


def build_reward(
    cfg: Config,
    source: str,
    rm_dir: str | Path | None = None,
    prm_dir: str | Path | None = None,
    *,
    ensembles: dict[str, RewardEnsemble] | None = None,
    prm=None,
) -> tuple[list[RewardFn], list[float]]:
    """The reward callables and their weights (module docstring). Already-loaded `ensembles` /
    `prm` may be passed instead of their directories."""
    weights = objective_weights(cfg)
    objectives = list(cfg.reward.objectives)
    if source == "gold":
        task = make_task(cfg.task, seed=cfg.seed)
        check_objectives(objectives, task)
        funcs: list[RewardFn] = [GoldReward(task, o) for o in objectives]
        if cfg.shaping.enabled:
            funcs.append(ShapingReward(task, cfg))
            weights.append(float(cfg.scalarisation.weights.get("helpfulness", 0.0)))
        return funcs, weights
    if source != "composite":
        raise ValueError(f"unknown reward source '{source}'; expected one of {', '.join(SOURCES)}")
    if needs_composite(cfg):
        return [composite_reward(cfg, rm_dir, prm_dir, ensembles=ensembles, prm=prm)], [1.0]
    ensembles = ensembles if ensembles is not None else _ensembles(cfg, rm_dir)
    how, lam = cfg.reward.aggregation, cfg.reward.uwo_lambda
    return [EnsembleReward(ensembles[o], how, lam) for o in objectives], weights


def _ensembles(cfg: Config, rm_dir: str | Path | None) -> dict[str, RewardEnsemble]:
    if rm_dir is None:
        raise ValueError("the composite reward needs the reward-model ensembles, but no directory was given")
    return load_ensembles(rm_dir, list(cfg.reward.objectives))


def composite_reward(
    cfg: Config,
    rm_dir: str | Path | None = None,
    prm_dir: str | Path | None = None,
    *,
    ensembles: dict[str, RewardEnsemble] | None = None,
    prm=None,
) -> CompositeReward:
    """The reward models' composite as one object, with its per-objective parts (`vectors`: rewards,
    spreads, each term) for what needs more than the score: `rlhfops score`, the server's spread
    metric, adaptive Best-of-N, the bench. The PRM term is loaded when `reward.prm_weight > 0`."""
    ensembles = ensembles if ensembles is not None else _ensembles(cfg, rm_dir)
    if cfg.reward.prm_weight > 0 and prm is None:
        prm = load_prm(prm_dir, "reward.prm_weight above 0")
    return CompositeReward(ensembles, cfg, prm if cfg.reward.prm_weight > 0 else None)


class WeightedSum:
    """sum_i w_i * f_i(prompts, completions): what TRL computes from `reward_funcs` / `reward_weights`."""

    def __init__(self, funcs: Sequence[RewardFn], weights: Sequence[float], name: str = "reward"):
        if len(funcs) != len(weights):
            raise ValueError(f"{len(funcs)} reward functions but {len(weights)} weights")
        self.funcs, self.weights = list(funcs), [float(w) for w in weights]
        self.__name__ = name

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float]:
        totals = [0.0] * len(prompts)
        for fn, w in zip(self.funcs, self.weights, strict=True):
            for i, r in enumerate(fn(prompts, completions, **columns)):
                totals[i] += w * r
        return totals


def weighted_sum(funcs: Sequence[RewardFn], weights: Sequence[float], name: str | None = None) -> RewardFn:
    """One callable from `build_reward`'s pair; a single function of weight 1 is returned as it is."""
    if len(funcs) == 1 and weights[0] == 1.0:
        return funcs[0]
    return WeightedSum(funcs, weights, name or "+".join(getattr(f, "__name__", "reward") for f in funcs))


def reward_fn(
    cfg: Config, source: str, rm_dir: str | Path | None = None, prm_dir: str | Path | None = None, **loaded
) -> RewardFn:
    """`weighted_sum(*build_reward(...))`: the single score PPO, offline RL and Best-of-N use."""
    return weighted_sum(*build_reward(cfg, source, rm_dir, prm_dir, **loaded), name=f"{source}_reward")


def best_of_n_scorer(cfg: Config, ensembles: dict[str, RewardEnsemble], prm=None) -> RewardFn:
    """The reward callable `best_of_n.scorer` names: `ensemble` the composite reward, `prm` the PRM
    solution score (`prm.aggregation`), `both` their sum."""
    scorer = cfg.best_of_n.scorer
    if scorer in ("prm", "both") and prm is None:
        raise ValueError(f"best_of_n.scorer is '{scorer}' but no process reward model was given")
    if scorer == "prm":
        return PRMReward(prm, cfg.prm.aggregation)
    composite = reward_fn(cfg, "composite", ensembles=ensembles, prm=prm)
    if scorer == "ensemble":
        return composite
    if scorer == "both":
        return WeightedSum([composite, PRMReward(prm, cfg.prm.aggregation)], [1.0, 1.0], "composite+prm")
    raise ValueError(f"unknown best_of_n.scorer '{scorer}'; expected ensemble, prm or both")
