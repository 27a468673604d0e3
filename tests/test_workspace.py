"""The workspace root: paths built from it must mean the same thing from any working directory."""

from pathlib import Path

from rlhfops.versioning import commit_cycle
from rlhfops.workspace import Workspace


def test_relative_root_is_made_absolute_so_versioning_works_from_any_cwd(tmp_path, monkeypatch):
    """A relative workspace (`--workspace workspace`) must not be applied twice when git / DVC run
    inside it: versioning a cycle of `Workspace("ws")` from the parent directory works."""
    monkeypatch.chdir(tmp_path)
    ws = Workspace(Path("ws"))
    assert ws.root == tmp_path / "ws" and ws.root.is_absolute()
    ws.cycle_dir(1).mkdir(parents=True)
    (ws.cycle_dir(1) / "responses.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    assert commit_cycle(ws, 1, [ws.cycle_dir(1)])
    assert (ws.root / "cycles" / "0001.dvc").exists()
