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
from rlhfops.cycle import FAN_OUT, NEEDS, STAGES

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def test_params_yaml_is_the_tiny_config():
    assert load_config(ROOT / "params.yaml") == load_config("tiny")


def test_every_stage_calls_the_cli_with_params_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for command in stage["cmd"].split("&&"):
            assert command.split()[0] == "rlhfops" and "-c params.yaml" in command, name
            if m := re.search(r"rlhfops stage (\w+)", command):
                assert m.group(1) in STAGES, name
        assert stage.get("params") and stage.get("outs"), name


def _runs(stages: dict) -> dict[str, str]:
    """Which dvc.yaml stage runs each cycle stage: the `rlhfops stage NAME` in its command (a
    fanned-out stage runs inside its plan's command); `sft` stands for the cycle's `begin`."""
    runs = {"begin": "sft"}
    for name, stage in stages.items():
        for cycle_stage in re.findall(r"rlhfops stage (\w+)", stage["cmd"]):
            runs[cycle_stage] = name
    runs.update({member: runs[plan] for member, plan in FAN_OUT.items() if plan in runs})
    return runs


def test_dvc_stages_follow_the_declared_cycle_order():
    """dvc.yaml lists its stages in cycle.CYCLE's order, and each depends on the outs of the stages
    cycle.NEEDS says it needs, and on no stage that runs after it. version_data (DVC versions the
    data itself) and deploy_canary (the serving side) have no stage here: needing one is needing
    what it needs."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    runs = _runs(stages)
    assert set(STAGES) - set(runs) == {"version_data", "deploy_canary"}
    assert list(stages) == list(dict.fromkeys(runs[s] for s in ["begin", *STAGES] if s in runs))

    def needed(name: str) -> set[str]:
        found = set()
        for need in NEEDS[name] or ("begin",):
            found |= {runs[need]} if need in runs else needed(need)
        return found

    direct = {name: set() for name in stages}  # what the declaration says each dvc stage needs
    for name in STAGES:
        if name in runs:
            direct[runs[name]] |= needed(name) - {runs[name]}
    before: dict[str, set[str]] = {}  # ... directly or not
    for name in stages:
        before[name] = direct[name].union(*(before[d] for d in direct[name]))

    def producer(dep: str) -> str:
        return next(
            n for n, st in stages.items() for o in map(_path, st["outs"]) if dep == o or dep.startswith(o + "/")
        )

    for name, stage in stages.items():
        deps = {producer(dep) for dep in stage.get("deps", [])}
        assert direct[name] <= deps <= before[name], (
            f"dvc stage {name} depends on {deps}, cycle.NEEDS on {direct[name]}"
        )


def _path(out) -> str:
    return next(iter(out)) if isinstance(out, dict) else out


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


def _reads(function_names: list[str]) -> set[str]:
    """`cfg.<section>` and `cfg.<section>.<key>` read in these rlhfops.cycle functions' bodies."""
    import ast
    import inspect

    from rlhfops import cycle

    found = set()
    for name in function_names:
        tree = ast.parse(inspect.getsource(getattr(cycle, name)))
        for node in ast.walk(tree):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.insert(0, node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id == "cfg" and chain:
                found.add(".".join(chain[:2]))
    # ast.walk also visits the inner `cfg.a` of `cfg.a.b`: keep the longest reads
    found = {k for k in found if not any(other.startswith(k + ".") for other in found)}
    return found - {"model_copy", "model_dump", "save"}


# keys read below the stage functions, in the library they call (issue 16 names these)
LIBRARY_READS = {
    "evaluate": {"eval.greedy", "generation.temperature", "pipeline.offline", "policy.algorithm"},
    "offline": {"shaping.enabled", "pipeline.offline", "offline.reward", "scalarisation.method"},
    "policy": {"shaping.enabled", "policy.algorithm", "policy.dense_prm", "reward.objectives", "prm.aggregation"},
    "collect": {"serving.store_url", "collect.n_prompts", "generation.max_new_tokens"},
    "annotate": {"annotation.judges", "reward.objectives"},
}


def _covered(key: str, params: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in params)


def test_every_stage_lists_the_params_it_reads():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    cfg = load_config(None).model_dump()
    for name, stage in stages.items():
        runs = re.findall(r"rlhfops stage (\w+)", stage["cmd"])
        reads = _reads([STAGES[r].__name__ for r in runs]) | LIBRARY_READS.get(name, set())
        for key in sorted(reads):
            section, _, field = key.partition(".")
            assert section in cfg and (not field or field in cfg[section]), f"{key} is not a config key"
            assert _covered(key, stage["params"]), f"dvc stage {name} reads {key} but its params leave it out"


def test_the_param_check_catches_a_missing_key():
    assert not _covered("eval.greedy", ["pipeline.eval_prompts", "pipeline.eval_best_of_n"])
    assert _covered("eval.greedy", ["eval"]) and _covered("pipeline.offline", ["pipeline.offline"])


def test_state_files_and_the_policy_out_follow_the_config(tmp_path):
    """registry.json and interactions.db are outs (kept, not cached); the policy's out is named by
    policy.algorithm, as resolved by DVC itself."""
    from dvc.repo import Repo

    repo = _repo(tmp_path)
    (repo / "params.yaml").write_text(yaml.safe_dump(load_config("smoke", ["policy.algorithm=grpo"]).to_dict()))
    stages = {s.name: s for s in Repo(str(repo)).index.stages}
    collect = {str(o): o for o in stages["collect"].outs}
    for state in ("dvc-workspace/registry.json", "dvc-workspace/interactions.db"):
        assert collect[state].persist and not collect[state].use_cache, state
    assert [str(o) for o in stages["policy"].outs] == ["dvc-workspace/models/cycle-0001/grpo"]
    assert "dvc-workspace/models/cycle-0001/grpo" in [str(d) for d in stages["evaluate"].deps]
