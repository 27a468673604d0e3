"""`task.factory`: a user-written task loaded by import path or file path and checked for the shape of
`Task`; the example task in examples/unit_conversion."""

import json
import random
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from rlhfops.config import TaskConfig, load_config
from rlhfops.tasks import Example, TaskError, make_task, teacher_of
from rlhfops.tasks import plugin as plugin_module
from rlhfops.tasks.plugin import load_factory

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "unit_conversion"


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # a module-form factory may add the working directory


@pytest.fixture
def example_task(monkeypatch):
    monkeypatch.chdir(ROOT)
    return make_task(TaskConfig(factory="examples.unit_conversion.task:make"))


def write_factory(directory: Path, body: str) -> str:
    """A module with `body` under a fresh name in `directory`; returns the name."""
    name = f"user_task_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return name


GOOD = """
    from rlhfops.tasks import Example

    class Echo:
        name = "echo"
        objectives = ("helpfulness",)

        def examples(self, split, n):
            return [Example(f"say {split} {i}\\n", "echo", str(i), str(i)) for i in range(n)]

        def example(self, prompt):
            return Example(prompt, "echo", prompt.split()[-1], prompt.split()[-1])

        def judge(self, example, response):
            return {"helpfulness": float(response == example.answer)}

    def make(cfg, seed):
        return Echo()
"""


def test_module_and_file_forms_load_the_example_task(example_task, tmp_path, monkeypatch):
    assert type(example_task).__name__ == "UnitConversionTask" and example_task.name == "unit_conversion"
    assert len(example_task.examples("train", 240)) == 240
    monkeypatch.chdir(tmp_path)  # the file form works from anywhere
    by_file = make_task(TaskConfig(factory=f"{EXAMPLE / 'task.py'}:make"))
    assert by_file.examples("test", 30) == example_task.examples("test", 30)


