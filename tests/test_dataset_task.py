"""`task.name: dataset`: prompts from JSONL, Parquet or a datasets directory; splits; record checks; judges."""

import json
import re

import pytest

from rlhfops.config import ConfigError, TaskConfig, load_config
from rlhfops.tasks import SPLITS, make_task, split_of, teacher_of
from rlhfops.tasks.dataset import UNJUDGED, DatasetTask, contains_answer

ROWS = [
    {"prompt": f"What is {a} plus {b}?\nAnswer:", "response": f" {a + b}.", "answer": str(a + b)}
    for a in range(10)
    for b in range(10)
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dataset_task(path, **overrides):
    return make_task(TaskConfig(name="dataset", path=str(path), **overrides))


@pytest.fixture
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", ROWS)


def test_jsonl_hash_splits_are_stable_disjoint_and_in_file_order(jsonl):
    task = dataset_task(jsonl)
    assert isinstance(task, DatasetTask) and task.objectives == ("helpfulness", "conciseness")
    sizes = {s: len(task._splits[s]) for s in SPLITS}
    assert sum(sizes.values()) == len(ROWS) and all(sizes.values()), sizes
    seen = {}
    for split in SPLITS:
        examples = task.examples(split, sizes[split])
        for ex in examples:
            assert ex.prompt not in seen, f"{ex.prompt!r} is in {seen[ex.prompt]} and {split}"
            seen[ex.prompt] = split
            assert split_of(ex.prompt, 0.1, 0.1) == split
        file_order = [r["prompt"] for r in ROWS if split_of(r["prompt"], 0.1, 0.1) == split]
        assert [ex.prompt for ex in examples] == file_order
    again = dataset_task(jsonl)
    assert all(again.examples(s, 3) == task.examples(s, 3) for s in SPLITS)
    ex = task.examples("train", 1)[0]
    row = next(r for r in ROWS if r["prompt"] == ex.prompt)
    assert (ex.kind, ex.answer, ex.reference) == ("data", row["answer"], row["response"])
    assert task.example(ex.prompt) == ex


def test_split_fractions_move_prompts_between_splits(jsonl):
    small = dataset_task(jsonl, val_fraction=0.01, test_fraction=0.01)
    large = dataset_task(jsonl, val_fraction=0.3, test_fraction=0.3)
    assert len(large._splits["train"]) < len(small._splits["train"])


def test_explicit_split_column(tmp_path):
    rows = [{**r, "part": ("test", "validation", "train")[i % 3]} for i, r in enumerate(ROWS)]
    task = dataset_task(write_jsonl(tmp_path / "p.jsonl", rows), split_field="part")
    assert [ex.prompt for ex in task.examples("val", 2)] == [ROWS[1]["prompt"], ROWS[4]["prompt"]]
    assert [ex.prompt for ex in task.examples("test", 2)] == [ROWS[0]["prompt"], ROWS[3]["prompt"]]
    assert len(task.examples("train", 33)) == 33


def test_parquet_and_datasets_directories_read_the_same_records(tmp_path, jsonl):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = dataset_task(jsonl).examples("test", 5)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    assert dataset_task(tmp_path / "p.parquet").examples("test", 5) == expected
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert dataset_task(tmp_path / "ds").examples("test", 5) == expected
    # a DatasetDict's split names are the splits
    splits = {"train": ROWS[:80], "validation": ROWS[80:90], "test": ROWS[90:]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(
        str(tmp_path / "dd")
    )
    task = dataset_task(tmp_path / "dd")
    assert [ex.prompt for ex in task.examples("val", 10)] == [r["prompt"] for r in ROWS[80:90]]
    with pytest.raises(ValueError, match=r"holds 10 test prompts, fewer than the 11 asked for"):
        task.examples("test", 11)


def test_renamed_columns_and_prompts_only(tmp_path):
    rows = [{"q": r["prompt"], "gold": r["answer"], "category": "sum"} for r in ROWS]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    task = dataset_task(path, prompt_field="q", answer_field="gold", kind_field="category", objectives=["helpfulness"])
    ex = task.examples("train", 1)[0]
    assert ex.kind == "sum" and ex.reference == "" and ex.answer
    assert teacher_of(task) is None  # no reference responses: no teacher, no SFT data


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not valid JSON"),
        ('["a list"]', "not a JSON object"),
        ('{"response": "x", "answer": "1"}', "'prompt' is None, not a non-empty string"),
        ('{"prompt": "", "response": "x", "answer": "1"}', "'prompt' is '', not a non-empty string"),
        ('{"prompt": "p\\n", "response": 3, "answer": "1"}', "'response' is 3, not a non-empty string"),
        ('{"prompt": "p\\n", "answer": "1"}', "it lacks 'response', which the first record has"),
        ('{"prompt": "p\\n", "response": "x", "answer": "1", "split": "dev"}', "it has 'split', which the first"),
        (json.dumps(ROWS[0]), "its prompt appears in an earlier record"),
    ],
)
def test_a_bad_record_is_one_sentence_with_file_and_line(tmp_path, line, problem):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + line + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ValueError) as info:
        dataset_task(path)
    assert str(info.value).startswith(f"{path}:3: ") and problem in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_split_value_and_a_bad_parquet_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**ROWS[0], "split": "train"}, {**ROWS[1], "split": "dev"}]
    with pytest.raises(ValueError, match=r":2: 'split' is 'dev', not one of train, val, validation, test"):
        dataset_task(write_jsonl(tmp_path / "p.jsonl", rows))
    pq.write_table(pa.Table.from_pylist([ROWS[0], {**ROWS[1], "prompt": ""}]), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p\.parquet: row 2: 'prompt' is ''"):
        dataset_task(tmp_path / "p.parquet")


def test_file_errors(tmp_path, jsonl):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_task(tmp_path / "missing.jsonl")
    (tmp_path / "p.csv").write_text("prompt\n")
    with pytest.raises(ValueError, match="not a .jsonl or .parquet file"):
        dataset_task(tmp_path / "p.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no records"):
        dataset_task(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match=re.escape(f"'{jsonl}' holds") + r" \d+ test prompts, fewer than the 1000"):
        dataset_task(jsonl).examples("test", 1000)


def test_an_objective_the_data_cannot_judge_is_one_error(tmp_path, jsonl):
    with pytest.raises(ValueError, match="'honesty', which the dataset task cannot judge"):
        dataset_task(jsonl, objectives=["helpfulness", "honesty"])
    no_answers = write_jsonl(tmp_path / "q.jsonl", [{"prompt": r["prompt"], "response": r["response"]} for r in ROWS])
    with pytest.raises(ValueError, match="'helpfulness', which is judged from the column 'answer'"):
        dataset_task(no_answers)
    assert dataset_task(no_answers, objectives=["conciseness"]).objectives == ("conciseness",)


def test_judges(jsonl):
    task = dataset_task(jsonl)
    ex = task.example("What is 2 plus 3?\nAnswer:")
    assert ex.answer == "5" and ex.reference == " 5."
    assert task.judge(ex, " 5.") == {"helpfulness": 1.0, "conciseness": 1.0}
    assert task.judge(ex, " The answer is  5, I think.")["helpfulness"] == 1.0
    assert task.judge(ex, " 15.")["helpfulness"] == 0.0  # the answer as a whole number, not a digit of one
    assert task.judge(ex, " 6.")["helpfulness"] == 0.0
    assert task.judge(ex, " 5. " + "x" * 16)["conciseness"] == pytest.approx(3 / 20)
    assert task.judge(ex, "")["conciseness"] == 0.0
    assert teacher_of(task)(ex, None) == (" 5.", "none")
    assert contains_answer("Paris,  FRANCE", "paris, france")


def test_a_prompt_not_in_the_data_is_unknown_and_still_judged(jsonl):
    task = dataset_task(jsonl)
    ex = task.example("A prompt from live traffic\n")
    assert (ex.kind, ex.answer, ex.reference) == ("unknown", "", "")
    assert task.judge(ex, "anything") == {"helpfulness": UNJUDGED, "conciseness": UNJUDGED}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["task.name=dataset"], "task.path is not set"),
        (["task.name=dataset", "task.path=p.jsonl", "task.factory=m:make"], "both choose the task"),
        (["task.factory=no_colon"], "must look like 'package.module:callable'"),
        (["task.factory='m:'"], "must look like"),
        (["task.objectives=[]"], "at least one objective"),
    ],
)
def test_task_config_errors(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)
