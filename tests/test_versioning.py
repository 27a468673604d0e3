"""Real git + DVC in a temporary workspace with a local-directory remote."""

import shutil
import subprocess

import pytest

from rlhfops.config import VersioningConfig
from rlhfops.versioning import VersioningError, commit_cycle, history, init_repo, read_cycle
from rlhfops.workspace import Workspace


def git(ws, *args):
    return subprocess.run(["git", *args], cwd=ws.root, capture_output=True, text=True, check=True).stdout


def write_cycle(ws, cycle, lines):
    d = ws.cycle_dir(cycle)
    d.mkdir(parents=True, exist_ok=True)
    (d / "pairs-helpfulness.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(lines)))
    return d


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "ws")
    (ws.model_dir("sft")).mkdir(parents=True)
    (ws.model_dir("sft") / "model.safetensors").write_bytes(b"weights")
    ws.eval_path("sft").parent.mkdir(parents=True)
    ws.eval_path("sft").write_text("{}")
    return ws


def test_two_cycles_read_back_by_tag_after_cycle_two_changed_cycle_one(ws, tmp_path):
    remote = VersioningConfig(remote=str(tmp_path / "remote"))
    init_repo(ws, remote)
    init_repo(ws, remote)  # idempotent
    c1 = write_cycle(ws, 1, 3)
    first = commit_cycle(ws, 1, [c1], versioning=remote)
    before = (c1 / "pairs-helpfulness.jsonl").read_bytes()

    (c1 / "pairs-helpfulness.jsonl").write_text('{"n": "human"}\n')  # e.g. review labels imported in cycle 2
    c2 = write_cycle(ws, 2, 5)
    second = commit_cycle(ws, 2, [c2, c1], versioning=remote)
    assert first != second

    assert read_cycle(ws, 1, "cycles/0001/pairs-helpfulness.jsonl") == before
    assert read_cycle(ws, 2, "cycles/0001/pairs-helpfulness.jsonl") == b'{"n": "human"}\n'
    rows = history(ws)
    assert [(r["cycle"], r["tag"], r["commit"]) for r in rows] == [(1, "cycle-0001", first), (2, "cycle-0002", second)]
    assert rows[0]["paths"]["cycles/0001"]["records"] == 3
    assert rows[1]["paths"]["cycles/0002"]["records"] == 5 and rows[1]["paths"]["cycles/0001"]["records"] == 1
    assert rows[0]["paths"]["cycles/0001"]["dvc_md5"] != rows[1]["paths"]["cycles/0001"]["dvc_md5"]

    # models and evaluations are git-ignored, not DVC-tracked; the remote holds the data
    tracked = git(ws, "ls-files").split()
    assert "cycles/0001.dvc" in tracked and not any(t.startswith(("models", "eval")) for t in tracked)
    assert not (ws.root / "models.dvc").exists() and git(ws, "status", "--porcelain") == ""
    assert any((tmp_path / "remote").rglob("*"))

    # the local cache gone, the data comes back from the remote
    shutil.rmtree(ws.root / ".dvc" / "cache")
    assert read_cycle(ws, 1, "cycles/0001/pairs-helpfulness.jsonl") == before

    # re-committing a cycle with unchanged data makes no new commit
    assert commit_cycle(ws, 2, [c2, c1], versioning=remote) == second


def test_corrupted_remote_is_a_clear_error(ws, tmp_path):
    remote = VersioningConfig(remote=str(tmp_path / "remote"))
    c1 = write_cycle(ws, 1, 2)
    commit_cycle(ws, 1, [c1], versioning=remote)
    shutil.rmtree(ws.root / ".dvc" / "cache")
    for f in (tmp_path / "remote").rglob("*"):
        if f.is_file() and not f.name.endswith(".dir"):
            f.chmod(0o644)
            f.write_bytes(b"garbage\n")
    with pytest.raises(VersioningError, match="corrupted"):
        read_cycle(ws, 1, "cycles/0001/pairs-helpfulness.jsonl")
    assert (c1 / "pairs-helpfulness.jsonl").read_text().count("\n") == 2  # nothing lost locally


def test_missing_remote_is_a_clear_error_and_nothing_is_lost(ws, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    remote = VersioningConfig(remote=str(blocker / "remote"))
    c1 = write_cycle(ws, 1, 4)
    with pytest.raises(VersioningError, match="committed and tagged cycle-0001 locally.*Nothing is lost"):
        commit_cycle(ws, 1, [c1], versioning=remote)
    assert "cycle-0001" in git(ws, "tag").split()
    assert read_cycle(ws, 1, "cycles/0001/pairs-helpfulness.jsonl").count(b"\n") == 4  # from the local cache
    with pytest.raises(VersioningError, match="no tag cycle-0007"):
        read_cycle(ws, 7, "cycles/0007/x.jsonl")


def test_paths_outside_the_workspace_are_refused(ws, tmp_path):
    (tmp_path / "elsewhere.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="outside the workspace"):
        commit_cycle(ws, 1, [tmp_path / "elsewhere.jsonl"])
