"""Crash safety: a smoke cycle killed with SIGKILL at chosen points (between stages, inside
`version_data` while git commits and while DVC pushes, between the gate and the canary deploy),
each time followed by a re-run, ends like an uninterrupted one: the cycle done, `git status` and
`dvc status` clean, the cycle's data versioned once, one canary registered, the registry valid."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry, check_registry
from rlhfops.workspace import RESPONSES, Workspace

SMALL = [
    "eval.n_test=8",
    "pipeline.eval_prompts=8",
    "policy.steps=1",
    "offline.max_steps=2",
    "reward.max_steps=2",
    "reward.members=1",
    "reward.data.n_prompts=16",
    "reward.data.n_val_prompts=8",
    "prm.n_prompts=16",
    "prm.n_val_prompts=8",
    "prm.max_steps=2",
    "offline.n_prompts=8",
    "offline.samples_per_prompt=2",
    "policy.prompts_per_step=8",
    "gate.min_improvement=-1",  # the gate deploys, so the kill between gate and deploy_canary is reachable
]

# One process running the cycle in process (`cycle.run_in_process`), killing itself with SIGKILL at
# `point`: after a named stage, or inside version_data (`git add` done with the index lock a git killed
# mid-commit leaves; or as `dvc push` starts).
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from rlhfops import cycle, versioning
    from rlhfops.config import load_config
    from rlhfops.workspace import Workspace

    ws_root, point, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    cfg, ws = load_config("smoke", overrides), Workspace(ws_root)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    real_run = versioning._run

    def run(root, *cmd, check=True):
        if point == "in-git-commit" and cmd[:2] == ("git", "commit"):
            (Path(root) / ".git" / "index.lock").write_text("")  # what a git killed mid-commit leaves
            die()
        if point == "in-dvc-push" and cmd[:2] == ("dvc", "push"):
            die()
        return real_run(root, *cmd, check=check)

    versioning._run = run
    cycle.run_in_process(cfg, ws, on_stage=lambda name, s: die() if name == point else None)
    """
)


def _attempt(ws, point: str) -> int:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ws), point, *SMALL], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != (0 if point == "none" else -9):
        pytest.fail(f"the attempt to die at {point} exited {done.returncode}: {done.stderr[-3000:]}")
    return done.returncode


def test_kill_9_at_chosen_points_then_a_rerun_finishes_the_cycle_cleanly(tmp_path):
    from rlhfops import cycle

    ws = Workspace(tmp_path / "ws")
    cfg = load_config("smoke", SMALL)
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, ws.model_dir("sft"))

    for point in ("annotate", "in-git-commit", "in-dvc-push", "evaluate", "gate"):
        assert _attempt(ws.root, point) == -9, point  # it died where it was told to
        assert not cycle.cycle_done(ws, 1), point  # a killed cycle never counts as done
        assert cycle.next_cycle(ws) == 1
    assert _attempt(ws.root, "none") == 0
    assert cycle.cycle_done(ws, 1) and cycle.next_cycle(ws) == 2

    git = subprocess.run(["git", "status", "--porcelain"], cwd=ws.root, capture_output=True, text=True)
    assert git.returncode == 0 and git.stdout == "", git.stdout
    dvc = [sys.executable, "-m", "dvc", "status", "--json"]
    assert json.loads(subprocess.run(dvc, cwd=ws.root, capture_output=True, text=True).stdout) == {}
    pushed = subprocess.run([*dvc, "--cloud"], cwd=ws.root, capture_output=True, text=True)
    assert json.loads(pushed.stdout) == {}, pushed.stdout  # every output is in the remote

    data = Registry(ws.root).load()
    assert check_registry(data) is None
    canaries = [v for v in data["versions"] if v["metrics"].get("cycle") == 1]
    assert len(canaries) == 1 and canaries[0]["stage"] == "canary"  # deployed once, after the gate
    records = [json.loads(line) for line in (ws.cycle_dir(1) / RESPONSES).read_text().splitlines()]
    assert records and len({r["id"] for r in records}) == len(records)  # nothing collected twice
    manifest = json.loads((ws.root / ".rlhfops" / "files.json").read_text())
    assert manifest["files"][f"cycles/0001/{RESPONSES}"]["records"] == len(records)
    tags = subprocess.run(["git", "tag"], cwd=ws.root, capture_output=True, text=True).stdout.split()
    assert tags == ["cycle-0001"]
