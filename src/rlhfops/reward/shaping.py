"""Reward shaping: partial credit on top of the outcome reward, capped.

    bonus = min(cap, w_format * format_ok + w_steps * valid_step_share + w_partial * close_answer)

with `cap < 1`, the gap between a wrong and a right outcome on the gold / verifier scale, so a
wrong response with every bit of partial credit still scores below a right one without any.
The terms come from the task (`shaping_terms(example, response)`: format, steps, partial, each in
[0, 1]); a task without them cannot be shaped, which is one clear error when shaping is on.
"""

from __future__ import annotations

from rlhfops.config import ShapingConfig
from rlhfops.tasks import Task


def shaping_bonus(task: Task, prompt: str, completion: str, cfg: ShapingConfig) -> float:
    """The capped weighted sum of the task's shaping terms; 0 when shaping is off."""
    if not cfg.enabled:
        return 0.0
    terms_of = getattr(task, "shaping_terms", None)
    if terms_of is None:
        raise ValueError(f"shaping.enabled is true but task '{task.name}' has no shaping terms; turn shaping off")
    t = terms_of(task.example(prompt), completion)
    total = cfg.format_weight * t["format"] + cfg.step_weight * t["steps"] + cfg.partial_answer_weight * t["partial"]
    return min(cfg.cap, total)
