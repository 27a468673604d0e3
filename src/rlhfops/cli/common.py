"""What every `rlhfops` command shares: the typer app, the console, the option types, setup, JSON
output and the one way an expected error reaches a person.

The command modules (`train`, `cycle`, `data`, `serving`, `bench`) import from here and from
nowhere else in this package, so the package has no import cycle.

Errors: the library raises the exceptions in `USER_ERRORS` for problems a person can fix, each with
a one-sentence message. A command runs its library calls inside `with user_errors():`, which turns
them into `error: <message>` on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console

from rlhfops.config import Config, load_config
from rlhfops.workspace import RM_SUMMARY, Workspace, is_model_dir

app = typer.Typer(
    name="rlhfops",
    help="Iterative RLHF on Kubeflow: the stages of one RLHF cycle, runnable one by one or as a whole.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config: a path or a name in configs/ (tiny, smoke).")
]
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Directory holding models and results.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key, e.g. --set sft.lr=3e-4 (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]

# The library's contract for "a person can fix this", one sentence each:
#   ValueError          bad input: a config key or value (ConfigError), a malformed record (file and
#                       line), an unknown registry version (RegistryError), a missing reward weight
#   FileNotFoundError   a model, data file or dataset that is not there yet (train it / run a stage first)
#   NotADirectoryError  a workspace path that is a file
#   ConnectionError     an endpoint that cannot be reached: the router, a judge API, a cluster
#   RuntimeError        a stage that stopped: a non-finite loss, a server that did not start, git / DVC
#                       failing (VersioningError), a TrainJob that failed (TrainJobError)
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    ConnectionError,
    RuntimeError,
)


def fail(message: str) -> NoReturn:
    """`error: <message>` on stderr and exit code 2."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report an exception of `USER_ERRORS` raised inside the block as one `error:` line, exit 2."""
    try:
        yield
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort):
        raise  # RuntimeErrors too: a `fail` (or Ctrl-C's Abort) inside the block goes through as it is
    except USER_ERRORS as e:
        fail(str(e))


def setup(config: str | None, overrides: list[str] | None, workspace: Path) -> tuple[Config, Workspace]:
    """The config (with --set overrides) and the workspace of a command; quiets the HF libraries."""
    with user_errors():
        cfg = load_config(config, overrides or ())
        ws = Workspace(workspace)
    _quiet_libraries()
    return cfg, ws


def _quiet_libraries() -> None:
    """Our own progress bars and tables only: no tqdm bars or advisory warnings from HF libraries."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def emit_json(data: Any) -> None:
    """`--json` output: one indented JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def trained_model(ws: Workspace, name: str) -> Path | None:
    """The workspace's `models/<name>` if a model was trained there, else None: a policy or the PRM
    (a `save_pretrained` directory with its config.json) or the reward ensembles (their summary)."""
    path = ws.model_dir(name)
    return path if is_model_dir(path) or (path / RM_SUMMARY).exists() else None


def model_problem(path: Path) -> str | None:
    """What keeps `path` from being loaded as a saved model, in words, or None: not a directory, no
    (readable) config.json, no weights, or a weights file that is truncated or not safetensors. Checked
    before loading, so a damaged directory is one sentence, not a traceback from deep in transformers."""
    from safetensors import safe_open

    from rlhfops.files import read_json_file
    from rlhfops.workspace import MODEL_CONFIG

    if not path.exists():
        return f"model directory '{path}' does not exist"
    if not path.is_dir():
        return f"model directory '{path}' is a file, not a directory"
    if not (path / MODEL_CONFIG).exists():
        return f"'{path}' is not a saved model: it has no {MODEL_CONFIG}"
    try:
        read_json_file(path / MODEL_CONFIG, "model config")
    except ValueError as e:
        return str(e)
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not list(path.glob("*.bin")):
        return f"'{path}' is not a saved model: it has no weights (*.safetensors or *.bin)"
    for file in weights:
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as e:  # safetensors raises its own error class for every kind of damage
            return f"weights file '{file}' is damaged (truncated, or not safetensors): {str(e).splitlines()[0]}"
    return None


def require_model(path: Path) -> Path:
    """`path` if it holds a loadable saved model (`model_problem`), else `fail` with the reason."""
    problem = model_problem(path)
    if problem:
        fail(problem)
    return path


def require_policy(ws: Workspace) -> Path:
    """The workspace's SFT policy, or a clear error saying how to train it."""
    policy = trained_model(ws, "sft")
    if policy is None:
        fail(f"no policy in '{ws.model_dir('sft')}'; train one with `rlhfops sft` first")
    return policy


def train_sft(cfg: Config, ws: Workspace, progress: bool, out: Path | None = None) -> Path:
    """Train the SFT policy into the workspace, or into `out` (`rlhfops sft`, and `rlhfops run` on a
    fresh workspace)."""
    from rlhfops.sft import run_sft

    with user_errors():
        return run_sft(cfg, out or ws.model_dir("sft"), progress=progress)


def evaluate_to_workspace(cfg: Config, ws: Workspace, model_path: Path | None, name: str) -> dict[str, Any]:
    """Gold evaluation of a saved policy, or of the untrained starting policy when model_path is None,
    written to <ws>/eval/<name>.json and returned."""
    from rlhfops.evaluation import evaluate, evaluate_dir
    from rlhfops.files import atomic_write_json
    from rlhfops.modeling import init_policy
    from rlhfops.tasks import make_task

    if model_path is not None:
        require_model(model_path)
    with user_errors():
        if model_path is not None:
            result = evaluate_dir(cfg, model_path)
        else:
            tokenizer, model = init_policy(cfg)
            result = {"model": "untrained", **evaluate(model, tokenizer, make_task(cfg.task, seed=cfg.seed), cfg)}
    atomic_write_json(ws.eval_path(name), result)
    return result
