"""Reward shaping: partial credit on top of the outcome reward, capped.

    bonus = min(cap, w_format * format_ok + w_steps * valid_step_share + w_partial * close_answer)

with `cap < 1`, the gap between a wrong and a right outcome on the gold / verifier scale, so a
wrong response with every bit of partial credit still scores below a right one without any.
The terms use the built-in task's exact verifiers (the prompt is enough to rebuild its example).
"""

from __future__ import annotations

from rlhfops.config import ShapingConfig
from rlhfops.tasks.arithmetic import make_example, parse_response, verify

PARTIAL_TOLERANCE = 0.1  # an answer within 10% of the gold number earns partial credit


def shaping_terms(prompt: str, completion: str) -> dict[str, float]:
    """Each partial-credit term in [0, 1] for one response.

    format   the response parses: only step lines, then one answer line
    steps    share of valid step lines (solve prompts; 0 when there are none)
    partial  a numeric answer within 10% of the gold number (solve prompts)
    """
    example = make_example(prompt)
    parsed = parse_response(completion)
    verdict = verify(example, completion)
    terms = {"format": float(parsed.answer is not None and parsed.malformed == 0), "steps": 0.0, "partial": 0.0}
    if example.kind == "solve":
        if verdict.step_valid:
            terms["steps"] = sum(verdict.step_valid) / len(verdict.step_valid)
        try:
            answer, gold = int(parsed.answer or ""), int(example.answer)
        except ValueError:
            return terms
        terms["partial"] = float(abs(answer - gold) <= PARTIAL_TOLERANCE * max(1, abs(gold)))
    return terms


def shaping_bonus(prompt: str, completion: str, cfg: ShapingConfig) -> float:
    """The capped weighted sum of `shaping_terms`; 0 when shaping is off."""
    if not cfg.enabled:
        return 0.0
    t = shaping_terms(prompt, completion)
    total = cfg.format_weight * t["format"] + cfg.step_weight * t["steps"] + cfg.partial_answer_weight * t["partial"]
    return min(cfg.cap, total)