def test_the_module_form_imports_from_the_working_directory(tmp_path, monkeypatch):
    name = write_factory(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    task = make_task(TaskConfig(factory=f"{name}:make"), seed=3)
    assert task.judge(task.examples("val", 1)[0], "0") == {"helpfulness": 1.0}
    assert make_task(TaskConfig(factory=f"{name}.py:make")).name == "echo"  # relative file path


def test_the_example_config_uses_the_example_task(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(EXAMPLE / "config.yaml")
    task = make_task(cfg.task, cfg.seed)
    assert task.name == "unit_conversion"
    assert [len(task.examples(s, n)) for s, n in [("train", cfg.task.n_train), ("test", cfg.task.n_test)]] == [240, 30]
    assert set(cfg.reward.objectives) == set(task.objectives)


def test_the_example_judges_a_right_answer_1_and_a_wrong_one_lower(example_task):
    ex = example_task.example("Convert 3.5 km to m.\n")
    assert (ex.kind, ex.answer, ex.reference) == ("length", "3500", "3500 m")
    assert example_task.judge(ex, "3500 m") == {"helpfulness": 1.0, "conciseness": 1.0}
    assert example_task.judge(ex, "3,500 m")["helpfulness"] == 1.0
    near, far = example_task.judge(ex, "3600 m")["helpfulness"], example_task.judge(ex, "35 m")["helpfulness"]
    assert 0 < near < 1 and far == 0.0
    assert example_task.judge(ex, "no number")["helpfulness"] == 0.0
    assert example_task.judge(ex, "3.5 km is 3500 m.")["conciseness"] < 1.0
    odd = example_task.example("Convert 1 s to h.\n")  # not in the file: still solved, 4 significant figures
    assert odd.answer == "0.0002778" and example_task.judge(odd, "0.000278 h")["helpfulness"] > 0.9
    unknown = example_task.example("What is the weather?\n")
    assert unknown.kind == "unknown" and set(example_task.judge(unknown, "sunny")) == set(example_task.objectives)


def test_the_real_model_config_grades_evaluation_with_the_example_judge(monkeypatch):
    """real_model.yaml: the real model as policy and member init (~ expanded), and an evaluation judge
    that differs from annotation's: the number must come with the unit asked for."""
    from rlhfops.annotation.judges import annotation_judges, eval_judges

    monkeypatch.chdir(ROOT)
    cfg = load_config(EXAMPLE / "real_model.yaml")
    home = str(Path.home())
    assert cfg.model.name_or_path.startswith(home) and cfg.reward.member_init == [cfg.model.name_or_path]
    task = make_task(cfg.task, cfg.seed)
    prompts = ["Convert 3.5 km to m.\n"] * 5 + ["What is the weather?\n"]
    responses = ["3500 m", "3500", "3,500 metres.", "3500 km", "It is 3400 m", "sunny"]
    graded = [s["helpfulness"] for s in eval_judges(cfg, task)(prompts, responses)]
    assert graded[:4] == [1.0, 0.0, 1.0, 0.0] and 0 < graded[4] < 1 and graded[5] is None
    labelled = [s["helpfulness"] for s in annotation_judges(cfg, task)(prompts[:2], responses[:2])]
    assert labelled[1] == 1.0  # annotation's checker reads the number alone


def test_the_example_teacher_makes_the_mistakes_its_judges_see(example_task):
    teacher = teacher_of(example_task)
    ex = example_task.example("Convert 3.5 km to m.\n")
    seen = {}
    rng = random.Random(0)
    for _ in range(400):
        response, mistake = teacher(ex, rng)
        seen[mistake] = example_task.judge(ex, response)
    assert set(seen) == {"none", "wrong_factor", "approximate", "verbose"}
    assert seen["none"] == {"helpfulness": 1.0, "conciseness": 1.0}
    assert seen["wrong_factor"]["helpfulness"] == 0.0
    assert seen["approximate"]["helpfulness"] == pytest.approx(0.5)
    assert seen["verbose"]["helpfulness"] == 1.0 and seen["verbose"]["conciseness"] < 1.0


def test_the_example_prompts_file_holds_what_its_task_computes():
    solve = sys.modules[load_factory(f"{EXAMPLE / 'task.py'}:make").__module__].solve
    rows = [json.loads(line) for line in (EXAMPLE / "prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and len({r["prompt"] for r in rows}) == 300
    assert all(r["prompt"].endswith(".\n") and r["response"] == solve(r["prompt"]).reference for r in rows)


def test_the_docstring_minimal_task_loads(tmp_path):
    doc = plugin_module.__doc__
    code = doc.split("A minimal task, `capitals.py:make`:\n")[1].split("\nexamples/unit_conversion")[0]
    (tmp_path / "capitals.py").write_text(textwrap.dedent(code))
    task = make_task(TaskConfig(factory=f"{tmp_path / 'capitals.py'}:make", val_fraction=0.01, test_fraction=0.01))
    ex = task.examples("train", 3)[0]
    assert task.judge(ex, f" {ex.answer}") == {"helpfulness": 1.0}


# ---- one clear sentence per broken factory ---------------------------------------------------------


def factory_error(spec: str) -> str:
    with pytest.raises(TaskError) as info:
        make_task(TaskConfig(factory=spec))
    message = str(info.value)
    assert f"task.factory '{spec}'" in message and "\n" not in message, message
    return message


def test_a_factory_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "No module named 'no_such_module_xyz'" in factory_error("no_such_module_xyz:make")
    assert "names the file" in factory_error(f"{tmp_path / 'missing.py'}:make")
    name = write_factory(tmp_path, GOOD)
    assert f"'{name}' has no 'build'" in factory_error(f"{name}:build")
    assert "raised TypeError" in factory_error(f"{name}:Example")  # a class is callable, but not with (cfg, seed)
    broken = write_factory(tmp_path, "import no_such_dependency_xyz\n")
    assert "No module named 'no_such_dependency_xyz'" in factory_error(f"{broken}:make")
    syntax = write_factory(tmp_path, "def make(cfg, seed:\n    pass\n")
    assert "SyntaxError" in factory_error(f"{syntax}.py:make")
    not_callable = write_factory(tmp_path, "make = 3\n")
    assert "'make' is a int, not a callable" in factory_error(f"{not_callable}:make")


def test_a_factory_that_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = write_factory(tmp_path, "def make(cfg, seed):\n    raise RuntimeError('no GPU\\nhere')\n")
    assert factory_error(f"{name}:make") == f"task.factory '{name}:make' raised RuntimeError: no GPU here"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("return Echo()", "return 42"), "returned a int without name, objectives, examples, example, judge"),
        (('objectives = ("helpfulness",)', "objectives = 'helpfulness'"), "not a sequence of distinct names"),
        (('name = "echo"', "name = ''"), "whose name is ''"),
        (("for i in range(n)]", "for i in range(n)][:0]"), "examples('train', 1) gave [], not a list of one"),
        (("return [Example(", "raise KeyError('split'); return [Example("), "examples('train', 1) raised KeyError"),
        (("return Example(prompt,", "return (prompt,"), "example(prompt) gave a tuple, not an Example"),
        (('{"helpfulness": float(', '{"helpful": float('), "judge gave ['helpful'], not a dict over"),
        (("float(response == example.answer)", "2.0"), "judge scored helpfulness 2.0, not a number in [0, 1]"),
        (("float(response == example.answer)", "'yes'"), "judge scored helpfulness 'yes'"),
        (("float(response == example.answer)", "float('nan')"), "judge scored helpfulness nan"),
        (("float(response == example.answer)", "1 / 0"), "judge raised ZeroDivisionError: division by zero"),
    ],
)
def test_a_factory_that_returns_the_wrong_shape(tmp_path, monkeypatch, change, fragment):
    monkeypatch.chdir(tmp_path)
    assert change[0] in GOOD
    name = write_factory(tmp_path, GOOD.replace(*change))
    assert fragment in factory_error(f"{name}:make")


def test_load_factory_returns_the_callable(tmp_path):
    name = write_factory(tmp_path, GOOD)
    make = load_factory(f"{tmp_path / name}.py:make")
    assert make(TaskConfig(), 0).examples("test", 2)[1] == Example("say test 1\n", "echo", "1", "1")
