"""The corpus of malformed inputs in tests/data/bad/, each driven through the command a user would
meet it with: a non-zero exit, one `error:` sentence naming the file (and the line, row or split
where it applies), no traceback, and nothing half-written in the workspace."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfops.cli import app
from rlhfops.registry import Registry

BAD = Path(__file__).parent / "data" / "bad"
runner = CliRunner()


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """An untrained smoke-size policy directory (collection needs one to get as far as its prompts)."""
    from rlhfops.config import load_config
    from rlhfops.modeling import init_policy, save_policy

    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    out = tmp_path_factory.mktemp("policy") / "sft"
    save_policy(model, tokenizer, cfg, out)
    return out


def _cycle(ws: Path, name: str, source: Path) -> None:
    (ws / "cycles" / "0001").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, ws / "cycles" / "0001" / name)


def _registry_file(ws: Path, source: Path) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, ws / "registry.json")


def _with_sft(ws: Path, policy: Path) -> None:
    shutil.copytree(policy, ws / "models" / "sft")


def _offline_data_with_sft(source: Path):
    """`rlhfops offline` reads logged samples the workspace already holds (written by an earlier run)."""

    def prepare(ws: Path, policy: Path) -> None:
        _with_sft(ws, policy)
        (ws / "data" / "offline").mkdir(parents=True)
        shutil.copyfile(source, ws / "data" / "offline" / "samples-composite.jsonl")

    return prepare


def _stable_and_canary_on(ws: Path, db: Path) -> None:
    registry = Registry(ws)
    registry.register(ws / "models" / "a", stage="stable")
    registry.register(ws / "models" / "b", stage="canary")
    shutil.copyfile(db, ws / "interactions.db")


# (id, files set up in the workspace, argv after the command's own -w, what the sentence must say)
CASES = [
    ("config alias bomb", None, ["models", "-c", BAD / "config-alias-bomb.yaml"], "alias bomb"),
    ("config duplicate key", None, ["models", "-c", BAD / "config-duplicate-key.yaml"], "key 'lr' on line 3"),
    ("config infinite lr", None, ["models", "-c", BAD / "config-infinite-lr.yaml"], "'sft.lr'.*finite"),
    ("config nan target_kl", None, ["models", "-c", BAD / "config-nan-target-kl.yaml"], "'policy.target_kl'"),
    ("config nan weight", None, ["models", "-c", BAD / "config-nan-weight.yaml"], "scalarisation.weights.helpful"),
    ("config inf kind weight", None, ["models", "-c", BAD / "config-infinite-kind-weight.yaml"], "kind_weights.solve"),
    ("config not utf-8", None, ["models", "-c", BAD / "config-not-utf8.yaml"], "not valid UTF-8 \\(line 3\\)"),
    ("config a list", None, ["models", "-c", BAD / "config-a-list.yaml"], "must hold a mapping"),
    ("config unclosed", None, ["models", "-c", BAD / "config-unclosed.yaml"], "not valid YAML \\(line 2\\)"),
    ("config a directory", None, ["models", "-c", BAD], "is a directory"),
    ("--set not yaml", None, ["models", "--set", "sft.lr=[1, 2"], "--set 'sft.lr' is not valid YAML"),
    ("--set nan", None, ["models", "--set", "sft.lr=.nan"], "'sft.lr'.*finite"),
    ("registry []", lambda ws, p: _registry_file(ws, BAD / "registry-list.json"), ["models"], "JSON list"),
    ("registry {}", lambda ws, p: _registry_file(ws, BAD / "registry-empty-object.json"), ["models"], "'versions'"),
    ("registry no stage", lambda ws, p: _registry_file(ws, BAD / "registry-no-stage.json"), ["models"], "stage None"),
    ("registry not utf-8", lambda ws, p: _registry_file(ws, BAD / "registry-not-utf8.json"), ["models"], "UTF-8"),
    ("registry truncated", lambda ws, p: _registry_file(ws, BAD / "registry-truncated.json"), ["models"], "line 1"),
    ("score empty", None, ["score", BAD / "score-empty.jsonl"], "holds no records"),
    ("score truncated", None, ["score", BAD / "score-truncated.jsonl"], "score-truncated.jsonl:2: not valid JSON"),
    ("score not text", None, ["score", BAD / "score-response-not-text.jsonl"], ":1: field 'response'"),
    ("score binary", None, ["score", BAD / "score-binary.jsonl"], "score-binary.jsonl:\\d: not valid UTF-8"),
    ("score nan", None, ["score", BAD / "score-nan.jsonl"], ":1: not valid JSON \\(NaN"),
    ("score a directory", None, ["score", BAD], "is a directory"),
    (
        "responses infinite feedback",
        lambda ws, p: _cycle(ws, "responses.jsonl", BAD / "responses-infinite-feedback.jsonl"),
        ["annotate", "--cycle", "1", "--no-version"],
        "responses.jsonl:1: not valid JSON \\(Infinity",
    ),
    (
        "responses text feedback",
        lambda ws, p: _cycle(ws, "responses.jsonl", BAD / "responses-text-feedback.jsonl"),
        ["annotate", "--cycle", "1", "--no-version"],
        "responses.jsonl:1: field 'feedback'",
    ),
    (
        "responses bad source",
        lambda ws, p: _cycle(ws, "responses.jsonl", BAD / "responses-bad-source.jsonl"),
        ["annotate", "--cycle", "1", "--no-version"],
        "responses.jsonl:1: field 'source'",
    ),
    (
        "review export nan",
        lambda ws, p: _cycle(ws, "review-queue.jsonl", BAD / "score-empty.jsonl"),
        ["review", "import", BAD / "review-nan.json", "--cycle", "1", "--no-version"],
        "review-nan.json' is not valid JSON \\(NaN",
    ),
    (
        "review conflicting labels",
        lambda ws, p: _cycle(ws, "review-queue.jsonl", BAD / "score-empty.jsonl"),
        ["review", "import", BAD / "review-conflicting-duplicates.json", "--cycle", "1", "--no-version"],
        "task 2: item 'item-1' is labelled B here but A in task 1",
    ),
    (
        "review export a directory",
        lambda ws, p: _cycle(ws, "review-queue.jsonl", BAD / "score-empty.jsonl"),
        ["review", "import", BAD, "--cycle", "1", "--no-version"],
        "is a directory",
    ),
    (
        "interactions.db corrupt",
        lambda ws, p: _stable_and_canary_on(ws, BAD / "interactions-corrupt.db"),
        ["deploy", "status"],
        "interactions.db' cannot be opened: file is not a database",
    ),
    *[
        (
            f"prompts {name}",
            _with_sft,
            ["collect", "--set", f"collect.dataset={BAD / name}", "--set", "collect.interactions=false", *extra],
            fragment,
        )
        for name, extra, fragment in [
            ("prompts-truncated.jsonl", [], "prompts-truncated.jsonl:2: not valid JSON"),
            ("prompts-binary.jsonl", [], "prompts-binary.jsonl:1: not valid UTF-8"),
            ("prompts-empty.jsonl", [], "prompts-empty.jsonl' holds no rows"),
            ("prompts-ragged.csv", [], "prompts-ragged.csv'.*line 3"),
            (
                "prompts-datasetdict-train-only",
                ["--set", "collect.dataset_split=test"],
                "has no split 'test' \\(splits: train\\)",
            ),
        ]
    ],
    *[
        (f"offline {name}", _offline_data_with_sft(BAD / name), ["offline"], fragment)
        for name, fragment in [
            ("offline-nan-reward.jsonl", "samples-composite.jsonl:2: not valid JSON \\(NaN"),
            ("offline-no-reward.jsonl", "samples-composite.jsonl:2: 'reward' must be a finite number"),
            ("offline-truncated.jsonl", "samples-composite.jsonl:2: not valid JSON"),
            ("offline-prompt-not-text.jsonl", "samples-composite.jsonl:1: 'prompt' must be a string"),
        ]
    ],
    ("model empty directory", None, ["eval", "--model", "EMPTY"], "has no config.json"),
    ("model truncated weights", None, ["eval", "--model", BAD / "model-truncated-weights"], "is damaged"),
    ("model garbage weights", None, ["eval", "--model", BAD / "model-garbage-weights"], "is damaged"),
    ("model a file", None, ["eval", "--model", BAD / "score-empty.jsonl"], "is a file, not a directory"),
    ("serve a damaged model", None, ["serve", "--model", BAD / "model-truncated-weights"], "is damaged"),
    ("collect policy truncated", None, ["collect", "--policy", BAD / "model-truncated-weights"], "is damaged"),
]


@pytest.mark.parametrize(("case", "prepare", "argv", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_file_is_one_sentence_naming_it(tmp_path, policy, case, prepare, argv, fragment):
    import re

    ws = tmp_path / "ws"
    empty = tmp_path / "empty-model"
    empty.mkdir()
    if prepare is not None:
        prepare(ws, policy)
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} if ws.exists() else {}
    args = [str(empty) if a == "EMPTY" else str(a) for a in argv]
    if "-c" not in args:
        args += ["-c", "smoke"]
    result = runner.invoke(app, [*args, "-w", str(ws)])
    output = result.output
    assert result.exit_code == 2, (case, result.exit_code, output, result.exception)
    assert "Traceback" not in output and isinstance(result.exception, SystemExit), output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 400, output
    assert re.search(fragment, errors[0]), (fragment, errors[0])
    # the sentence names the bad file: the one given on the command line, else the workspace's own
    given = [Path(a).name for a in args if a.startswith(str(BAD)) or a.startswith("collect.dataset=")]
    names = [n.split("=")[-1].rsplit("/", 1)[-1] for n in given] or [
        "registry.json",
        "responses",
        "interactions.db",
        "samples-composite.jsonl",
    ]
    assert any(name in errors[0] for name in names) or "--set" in errors[0] or "model" in case, errors[0]
    # nothing half-written: the files that were there are unchanged, no temporary file is left
    after = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} if ws.exists() else {}
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, changed
    assert not [p for p in after if p.name.endswith(".tmp")]
    assert not (ws / "cycles" / "0001" / "responses.jsonl").exists() or "responses" in case
    assert not (ws / "models" / "offline").exists()


def test_an_alias_bomb_is_answered_at_once_in_one_short_sentence():
    import time

    start = time.perf_counter()
    result = runner.invoke(app, ["models", "-c", str(BAD / "config-alias-bomb.yaml")])
    assert time.perf_counter() - start < 1.0
    assert result.exit_code == 2 and len(result.output) < 300, result.output[:300]
