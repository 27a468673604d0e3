"""Step labels for process supervision, in TRL's stepwise format.

One record per response, JSONL on disk:

    {"prompt": "q: 2+3*4?\\n",
     "completions": ["3*4=12", "2+12=15", "answer: 15"],
     "labels": [true, false, false]}

`completions` are the response's lines in order (every step line, malformed line and the
`answer: ...` line; the built-in task separates steps with "\\n", so no completion holds one) and
`labels[i]` says whether line i is good; `null` masks a line (no label: the PRM skips it).
Monte-Carlo records also carry `soft_labels` (a float per line). Three label sources:

- `exact_step_labels`: the task's exact verifier (its `steps`, a `tasks.StepStructure`);
- `sparse_step_labels`: exact labels on every k-th line and the answer line, the rest masked;
- `mc_step_labels` (Math-Shepherd): from each step prefix, M completions by the policy; hard label
  = some completion reaches the right answer, soft label = the fraction that do.

`label_agreement` measures how far sparse or Monte-Carlo labels agree with exact ones.

Every prompt kind is kept: only `solve` prompts carry step lines, while `undefined` and `unsafe`
responses are usually a single answer line (`answer: undefined`, `answer: refuse`) whose label
says whether that answer is right. So the PRM also learns to score refusals and honesty, and
its solution score is defined for every prompt.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlhfops.chat import render
from rlhfops.config import GenerationConfig
from rlhfops.files import read_jsonl, write_jsonl
from rlhfops.generation import sample_texts
from rlhfops.modeling import Decoder
from rlhfops.tasks import STEP_SEPARATOR, Example, StepStructure, Task, steps_of, teacher_of


def exact_step_labels(steps: StepStructure, example: Example, response: str) -> dict[str, Any] | None:
    """The stepwise record of `response` labelled by the exact verifier; None for an empty response.

    A step line is good when it is a valid rewrite of the expression (the task's step rule: right
    arithmetic on a pair the expression lets be evaluated first); a malformed line (or anything
    after the answer line) is bad; the answer line is good when the answer is correct.
    """
    if not response:
        return None
    labels = steps.line_labels(example, response)
    return {"prompt": example.prompt, "completions": response.split(STEP_SEPARATOR), "labels": labels}


def sparse_step_labels(steps: StepStructure, example: Example, response: str, every: int) -> dict[str, Any] | None:
    """Exact labels on lines every, 2*every, ... (1-based) and on the last line; the others masked (None)."""
    record = exact_step_labels(steps, example, response)
    if record is None:
        return None
    n = len(record["labels"])
    record["labels"] = [
        label if (i + 1) % every == 0 or i == n - 1 else None for i, label in enumerate(record["labels"])
    ]
    return record


def mc_step_labels(
    steps: StepStructure,
    examples: list[Example],
    responses: list[str],
    model,
    tokenizer,
    generation: GenerationConfig,
    rollouts: int,
    seed: int,
    logits_hook=None,
) -> list[dict[str, Any] | None]:
    """Math-Shepherd labels: per response, per line i, `rollouts` completions of the prefix
    `render(prompt) + lines[0..i] + "\\n"` sampled from the policy (one batch for every prefix); a line's
    soft label is the fraction of `lines[0..i] + completion` whose final answer is right, its hard
    label whether any is. From the first `answer:` line on, the answer is already given, so the
    label is that answer's correctness (no rollouts). None for an empty response."""
    jobs: list[tuple[int, int]] = []  # (response index, line index) that need rollouts
    lines_of = [r.split(STEP_SEPARATOR) if r else [] for r in responses]
    answer_at = []
    for r, lines in enumerate(lines_of):
        first_answer = steps.answer_line(responses[r])
        answer_at.append(first_answer)
        jobs += [(r, i) for i in range(min(first_answer, len(lines)))]
    prefixes = [STEP_SEPARATOR.join(lines_of[r][: i + 1]) + STEP_SEPARATOR for r, i in jobs]
    # continuations of a response: the prompt as the policy reads it (`chat.render`) + the prefix, raw
    prompts = [render(tokenizer, examples[r].prompt) + prefix for (r, _), prefix in zip(jobs, prefixes, strict=True)]
    flat = [p for p in prompts for _ in range(rollouts)]
    completions = (
        sample_texts(model, tokenizer, flat, generation, seed, logits_hook=logits_hook, template=False) if flat else []
    )
    soft: dict[tuple[int, int], float] = {}
    for j, ((r, i), prefix) in enumerate(zip(jobs, prefixes, strict=True)):
        outs = completions[j * rollouts : (j + 1) * rollouts]
        soft[(r, i)] = sum(steps.answer_correct(examples[r], prefix + c) for c in outs) / rollouts
    records: list[dict[str, Any] | None] = []
    for r, (example, lines) in enumerate(zip(examples, lines_of, strict=True)):
        if not lines:
            records.append(None)
            continue
        final = float(steps.answer_correct(example, responses[r]))
        row = [soft[(r, i)] if i < answer_at[r] else final for i in range(len(lines))]
        records.append(
            {"prompt": example.prompt, "completions": lines, "labels": [x > 0 for x in row], "soft_labels": row}
        )
    return records


