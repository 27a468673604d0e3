"""Tasks: where prompts, reference solutions and gold judges come from.

A task is anything with the shape of `Task` below; `make_task` picks one by config name with a
flat if/elif (no registry). The built-in task is `arithmetic` (DESIGN.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rlhfops.config import TaskConfig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One prompt with its gold answer.

    prompt:    the exact text the model is conditioned on, ending in a newline (`"q: 2+3*4?\\n"`)
    kind:      `solve` | `undefined` | `unsafe`
    answer:    the gold final answer: a number as text, `undefined` or `refuse`
    reference: the reference response, without eos (`"3*4=12\\n2+12=14\\nanswer: 14"`)
    """

    prompt: str
    kind: str
    answer: str
    reference: str


class Task(Protocol):
    name: str
    objectives: tuple[str, ...]

    def examples(self, split: str, n: int) -> list[Example]:
        """n distinct examples of one split; deterministic; splits never share a prompt."""
        ...

    def judge(self, example: Example, response: str) -> dict[str, float]:
        """Gold score in [0, 1] for each objective."""
        ...

    def teacher(self, example: Example, rng: random.Random) -> tuple[str, str]:
        """A noisy-teacher response and the name of its corruption (`none` if clean)."""
        ...


def gold_composite(task: Task, examples: list[Example], responses: list[str]) -> float:
    """The headline gold number: the mean over objectives of each objective's mean gold score over
    `responses[i]` to `examples[i]` (what evaluation reports as `gold_composite`)."""
    per_objective = zip(*(task.judge(ex, r).values() for ex, r in zip(examples, responses, strict=True)), strict=True)
    return fmean(fmean(scores) for scores in per_objective)


def make_task(cfg: TaskConfig, seed: int = 0) -> Task:
    if cfg.name == "arithmetic":
        from rlhfops.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(cfg, seed=seed)
    raise ValueError(f"unknown task '{cfg.name}'")
