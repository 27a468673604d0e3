"""Tasks: where prompts, reference solutions and gold judges come from.

A task is anything with the shape of `Task` below; `make_task` picks one by config name with a
flat if/elif (no registry): the built-in `arithmetic` (DESIGN.md), `dataset` (prompts from a file,
tasks/dataset.py), or a user-written task named by `task.factory` (tasks/plugin.py shows one).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rlhfops.config import TaskConfig

SPLITS = ("train", "val", "test")


class TaskError(ValueError):
    """A task that cannot be built or does not have the shape of `Task`; one sentence for a person."""


@dataclass(frozen=True)
class Example:
    """One prompt with its gold answer.

    prompt:    the exact text the model is conditioned on, ending in a newline (`"q: 2+3*4?\\n"`)
    kind:      a task-defined label that evaluation reports by (built-in: `solve` | `undefined` | `unsafe`)
    answer:    the gold final answer: a number as text, `undefined` or `refuse`
    reference: the reference response, without eos (`"3*4=12\\n2+12=14\\nanswer: 14"`)
    """

    prompt: str
    kind: str
    answer: str
    reference: str


class Task(Protocol):
    """What every stage needs from a task; `make_task(cfg)` is the only way a stage gets one, and
    nothing outside `rlhfops/tasks/` imports a particular task's module (tests/test_tasks_seam.py).

    Required: the members below. Optional, found with the helpers under the protocol (a stage that
    needs a missing one says so in one line and skips, or fails with one sentence):

        teacher(example, rng) -> (response, corruption)     SFT data and teacher responses in pairs
        metrics(examples, responses) -> dict                 task-specific numbers beside the gold scores
        steps: StepStructure                                 step lines, their exact validity, for the PRM
        shaping_terms(example, response) -> dict[str, float] partial credit terms in [0, 1] (reward shaping)
    """

    name: str
    objectives: tuple[str, ...]

    def examples(self, split: str, n: int) -> list[Example]:
        """n distinct examples of one split; deterministic; splits never share a prompt."""
        ...

    def example(self, prompt: str) -> Example:
        """The example a prompt text stands for: judges and reward callables see prompt texts only."""
        ...

    def judge(self, example: Example, response: str) -> dict[str, float]:
        """Gold score in [0, 1] for each objective."""
        ...


class StepStructure(Protocol):
    """A task whose responses are lines of steps then an answer line (process supervision: step
    labels, the PRM, dense PPO rewards). Lines are `response.split(STEP_SEPARATOR)`."""

    def line_labels(self, example: Example, response: str) -> list[bool]:
        """One exact label per line: a step line is good when it is a valid step, the answer line
        when the answer is right, anything else (malformed, after the answer) is bad."""
        ...

    def answer_line(self, response: str) -> int:
        """Index of the first answer line (the number of lines when there is none)."""
        ...

    def answer_correct(self, example: Example, response: str) -> bool:
        """Whether the response's final answer is right (Monte-Carlo step labels roll out to it)."""
        ...

    def wrong_step(self, example: Example, rng: random.Random) -> str | None:
        """The reference with one step made wrong (PRM data and its ranking check); None: cannot."""
        ...


STEP_SEPARATOR = "\n"  # what separates the lines (steps) of a response


def check_objectives(objectives: list[str], task: Task) -> list[str]:
    """`reward.objectives` if the task judges each of them; otherwise one sentence naming the rest."""
    unknown = [o for o in objectives if o not in task.objectives]
    if unknown:
        raise ValueError(
            f"reward.objectives names {', '.join(unknown)}, which task '{task.name}' does not judge; "
            f"choose among its objectives {', '.join(task.objectives)}"
        )
    return list(objectives)


def teacher_of(task: Task):
    """The task's teacher (`teacher(example, rng) -> (response, corruption)`), or None."""
    return getattr(task, "teacher", None)


def steps_of(task: Task) -> StepStructure | None:
    """The task's step structure, or None for tasks whose responses have no steps."""
    return getattr(task, "steps", None)


def gold_composite(task: Task, examples: list[Example], responses: list[str]) -> float:
    """The headline gold number: the mean over objectives of each objective's mean gold score over
    `responses[i]` to `examples[i]` (what evaluation reports as `gold_composite`)."""
    per_objective = zip(*(task.judge(ex, r).values() for ex, r in zip(examples, responses, strict=True)), strict=True)
    return fmean(fmean(scores) for scores in per_objective)


def split_of(prompt: str, val_fraction: float, test_fraction: float) -> str:
    """`train` | `val` | `test`, from the sha256 of the prompt mapped into [0, 1): a function of the
    prompt text alone, so splits never share a prompt and adding prompts moves none."""
    u = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def make_task(cfg: TaskConfig, seed: int = 0) -> Task:
    """The task the config names: `task.factory` when set (a user-written task, checked for the shape
    of `Task`), else `task.name`."""
    if cfg.factory is not None:
        from rlhfops.tasks.plugin import load_task

        return load_task(cfg.factory, cfg, seed)
    if cfg.name == "arithmetic":
        from rlhfops.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(cfg, seed=seed)
    if cfg.name == "dataset":
        from rlhfops.tasks.dataset import DatasetTask

        return DatasetTask(cfg)
    raise ValueError(f"unknown task '{cfg.name}'")
