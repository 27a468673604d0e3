"""Unit conversion: a task written the way an rlhfops user writes one (see rlhfops.tasks.plugin).

Each prompt asks for one conversion and ends with a newline, where the answer starts:

    Convert 3.5 km to m.\\n        ->  3500 m

prompts.jsonl (written by make_prompts.py) holds the prompts, their reference responses (SFT data)
and their splits. The judges are programmatic checks, no model:

    helpfulness   the last number in the response against the right value: 1 when exact, falling
                  linearly to 0 at TOLERANCE relative error (0 without a number)
    conciseness   min(1, len(reference) / len(response))

A prompt outside the file is still judged when it reads "Convert <number> <unit> to <unit>.\\n"
(its answer rounded to SIGNIFICANT figures).
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal, localcontext
from pathlib import Path

from rlhfops.tasks import Example

PROMPTS = Path(__file__).with_name("prompts.jsonl")
# unit -> (what it measures, its size in that quantity's base unit)
UNITS = {
    "km": ("length", Decimal(1000)),
    "m": ("length", Decimal(1)),
    "cm": ("length", Decimal("0.01")),
    "mm": ("length", Decimal("0.001")),
    "kg": ("mass", Decimal(1000)),
    "g": ("mass", Decimal(1)),
    "mg": ("mass", Decimal("0.001")),
    "h": ("time", Decimal(3600)),
    "min": ("time", Decimal(60)),
    "s": ("time", Decimal(1)),
    "L": ("volume", Decimal(1)),
    "mL": ("volume", Decimal("0.001")),
}
PROMPT_RE = re.compile(r"Convert (\d+(?:\.\d+)?) (\w+) to (\w+)\.\n")
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SIGNIFICANT = 4  # answers are rounded to this many significant figures
TOLERANCE = 0.1  # relative error at which helpfulness reaches 0
UNJUDGED = 0.5  # a prompt that is not a conversion: the checker cannot say
NOISE = {"wrong_factor": 0.1, "approximate": 0.1, "verbose": 0.1}  # the teacher's mistakes, per response


def number_text(value: Decimal) -> str:
    """Decimal('3500.000') -> '3500'; never scientific notation."""
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def prompt_text(value: Decimal, src: str, dst: str) -> str:
    return f"Convert {number_text(value)} {src} to {dst}.\n"


def solve(prompt: str) -> Example:
    """The example a conversion prompt stands for; kind `unknown` when it is not one."""
    match = PROMPT_RE.fullmatch(prompt)
    if not match or match[2] not in UNITS or match[3] not in UNITS or UNITS[match[2]][0] != UNITS[match[3]][0]:
        return Example(prompt, "unknown", "", "")
    value, src, dst = Decimal(match[1]), match[2], match[3]
    with localcontext() as ctx:
        ctx.prec = SIGNIFICANT
        answer = number_text(+(value * UNITS[src][1] / UNITS[dst][1]))  # unary + rounds to ctx.prec
    return Example(prompt, UNITS[src][0], answer, f"{answer} {dst}")


def last_number(response: str) -> float | None:
    """The last number in the response ('3,500 m' reads 3500), or None."""
    numbers = NUMBER_RE.findall(re.sub(r"(?<=\d),(?=\d{3})", "", response))
    return float(numbers[-1]) if numbers else None


def helpfulness(example: Example, response: str) -> float:
    got, want = last_number(response), float(example.answer)
    if got is None:
        return 0.0
    return max(0.0, 1.0 - abs(got - want) / abs(want or 1.0) / TOLERANCE)


class UnitConversionTask:
    name = "unit_conversion"
    objectives = ("helpfulness", "conciseness")

    def __init__(self, path: Path = PROMPTS):
        self.path = path
        self.rows: dict[str, Example] = {}
        self.splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            example = solve(row["prompt"])
            if example.kind == "unknown":
                raise ValueError(f"{path}: {row['prompt']!r} is not a conversion prompt")
            example = Example(example.prompt, example.kind, example.answer, row["response"])
            self.rows[example.prompt] = example
            self.splits[row["split"]].append(example)

    def examples(self, split: str, n: int) -> list[Example]:
        if len(self.splits[split]) < n:
            raise ValueError(f"{self.path} has {len(self.splits[split])} {split} prompts, fewer than {n}")
        return self.splits[split][:n]

    def example(self, prompt: str) -> Example:
        return self.rows.get(prompt) or solve(prompt)

    def judge(self, example: Example, response: str) -> dict[str, float]:
        if example.kind == "unknown":
            return {"helpfulness": UNJUDGED, "conciseness": UNJUDGED}
        concise = min(1.0, len(example.reference) / len(response)) if response else 0.0
        return {"helpfulness": helpfulness(example, response), "conciseness": concise}

    def teacher(self, example: Example, rng: random.Random) -> tuple[str, str]:
        """The reference, or with probability NOISE[name] that mistake made in it: (response, name)."""
        u, total, mistake = rng.random(), 0.0, "none"
        for name, rate in NOISE.items():
            total += rate
            if u < total:
                mistake = name
                break
        if mistake == "none":
            return example.reference, "none"
        value, unit = Decimal(example.answer), example.reference.split()[-1]
        if mistake == "wrong_factor":  # helpfulness 0
            return f"{number_text(value * rng.choice([Decimal(10), Decimal('0.1')]))} {unit}", mistake
        if mistake == "approximate":  # 5% off: helpfulness 0.5
            return f"{number_text(value * rng.choice([Decimal('0.95'), Decimal('1.05')]))} {unit}", mistake
        amount, src = PROMPT_RE.fullmatch(example.prompt).group(1, 2)  # verbose: right, but long
        return f"{amount} {src} is {example.reference}.", mistake

    def metrics(self, examples: list[Example], responses: list[str]) -> dict[str, float | None]:
        """Beside the gold scores: the share of exact answers."""
        exact = [helpfulness(ex, r) == 1.0 for ex, r in zip(examples, responses, strict=True)]
        return {"exact_rate": sum(exact) / len(exact) if exact else None}


def make(cfg, seed: int) -> UnitConversionTask:
    """The factory `task.factory` names: prompts from task.path when set, else prompts.jsonl here."""
    return UnitConversionTask(Path(cfg.path) if cfg.path else PROMPTS)
