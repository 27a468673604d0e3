"""`task.name: dataset`: your prompts, and optionally their reference responses, answers, kinds and
splits, from a file (`task.path`), judged by programmatic checks.

The file is a JSONL file (`.jsonl`), a Parquet file (`.parquet`) or a `datasets.save_to_disk`
directory (a DatasetDict's split names are the splits; `validation` counts as `val`). One record
per prompt, for example

    {"prompt": "Convert 3.5 km to m.\\n", "response": "3500 m", "answer": "3500", "split": "test"}

    prompt    the prompt text, or a conversation: a list of {"role", "content"} messages (system,
              user, earlier turns). A model whose tokenizer has a chat template reads it through the
              template (`rlhfops.chat`); a base model reads the text as is, so end it where the
              response should begin (a newline, "Answer:", ...)
    response  a reference response: SFT data, and what the teacher answers; optional
    answer    what a helpful response contains; optional
    kind      a category that evaluation reports per kind; optional ("data")
    split     train | val | test (or validation); optional: without it a prompt's split is a hash of
              its text (task.val_fraction, task.test_fraction), so splits never share a prompt

The column names are task.prompt_field, task.response_field, task.answer_field, task.kind_field and
task.split_field. The first record decides which optional columns there are and every record has
the same ones (a null counts as absent); a prompt appears once. Every record is checked on read: a
bad one is one error naming the file and the line (the row, for Parquet and datasets).

Judges, one per objective in task.objectives:

    helpfulness   1 when the response contains the answer as a whole word or number (case and runs of
                  whitespace ignored), else 0; needs the answer column
    conciseness   min(1, len(reference) / len(response)); needs the response column

A prompt that is not in the file (live traffic) stands for an Example of kind `unknown` with no
answer or reference; it scores UNJUDGED on every objective.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfops.chat import prompt_of
from rlhfops.files import read_jsonl
from rlhfops.tasks import SPLITS, Example, split_of

if TYPE_CHECKING:
    from rlhfops.config import TaskConfig

NEEDS = {"helpfulness": "answer", "conciseness": "response"}  # objective -> the column it is judged from
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
DEFAULT_KIND = "data"  # the kind of a record without a kind column
UNKNOWN_KIND = "unknown"  # a prompt the file does not hold
UNJUDGED = 0.5  # the score of an objective the example cannot be judged on: neither good nor bad


def normalise(text: str) -> str:
    """Lower case, runs of whitespace as one space, no space at the ends."""
    return " ".join(text.lower().split())


def contains_answer(response: str, answer: str) -> bool:
    """Whether `answer` appears in `response` as a whole (not inside a longer word or number).

    >>> contains_answer("It is 3500  M.", "3500 m"), contains_answer("13500 m", "3500 m")
    (True, False)
    """
    return re.search(rf"(?<!\w){re.escape(normalise(answer))}(?!\w)", normalise(response)) is not None


class RecordCheck:
    """Checks records one at a time in file order (a `read_jsonl` check): the prompt is a non-empty
    string or list of chat messages (rewritten in place to its prompt string, `chat.prompt_of`) and
    appears once, the optional columns are those of the first record, each value has its type.
    `columns` holds the optional columns found (`response`, `answer`, `kind`, `split`)."""

    def __init__(self, cfg: TaskConfig):
        self.prompt_field = cfg.prompt_field
        self.fields = {
            "response": cfg.response_field,
            "answer": cfg.answer_field,
            "kind": cfg.kind_field,
            "split": cfg.split_field,
        }
        self.columns: set[str] | None = None
        self.prompts: set[str] = set()

    def __call__(self, record: dict[str, Any]) -> str | None:
        prompt = record.get(self.prompt_field)
        if isinstance(prompt, list):
            try:
                prompt = record[self.prompt_field] = prompt_of(prompt)
            except ValueError as e:
                return f"'{self.prompt_field}' is a list but not chat messages: {e}"
        if not isinstance(prompt, str) or not prompt:
            return (
                f"'{self.prompt_field}' is {prompt!r}, not a non-empty string or list of chat messages "
                "(task.prompt_field)"
            )
        present = {role for role, field in self.fields.items() if record.get(field) is not None}
        if self.columns is None:
            self.columns = present
        if present != self.columns:
            role = sorted(present ^ self.columns)[0]
            field = self.fields[role]
            if role in present:
                return f"it has '{field}', which the first record does not: every record has the same columns"
            return f"it lacks '{field}', which the first record has: every record has the same columns"
        for role in present:
            value = record[self.fields[role]]
            if role == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
                continue  # a numeric answer is read as its text
            if not isinstance(value, str) or not value.strip():
                return f"'{self.fields[role]}' is {value!r}, not a non-empty string"
            if role == "split" and value not in SPLIT_NAMES:
                return f"'{self.fields[role]}' is {value!r}, not one of {', '.join(SPLIT_NAMES)}"
        if prompt in self.prompts:
            return "its prompt appears in an earlier record; each prompt appears once"
        self.prompts.add(prompt)
        return None


def _check_rows(rows: list[dict[str, Any]], check: RecordCheck, where: str) -> list[dict[str, Any]]:
    for i, row in enumerate(rows, start=1):
        problem = check(row)
        if problem:
            raise ValueError(f"{where}: row {i}: {problem}")
    return rows


def read_records(path: Path, check: RecordCheck, split_field: str) -> list[dict[str, Any]]:
    """The records of a JSONL file, a Parquet file or a `datasets.save_to_disk` directory, in file
    order, each passed through `check` (a DatasetDict's split name is written into `split_field`)."""
    if not path.exists():
        raise FileNotFoundError(f"task.path '{path}' does not exist")
    if path.is_dir():
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except Exception as e:  # datasets raises several kinds for a directory it did not write
            raise ValueError(f"task.path '{path}' is not a datasets.save_to_disk directory ({e})") from None
        if isinstance(data, datasets.Dataset):
            return _check_rows(data.to_list(), check, str(path))
        for name in data:
            if name not in SPLIT_NAMES:
                raise ValueError(f"task.path '{path}' has the split '{name}', not one of {', '.join(SPLIT_NAMES)}")
        return [
            row
            for name, split in data.items()
            for row in _check_rows([{**r, split_field: name} for r in split.to_list()], check, f"{path} [{name}]")
        ]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's ArrowInvalid and OSError for a file it cannot read
            raise ValueError(f"task.path '{path}' is not a readable Parquet file ({e})") from None
        return _check_rows(rows, check, str(path))
    if path.suffix == ".jsonl":
        return read_jsonl(path, check)
    raise ValueError(f"task.path '{path}' is not a .jsonl or .parquet file or a datasets directory")


class DatasetTask:
    """Prompts from a file, judged by its answers and references; see the module docstring."""

    name = "dataset"

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.path = Path(cfg.path)
        check = RecordCheck(cfg)
        records = read_records(self.path, check, cfg.split_field)
        if not records:
            raise ValueError(f"task.path '{self.path}' holds no records")
        self.columns = check.columns
        self.objectives = tuple(cfg.objectives)
        for objective in self.objectives:
            if objective not in NEEDS:
                raise ValueError(
                    f"task.objectives has '{objective}', which the dataset task cannot judge "
                    f"(it judges {' and '.join(NEEDS)}); use task.factory for a task with its own judges"
                )
            if NEEDS[objective] not in self.columns:
                field = getattr(cfg, f"{NEEDS[objective]}_field")
                raise ValueError(
                    f"task.objectives has '{objective}', which is judged from the column '{field}' "
                    f"that task.path '{self.path}' does not have"
                )
        self._by_prompt: dict[str, Example] = {}
        self._splits: dict[str, list[Example]] = {split: [] for split in SPLITS}
        for r in records:
            prompt = r[cfg.prompt_field]
            example = Example(
                prompt=prompt,
                kind=r.get(cfg.kind_field) or DEFAULT_KIND,
                answer=str(r.get(cfg.answer_field) or ""),
                reference=r.get(cfg.response_field) or "",
            )
            if "split" in self.columns:
                split = SPLIT_NAMES[r[cfg.split_field]]
            else:
                split = split_of(prompt, cfg.val_fraction, cfg.test_fraction)
            self._by_prompt[prompt] = example
            self._splits[split].append(example)

    def examples(self, split: str, n: int) -> list[Example]:
        """The first n examples of `split` in file order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        found = self._splits[split]
        if len(found) < n:
            raise ValueError(
                f"task.path '{self.path}' holds {len(found)} {split} prompts, fewer than the {n} asked for; "
                "add prompts or ask for fewer"
            )
        return found[:n]

    def example(self, prompt: str) -> Example:
        """The record of `prompt`, or an `unknown` Example without answer or reference."""
        return self._by_prompt.get(prompt) or Example(prompt, UNKNOWN_KIND, "", "")

    def judge(self, example: Example, response: str) -> dict[str, float]:
        """Helpfulness and / or conciseness in [0, 1]; UNJUDGED where the example lacks what they need."""
        scores = {}
        for objective in self.objectives:
            if objective == "helpfulness":
                scores[objective] = float(contains_answer(response, example.answer)) if example.answer else UNJUDGED
            elif not example.reference:
                scores[objective] = UNJUDGED
            else:
                scores[objective] = min(1.0, len(example.reference) / len(response)) if response else 0.0
        return scores

    @property
    def teacher(self):
        """`teacher(example, rng) -> (reference, "none")`; None when the file has no response column."""
        return self._reference if "response" in self.columns else None

    def _reference(self, example: Example, rng: random.Random) -> tuple[str, str]:
        return example.reference, "none"
