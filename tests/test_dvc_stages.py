"""dvc.yaml / params.yaml: the pipeline's stages for `dvc repro`, checked against the CLI and run
for real (the first two stages, at smoke size, in a temporary git + DVC repository)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from rlhfops.config import load_config
from rlhfops.cycle import STAGES

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def test_params_yaml_is_the_tiny_config():
    assert load_config(ROOT / "params.yaml") == load_config("tiny")


def test_every_stage_calls_the_cli_with_params_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["sft", "collect", "annotate", "reward", "prm", "policy", "offline", "evaluate", "gate"]
    for name, stage in stages.items():
        for command in stage["cmd"].split("&&"):
            assert command.split()[0] == "rlhfops" and "-c params.yaml" in command, name
            if m := re.search(r"rlhfops stage (\w+)", command):
                assert m.group(1) in STAGES, name
        assert stage.get("params") and stage.get("outs"), name


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(load_config("smoke", ["sft.max_steps=5"]).to_dict()))
    env = {**os.environ, "WANDB_MODE": "disabled", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*DVC, "init", "-q"], cwd=repo, check=True, env=env)
    return repo


def test_dvc_dag_and_the_first_stages_reproduce(tmp_path):
    repo = _repo(tmp_path)
    env = {**os.environ, "WANDB_MODE": "disabled", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    dag = subprocess.run([*DVC, "dag", "--md"], cwd=repo, capture_output=True, text=True, env=env, check=True).stdout
    for stage in ("sft", "collect", "annotate", "reward", "prm", "policy", "offline", "evaluate", "gate"):
        assert stage in dag
    out = subprocess.run([*DVC, "repro", "collect"], cwd=repo, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    ws = repo / "dvc-workspace"
    assert (ws / "models" / "sft" / "model.safetensors").exists()
    assert (ws / "cycles" / "0001" / "responses.jsonl").stat().st_size > 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"sft", "collect"} and lock["collect"]["outs"][0]["md5"]
    status = subprocess.run([*DVC, "status", "collect"], cwd=repo, capture_output=True, text=True, env=env)
    assert "up to date" in status.stdout  # reproduced: nothing left to run for these stages
