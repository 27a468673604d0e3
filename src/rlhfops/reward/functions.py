"""Reward functions: what the policy optimisers and Best-of-N see.

Every reward is a plain callable in TRL's convention,

    reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]

with a `__name__` for logging, so the same objects feed our PPO, TRL's GRPOTrainer/RLOOTrainer
(`reward_funcs=[...]`, `reward_weights=[...]`) and Best-of-N. `CompositeReward` combines the
objectives' ensembles, the uncertainty penalty, the PRM and shaping as the config says.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhfops.config import Config
from rlhfops.reward.ensemble import RewardEnsemble
from rlhfops.reward.objectives import scalarise
from rlhfops.reward.shaping import shaping_bonus
from rlhfops.tasks import Task, make_task


class GoldReward:
    """The task's own gold judge for one objective (a verifiable reward)."""

    def __init__(self, task: Task, objective: str):
        if objective not in task.objectives:
            raise ValueError(f"task '{task.name}' judges {', '.join(task.objectives)}, not '{objective}'")
        self.task, self.objective = task, objective
        self.__name__ = f"gold_{objective}"

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        task = self.task
        return [task.judge(task.example(p), c)[self.objective] for p, c in zip(prompts, completions, strict=True)]


class EnsembleReward:
    """One objective's reward-model ensemble, aggregated (`mean`, `weighted`, `min`, `uwo`)."""

    def __init__(self, ensemble: RewardEnsemble, how: str = "mean", lam: float = 1.0):
        self.ensemble, self.how, self.lam = ensemble, how, lam
        self.__name__ = f"rm_{ensemble.objective}"

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        agg, _ = self.ensemble.score(prompts, completions, self.how, self.lam)
        return agg.tolist()


class PRMReward:
    """The process reward model's solution score (`min`, `product` or `last` of its step probabilities)."""

    def __init__(self, prm, aggregation: str = "min"):
        self.prm, self.aggregation = prm, aggregation
        self.__name__ = "prm"

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        return self.prm.score(prompts, completions, aggregation=self.aggregation)


class ShapingReward:
    """Capped partial credit (`reward/shaping.py`); zeros when shaping is off."""

    def __init__(self, task: Task, cfg: Config):
        self.task, self.cfg = task, cfg.shaping
        self.__name__ = "shaping"

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        return [shaping_bonus(self.task, p, c, self.cfg) for p, c in zip(prompts, completions, strict=True)]


def load_ensembles(rm_dir: str | Path, objectives: list[str]) -> dict[str, RewardEnsemble]:
    rm_dir = Path(rm_dir)
    missing = [o for o in objectives if not (rm_dir / o).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no reward ensemble for {', '.join(missing)} in '{rm_dir}'; train them with `rlhfops train-rm`"
        )
    return {o: RewardEnsemble(rm_dir / o) for o in objectives}


class CompositeReward:
    """scalarise(per-objective aggregates) - penalty * mean spread + prm_weight * PRM + shaping.

    `vectors` gives what went into it: the reward vector (N, M), the spreads (N, M) and each term.
    """

    __name__ = "composite"

    def __init__(self, ensembles: dict[str, RewardEnsemble], cfg: Config, prm=None):
        if cfg.reward.prm_weight > 0 and prm is None:
            raise ValueError("reward.prm_weight is above 0 but no process reward model was given")
        self.ensembles, self.cfg, self.prm = ensembles, cfg, prm
        self.objectives = list(ensembles)
        self.task = make_task(cfg.task, seed=cfg.seed) if cfg.shaping.enabled else None  # shaping's terms

    def vectors(self, prompts: list[str], completions: list[str]) -> dict[str, torch.Tensor]:
        rc = self.cfg.reward
        scored = [e.score(prompts, completions, rc.aggregation, rc.uwo_lambda) for e in self.ensembles.values()]
        rewards = torch.stack([agg for agg, _ in scored], dim=1)  # (N, M)
        spreads = torch.stack([std for _, std in scored], dim=1)  # (N, M)
        out = {
            "rewards": rewards,
            "spreads": spreads,
            "scalarised": scalarise(rewards, self.objectives, self.cfg.scalarisation),
            "uncertainty": -rc.uncertainty_penalty * spreads.mean(1),
            "prm": torch.zeros(len(prompts)),
            "shaping": torch.tensor(
                [shaping_bonus(self.task, p, c, self.cfg.shaping) for p, c in zip(prompts, completions, strict=True)]
            ),
        }
        if rc.prm_weight > 0:
            prm_scores = self.prm.score(prompts, completions, aggregation=self.cfg.prm.aggregation)
            out["prm"] = rc.prm_weight * torch.tensor(prm_scores)
        out["total"] = out["scalarised"] + out["uncertainty"] + out["prm"] + out["shaping"]
        return out

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        return self.vectors(prompts, completions)["total"].tolist()
