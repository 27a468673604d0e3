"""The unit-conversion task's evaluation judge, a `python` judge (`eval.judges` in real_model.yaml).

Annotation labels with the task's own checker (`task.py`: the last number's relative error), which
the reward models and the policy are trained against. Evaluation, the gate and simulated traffic
grade with a stricter checker, so a policy is not graded by the judge it was trained against: the
same number score, but only for a response that names the unit asked for after its last number
("3500 m" or "3500 meters" to "Convert 3.5 km to m."); a bare "3500" scores 0.
"""

from __future__ import annotations

import re

from examples.unit_conversion.task import NUMBER_RE, helpfulness, solve

UNIT_WORDS = {
    "km": ("km", "kilometer", "kilometre"),
    "m": ("m", "meter", "metre"),
    "cm": ("cm", "centimeter", "centimetre"),
    "mm": ("mm", "millimeter", "millimetre"),
    "kg": ("kg", "kilogram"),
    "g": ("g", "gram"),
    "mg": ("mg", "milligram"),
    "h": ("h", "hour", "hr"),
    "min": ("min", "minute"),
    "s": ("s", "second", "sec"),
    "L": ("l", "liter", "litre"),
    "mL": ("ml", "milliliter", "millilitre"),
}


def names_unit(response: str, unit: str) -> bool:
    """Whether the word right after the response's last number is `unit` (or its name, plural)."""
    numbers = list(NUMBER_RE.finditer(response))
    if not numbers:
        return False
    after = re.match(r"\s*([A-Za-z]+)", response[numbers[-1].end() :])
    return after is not None and after[1].lower().rstrip("s") in {w.rstrip("s") for w in UNIT_WORDS[unit]}


def helpful_with_unit(prompts: list[str], responses: list[str]) -> list[float | None]:
    """Per response: the task's helpfulness when the target unit follows the number, else 0; None
    (unlabelled) for a prompt that is not a conversion."""
    scores: list[float | None] = []
    for prompt, response in zip(prompts, responses, strict=True):
        example = solve(prompt)
        if example.kind == "unknown":
            scores.append(None)
            continue
        unit = example.reference.split()[-1]
        scores.append(helpfulness(example, response) if names_unit(response, unit) else 0.0)
    return scores