def label_agreement(exact: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """How `other` labels (sparse or Monte-Carlo) agree with `exact` ones on the same records.

    coverage: share of lines `other` labels; agreement: share of labelled lines where both say
    the same; on_bad / on_good: the same over the lines exact labels call bad / good;
    imputed_agreement: masked lines take the next labelled line's label (the answer line is
    always labelled), so sparse labels are compared on every line.
    """
    same, on_bad, on_good, imputed = [], [], [], []
    lines = 0
    for e, o in zip(exact, other, strict=True):
        if e["completions"] != o["completions"]:
            raise ValueError(f"label_agreement needs the same responses, got {e['completions']} vs {o['completions']}")
        lines += len(e["labels"])
        following = None
        filled = []
        for label in reversed(o["labels"]):
            following = label if label is not None else following
            filled.append(following)
        for gold, label, fill in zip(e["labels"], o["labels"], reversed(filled), strict=True):
            if fill is not None:
                imputed.append(fill == gold)
            if label is None:
                continue
            same.append(label == gold)
            (on_good if gold else on_bad).append(label == gold)

    def share(xs: list[bool]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "lines": lines,
        "coverage": len(same) / lines if lines else None,
        "agreement": share(same),
        "agreement_on_bad": share(on_bad),
        "agreement_on_good": share(on_good),
        "imputed_agreement": share(imputed),
    }


def build_step_data(
    task: Task,
    policy: Decoder | None,
    split: str,
    n_prompts: int,
    seed: int,
    samples_per_prompt: int = 2,
    generation: GenerationConfig | None = None,
) -> list[dict[str, Any]]:
    """Exactly labelled stepwise records for the first `n_prompts` prompts of `split`.

    Per prompt: `samples_per_prompt` noisy-teacher responses (`random.Random(seed)`), of which
    each distinct one is kept once so the clean reference does not crowd out the corrupted ones,
    plus, when `policy` (a `modeling.Decoder`) is given, `samples_per_prompt` samples from it (decoded with
    `generation`, default `GenerationConfig()`, and a `torch.Generator` seeded with `seed`).
    Empty responses give no record. Records come prompt by prompt, teacher before policy.
    """
    steps, teacher = steps_of(task), teacher_of(task)
    if steps is None or teacher is None:
        missing = " and ".join(n for n, x in (("step structure", steps), ("teacher", teacher)) if x is None)
        raise ValueError(f"task '{task.name}' has no {missing}: exactly labelled step data cannot be built for it")
    examples = task.examples(split, n_prompts)
    rng = random.Random(seed)
    responses: list[list[str]] = []
    for example in examples:
        drawn = [teacher(example, rng)[0] for _ in range(samples_per_prompt)]
        responses.append(list(dict.fromkeys(drawn)))

    if policy is not None:
        generation = generation or GenerationConfig()
        tokenizer, model, hook = policy
        prompts = [ex.prompt for ex in examples for _ in range(samples_per_prompt)]
        samples = sample_texts(model, tokenizer, prompts, generation, seed, logits_hook=hook)
        for i in range(len(examples)):
            responses[i] += samples[i * samples_per_prompt : (i + 1) * samples_per_prompt]

    records = []
    for example, texts in zip(examples, responses, strict=True):
        for text in texts:
            record = exact_step_labels(steps, example, text)
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
    if not isinstance(labels, list) or not all(label is None or isinstance(label, bool) for label in labels):
        return "'labels' must be a list of true/false (or null, masked) values"
    if len(labels) != len(completions):
        return f"'labels' has {len(labels)} entries but 'completions' has {len(completions)}"
    if all(label is None for label in labels):
        return "every label is masked (null), so the record teaches nothing"
    soft = record.get("soft_labels")
    if soft is not None and (
        not isinstance(soft, list)
        or len(soft) != len(completions)
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1 for x in soft)
    ):
        return "'soft_labels' must be a list of numbers in [0, 1], one per completion"
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
