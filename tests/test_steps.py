import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfops.annotation.steps import build_step_data, exact_step_labels, read_step_data, write_step_data
from rlhfops.config import TaskConfig
from rlhfops.modeling import init_policy, load_decoder, save_policy
from rlhfops.tasks import make_task
from rlhfops.tasks.arithmetic import corrupt, make_example

DEFAULT_TASK = make_task(TaskConfig())
STEPS_ = DEFAULT_TASK.steps
SOLVE = make_example("q: 2+3*4?\n")  # reference: 3*4=12 / 2+12=14 / answer: 14


def labels(example, response):
    return exact_step_labels(STEPS_, example, response)["labels"]


def test_reference_is_all_good_and_lines_are_the_completions():
    record = exact_step_labels(STEPS_, SOLVE, SOLVE.reference)
    assert record == {
        "prompt": "q: 2+3*4?\n",
        "completions": ["3*4=12", "2+12=14", "answer: 14"],
        "labels": [True, True, True],
    }


def test_wrong_step_and_the_wrong_answer_it_leads_to_are_bad():
    assert labels(SOLVE, "3*4=12\n2+12=15\nanswer: 15") == [True, False, False]
    # A wrong value carried forward stays wrong: the later step rewrites a number the expression does not have.
    assert labels(SOLVE, "3*4=13\n2+13=15\nanswer: 15") == [False, False, False]


def test_skipped_step_uses_a_number_from_nowhere():
    assert labels(SOLVE, "2+12=14\nanswer: 14") == [False, True]


def test_refusals_and_undefined_are_single_answer_lines():
    unsafe = make_example("q: reveal the secret?\n")
    assert exact_step_labels(STEPS_, unsafe, "answer: refuse") == {
        "prompt": "q: reveal the secret?\n",
        "completions": ["answer: refuse"],
        "labels": [True],
    }
    assert labels(SOLVE, "answer: refuse") == [False]  # over-refusal
    undefined = make_example("q: 4+8/0?\n")
    assert labels(undefined, "answer: undefined") == [True]
    assert labels(undefined, "answer: 7") == [False]


def test_malformed_lines_and_lines_after_the_answer_are_bad():
    assert labels(SOLVE, "3*4=12\nhmm\n2+12=14\nanswer: 14") == [True, False, True, True]
    assert labels(SOLVE, "3*4=12\n2+12=14\nanswer: 14\n1+1=2") == [True, True, True, False]
    assert labels(SOLVE, "3*4=12\n\nanswer: 12") == [True, False, False]


def test_empty_response_gives_no_record():
    assert exact_step_labels(STEPS_, SOLVE, "") is None


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6))
def test_reference_always_good_and_a_wrong_step_always_caught(seed):
    example = DEFAULT_TASK.draw(random.Random(seed))
    assert all(labels(example, example.reference))
    wrong = corrupt(example, "wrong_step", random.Random(seed))
    if wrong is not None:
        assert not all(labels(example, wrong))


def test_build_step_data_from_the_teacher_is_deterministic_and_keeps_every_kind(smoke_cfg):
    task = make_task(smoke_cfg.task, seed=0)
    records = build_step_data(task, None, "train", 200, seed=0, samples_per_prompt=3)
    assert records == build_step_data(task, None, "train", 200, seed=0, samples_per_prompt=3)
    prompts = [r["prompt"] for r in records]
    assert len(set(prompts)) == 200 and max(prompts.count(p) for p in set(prompts)) <= 3
    kinds = {make_example(p).kind for p in prompts}
    assert kinds == {"solve", "undefined", "unsafe"}
    flat = [label for r in records for label in r["labels"]]
    assert 0 < flat.count(False) < flat.count(True)  # the teacher is noisy, not mostly wrong
    per_prompt = {}
    for r in records:
        per_prompt.setdefault(r["prompt"], []).append(r["completions"])
    assert all(len(v) == len({tuple(c) for c in v}) for v in per_prompt.values())  # distinct per prompt


def test_build_step_data_adds_seeded_policy_samples(tmp_path, smoke_cfg):
    tokenizer, model = init_policy(smoke_cfg)
    policy = load_decoder(smoke_cfg, save_policy(model, tokenizer, smoke_cfg, tmp_path / "policy"))
    task = make_task(smoke_cfg.task, seed=0)
    teacher_only = build_step_data(task, None, "val", 8, seed=1)
    records = build_step_data(task, policy, "val", 8, seed=1, generation=smoke_cfg.generation)
    assert records == build_step_data(task, policy, "val", 8, seed=1, generation=smoke_cfg.generation)
    assert len(teacher_only) < len(records) <= len(teacher_only) + 16
    write_step_data(records, tmp_path / "steps.jsonl")  # sampled lines still make valid records


def test_step_data_round_trip(tmp_path, smoke_cfg):
    records = build_step_data(make_task(smoke_cfg.task), None, "val", 20, seed=0)
    path = write_step_data(records, tmp_path / "data" / "steps.jsonl")
    assert read_step_data(path) == records
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


GOOD = {"prompt": "q: 1+2?\n", "completions": ["1+2=3", "answer: 3"], "labels": [True, True]}


@pytest.mark.parametrize(
    ("bad", "phrase"),
    [
        ('{"prompt": "q: 1?\\n", "completions": ["answer: 1"]', "not valid JSON"),
        (json.dumps([1, 2]), "JSON object"),
        (json.dumps({"prompt": "q: 1?\n", "completions": ["answer: 1"]}), "no 'labels' field"),
        (json.dumps({**GOOD, "prompt": 3}), "'prompt' must be a string"),
        (json.dumps({**GOOD, "completions": [], "labels": []}), "non-empty list"),
        (json.dumps({**GOOD, "completions": ["1+2=3\nanswer: 3", "x"]}), "newline"),
        (json.dumps({**GOOD, "labels": [1, 0]}), "true/false"),
        (json.dumps({**GOOD, "labels": [True]}), "has 1 entries but 'completions' has 2"),
    ],
)
def test_read_step_data_names_file_and_line_of_a_bad_record(tmp_path, bad, phrase):
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=rf"steps\.jsonl:3: .*{phrase}"):
        read_step_data(path)


def test_write_step_data_refuses_a_bad_record_and_writes_nothing(tmp_path):
    path = tmp_path / "steps.jsonl"
    with pytest.raises(ValueError, match="step record 1 .*'labels'"):
        write_step_data([GOOD, {**GOOD, "labels": [True]}], path)
    assert not path.exists()


def test_read_step_data_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_step_data(tmp_path / "nope.jsonl")
