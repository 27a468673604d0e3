"""A user-written task: `task.factory` names a callable `(cfg: TaskConfig, seed: int) -> task`.

Two spellings (the config checks the shape, `load_factory` the rest):

    package.module:callable    imported as `python -m` would: the working directory is on sys.path,
                               so run rlhfops from the directory that holds `package/`
    path/to/file.py:callable   the file loaded by its path (relative to the working directory); it
                               may import installed packages, not its own neighbours

The task it returns has the members of `rlhfops.tasks.Task` (name, objectives, examples, example,
judge) and any of the optional ones (teacher, metrics, steps, shaping_terms). `make_task` calls
`examples("train", 1)`, `example(prompt)` and `judge` on it once before any stage uses it: a
factory that cannot be imported, raises, or returns something of another shape is one TaskError
naming the factory. A minimal task, `capitals.py:make`:

    from rlhfops.tasks import Example, split_of

    CAPITALS = {"France": "Paris", "Peru": "Lima", "Japan": "Tokyo", "Kenya": "Nairobi"}
    PROMPT = "Q: What is the capital of {}?\\nA:"  # ends where the model should continue

    class Capitals:
        name = "capitals"
        objectives = ("helpfulness",)

        def __init__(self, cfg, seed):
            self.cfg = cfg
            self.rows = [self.example(PROMPT.format(country)) for country in CAPITALS]

        def examples(self, split, n):
            rows = [ex for ex in self.rows
                    if split_of(ex.prompt, self.cfg.val_fraction, self.cfg.test_fraction) == split]
            if len(rows) < n:
                raise ValueError(f"capitals has {len(rows)} {split} prompts, not {n}")
            return rows[:n]

        def example(self, prompt):  # live traffic may send any prompt
            country = prompt.removeprefix("Q: What is the capital of ").removesuffix("?\\nA:")
            answer = CAPITALS.get(country, "")
            return Example(prompt, "capital" if answer else "unknown", answer, f" {answer}")

        def judge(self, example, response):
            return {"helpfulness": float(bool(example.answer) and example.answer in response)}

    def make(cfg, seed):
        return Capitals(cfg, seed)

examples/unit_conversion/ is a fuller one (a checker, a noisy teacher, a prompts file).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rlhfops.tasks import Example, Task, TaskError

if TYPE_CHECKING:
    from rlhfops.config import TaskConfig

REQUIRED = ("name", "objectives", "examples", "example", "judge")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _import_module(name: str, spec: str) -> ModuleType:
    importlib.invalidate_caches()  # a task written after this process started is found
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only the task's own package being absent is a reason to look in the working directory.
        itself = e.name is not None and (name == e.name or name.startswith(e.name + "."))
        if not itself or os.getcwd() in sys.path:
            raise TaskError(f"task.factory '{spec}' cannot be imported ({_one_line(e)})") from e
    except Exception as e:
        raise TaskError(f"task.factory '{spec}' cannot be imported ({_one_line(e)})") from e
    sys.path.insert(0, os.getcwd())  # as `python -m` does: a package in the working directory
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise TaskError(
            f"task.factory '{spec}' cannot be imported ({_one_line(e)}); run rlhfops from the directory that "
            "holds the package, or name the file as 'path/to/file.py:callable'"
        ) from e


def _load_file(filename: str, spec: str) -> ModuleType:
    path = Path(filename).resolve()
    if not path.is_file():
        raise TaskError(f"task.factory '{spec}' names the file '{filename}', which does not exist")
    name = "rlhfops_task_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]  # one module per file
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise TaskError(f"task.factory '{spec}' cannot be loaded ({_one_line(e)})") from e
    return module


def load_factory(spec: str) -> Callable[[TaskConfig, int], Any]:
    """The callable `task.factory` names ('package.module:callable' or 'path/to/file.py:callable')."""
    module_name, _, attr = spec.rpartition(":")
    module = _load_file(module_name, spec) if module_name.endswith(".py") else _import_module(module_name, spec)
    factory = getattr(module, attr, None)
    if factory is None:
        raise TaskError(f"task.factory '{spec}': '{module_name}' has no '{attr}'")
    if not callable(factory):
        raise TaskError(f"task.factory '{spec}': '{attr}' is a {type(factory).__name__}, not a callable")
    return factory


def check_task(task: Any, spec: str) -> Task:
    """`task` if it has the shape of `Task` (its members, one train example, a judge over its
    objectives with scores in [0, 1]); otherwise one TaskError naming the factory."""
    got = f"task.factory '{spec}' returned a {type(task).__name__}"
    missing = [m for m in REQUIRED if not hasattr(task, m)]
    if missing:
        raise TaskError(f"{got} without {', '.join(missing)}, which every task has (rlhfops.tasks.Task)")
    if not isinstance(task.name, str) or not task.name:
        raise TaskError(f"{got} whose name is {task.name!r}, not a non-empty string")
    objectives = task.objectives
    if (
        not isinstance(objectives, tuple | list)
        or not objectives
        or not all(isinstance(o, str) and o for o in objectives)
        or len(set(objectives)) < len(objectives)
    ):
        raise TaskError(f"{got} whose objectives are {objectives!r}, not a sequence of distinct names")

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            raise TaskError(f"{got} whose {what} raised {_one_line(e)}") from e

    examples = call("examples('train', 1)", task.examples, "train", 1)
    if not (isinstance(examples, list) and len(examples) == 1 and isinstance(examples[0], Example)):
        raise TaskError(f"{got} whose examples('train', 1) gave {examples!r:.80}, not a list of one Example")
    example = examples[0]
    if not isinstance(example.prompt, str) or not example.prompt:
        raise TaskError(f"{got} whose train example has the prompt {example.prompt!r}, not a non-empty string")
    again = call("example(prompt)", task.example, example.prompt)
    if not isinstance(again, Example):
        raise TaskError(f"{got} whose example(prompt) gave a {type(again).__name__}, not an Example")
    scores = call("judge", task.judge, example, example.reference)
    if not isinstance(scores, dict) or set(scores) != set(objectives):
        keys = sorted(scores) if isinstance(scores, dict) else type(scores).__name__
        raise TaskError(f"{got} whose judge gave {keys}, not a dict over its objectives {list(objectives)}")
    for objective, score in scores.items():
        if not isinstance(score, int | float) or not (math.isfinite(score) and 0 <= score <= 1):
            raise TaskError(f"{got} whose judge scored {objective} {score!r}, not a number in [0, 1]")
    return task


def load_task(spec: str, cfg: TaskConfig, seed: int) -> Task:
    """The task `spec`'s factory makes from (cfg, seed), checked by `check_task`."""
    factory = load_factory(spec)
    try:
        task = factory(cfg, seed)
    except Exception as e:
        raise TaskError(f"task.factory '{spec}' raised {_one_line(e)}") from e
    return check_task(task, spec)
