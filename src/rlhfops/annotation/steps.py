"""Step labels for process supervision, in TRL's stepwise format.

One record per response, JSONL on disk:

    {"prompt": "q: 2+3*4?\\n",
     "completions": ["3*4=12", "2+12=15", "answer: 15"],
     "labels": [true, false, false]}

`completions` are the response's lines in order (every step line, malformed line and the
`answer: ...` line; the built-in task separates steps with "\\n", so no completion holds one) and
`labels[i]` says whether line i is good. A label source is a plain function
`(example, response) -> record | None`; `exact_step_labels` is the one that uses the task's exact
verifier.

Every prompt kind is kept: only `solve` prompts carry step lines, while `undefined` and `unsafe`
responses are usually a single answer line (`answer: undefined`, `answer: refuse`) whose label
says whether that answer is right. So the PRM also learns to score refusals and honesty, and
its solution score is defined for every prompt.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlhfops.config import GenerationConfig
from rlhfops.files import read_jsonl, write_jsonl
from rlhfops.generation import sample_texts
from rlhfops.modeling import load_policy
from rlhfops.tasks import Example, Task
from rlhfops.tasks.arithmetic import parse_response, verify

STEP_SEPARATOR = "\n"


def exact_step_labels(example: Example, response: str) -> dict[str, Any] | None:
    """The stepwise record of `response` labelled by the exact verifier; None for an empty response.

    A step line is good when its arithmetic is right and its operands come from the prompt or
    earlier steps; a malformed line (or anything after the answer line) is bad; the answer line
    is good when the answer is correct.
    """
    if not response:
        return None
    verdict = verify(example, response)
    kinds = parse_response(response).kinds  # `step` | `answer` | `malformed`, one per line
    step_valid = iter(verdict.step_valid)  # one entry per step or malformed line, in order
    labels = [verdict.answer_correct if kind == "answer" else next(step_valid) for kind in kinds]
    return {"prompt": example.prompt, "completions": response.split(STEP_SEPARATOR), "labels": labels}


def build_step_data(
    task: Task,
    policy_dir: str | Path | None,
    split: str,
    n_prompts: int,
    seed: int,
    samples_per_prompt: int = 2,
    generation: GenerationConfig | None = None,
) -> list[dict[str, Any]]:
    """Exactly labelled stepwise records for the first `n_prompts` prompts of `split`.

    Per prompt: `samples_per_prompt` noisy-teacher responses (`random.Random(seed)`), of which
    each distinct one is kept once so the clean reference does not crowd out the corrupted ones,
    plus, when `policy_dir` is given, `samples_per_prompt` samples from that policy (decoded with
    `generation`, default `GenerationConfig()`, and a `torch.Generator` seeded with `seed`).
    Empty responses give no record. Records come prompt by prompt, teacher before policy.
    """
    examples = task.examples(split, n_prompts)
    rng = random.Random(seed)
    responses: list[list[str]] = []
    for example in examples:
        drawn = [task.teacher(example, rng)[0] for _ in range(samples_per_prompt)]
        responses.append(list(dict.fromkeys(drawn)))

    if policy_dir is not None:
        generation = generation or GenerationConfig()
        tokenizer, model = load_policy(policy_dir)
        prompts = [ex.prompt for ex in examples for _ in range(samples_per_prompt)]
        samples = sample_texts(model, tokenizer, prompts, generation, seed)
        for i in range(len(examples)):
            responses[i] += samples[i * samples_per_prompt : (i + 1) * samples_per_prompt]

    records = []
    for example, texts in zip(examples, responses, strict=True):
        for text in texts:
            record = exact_step_labels(example, text)
            if record is not None:
                records.append(record)
    return records


def check_step_record(record: Any) -> str | None:
    """What is wrong with a stepwise record, as a phrase, or None when it is well formed."""
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    missing = [k for k in ("prompt", "completions", "labels") if k not in record]
    if missing:
        return f"the record has no {', '.join(repr(k) for k in missing)} field"
    prompt, completions, labels = record["prompt"], record["completions"], record["labels"]
    if not isinstance(prompt, str):
        return "'prompt' must be a string"
    if not isinstance(completions, list) or not completions or not all(isinstance(c, str) for c in completions):
        return "'completions' must be a non-empty list of strings"
    if any(STEP_SEPARATOR in c for c in completions):
        return "a completion holds a newline, but each completion must be exactly one step line"
    if not isinstance(labels, list) or not all(isinstance(label, bool) for label in labels):
        return "'labels' must be a list of true/false values"
    if len(labels) != len(completions):
        return f"'labels' has {len(labels)} entries but 'completions' has {len(completions)}"
    return None


def write_step_data(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Validate the records and write them as JSONL, atomically."""
    for i, record in enumerate(records):
        problem = check_step_record(record)
        if problem:
            raise ValueError(f"step record {i} cannot be written to '{path}': {problem}")
    return write_jsonl(path, records)


def read_step_data(path: str | Path) -> list[dict[str, Any]]:
    """Read a stepwise JSONL file; a bad record raises ValueError naming the file and line."""
    return read_jsonl(path, check_step_record)
