import json
import time
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from rlhfops import tracking
from rlhfops.config import load_config

ROWS = [
    {"prompt": "q: 2+3?", "response": "2+3=5\nanswer: 5", "helpfulness": 1.0},
    {"prompt": "q: 4/0?", "response": "answer: 7", "helpfulness": 0.0},
]


def _records(path: Path):
    """The protobuf records of a W&B transaction log (`run-*.wandb`, LevelDB log format)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # still being written
            return
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a record split over blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _offline_run(root: Path, timeout: float = 15.0) -> tuple[Path, dict]:
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    # wandb-core writes the log in its own process: finish() can return before the last records land.
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in _records(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    found = {"history": {}}
    for record in _records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["run"] = record.run
            found["config"] = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "history":
            for item in record.history.item:
                found["history"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return run_dir, found


def test_offline_run_writes_group_job_type_config_metrics_and_samples(monkeypatch, tmp_path, smoke_cfg):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with tracking.start_run(smoke_cfg, "evaluate", group="cycle-run-1", cycle=2, workspace=tmp_path) as run:
        assert run.mode == "offline"
        run.log_metrics({"gold/composite": 0.625, "gold/helpfulness": 0.5})
        run.log_samples(ROWS)
    run.finish()  # a second finish is harmless

    run_dir, found = _offline_run(tmp_path)
    assert found["run"].run_group == "cycle-run-1"
    assert found["run"].job_type == "evaluate"
    assert found["run"].project == smoke_cfg.tracking.project
    assert found["run"].display_name == "evaluate-cycle2"
    assert found["config"]["cycle"] == 2 and found["config"]["stage"] == "evaluate"
    assert found["config"]["model"] == smoke_cfg.to_dict()["model"]
    assert found["history"]["gold/composite"] == 0.625
    assert found["exit_code"] == 0
    (table,) = (run_dir / "files" / "media" / "table").glob("samples_*.table.json")
    saved = json.loads(table.read_text())
    assert saved["columns"] == ["prompt", "response", "helpfulness"]
    assert saved["data"] == [list(row.values()) for row in ROWS]


def test_a_stage_that_raises_finishes_its_run_as_failed(monkeypatch, tmp_path, smoke_cfg):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking.start_run(smoke_cfg, "train_rm", group="g", cycle=0, workspace=tmp_path),
    ):
        raise RuntimeError("boom")
    _, found = _offline_run(tmp_path)
    assert found["run"].job_type == "train_rm"
    assert found["exit_code"] == 1


def test_disabled_mode_writes_nothing(monkeypatch, tmp_path, smoke_cfg):
    assert tracking.resolve_mode(smoke_cfg) == "disabled"  # tests/conftest.py sets WANDB_MODE
    monkeypatch.chdir(tmp_path)
    with tracking.start_run(smoke_cfg, "collect", group="g", cycle=1, workspace=tmp_path / "ws") as run:
        run.log_metrics({"collect/samples": 4})
        run.log_samples(ROWS)
    assert list(tmp_path.iterdir()) == []


def test_mode_comes_from_the_environment_then_the_config(monkeypatch):
    cfg = load_config(None, ["tracking.mode=online"])
    monkeypatch.delenv("WANDB_MODE")
    assert tracking.resolve_mode(cfg) == "online"
    assert tracking.resolve_mode(load_config()) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(cfg) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    with pytest.raises(ValueError, match="WANDB_MODE must be one of"):
        tracking.resolve_mode(cfg)


def test_run_dir_is_the_workspace_unless_configured(tmp_path):
    assert tracking.run_dir(load_config(), tmp_path) == tmp_path
    assert tracking.run_dir(load_config(None, ["tracking.dir=tracking"]), tmp_path) == tmp_path / "tracking"
    assert tracking.run_dir(load_config(None, [f"tracking.dir={tmp_path}/abs"]), "ws") == tmp_path / "abs"


def test_sample_rows_must_share_columns():
    table = tracking.samples_table(ROWS)
    assert table.columns == ["prompt", "response", "helpfulness"] and len(table.data) == 2
    with pytest.raises(ValueError, match="sample row 1 has columns"):
        tracking.samples_table([ROWS[0], {"prompt": "q", "response": "r"}])
    with pytest.raises(ValueError, match="at least one row"):
        tracking.samples_table([])


def test_new_group_names_are_distinct():
    a, b = tracking.new_group(), tracking.new_group("cycle")
    assert a.startswith("rlhfops-") and b.startswith("cycle-") and a != tracking.new_group()
