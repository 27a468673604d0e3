"""The cycle pipeline: compiled YAML (current, GPUs, volume, secrets), schedule, and the local progress stream.
The whole cycle through kfp.local runs in tests/test_cli.py (`rlhfops run`)."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rlhfops import cycle
from rlhfops.config import load_config
from rlhfops.pipeline import graph
from rlhfops.pipeline.graph import compile_pipeline
from rlhfops.pipeline.local import ProgressStream
from rlhfops.pipeline.schedule import check_cron, schedule

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / graph.COMPILED  # the checked-in IR

TRAINING = {"reward-member", "reward-finish", "train-prm", "train-policy", "offline-rl", "evaluate"}


def _compile_fresh(tmp_path: Path) -> Path:
    """Compile with the defaults in a clean process: image references are fixed at import time from
    RLHFOPS_REGISTRY / RLHFOPS_IMAGE_TAG, which must not leak in from the environment."""
    out = tmp_path / "pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if k not in ("RLHFOPS_REGISTRY", "RLHFOPS_IMAGE_TAG")}
    code = (
        "from rlhfops.config import load_config; from rlhfops.pipeline.graph import compile_pipeline; "
        f"compile_pipeline(load_config(None), {str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return out


def test_checked_in_pipeline_is_current(tmp_path):
    fresh = _compile_fresh(tmp_path)
    assert fresh.read_text() == COMPILED.read_text(), "pipelines/iterative_rlhf.yaml is stale: run `rlhfops compile`"


def test_training_tasks_request_gpus_and_every_task_mounts_the_workspace():
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    names = {name.removeprefix("exec-") for name in executors}
    assert names >= TRAINING and {"collect", "annotate", "version-data", "gate", "canary-deploy"} <= names
    for name, executor in executors.items():
        task = name.removeprefix("exec-")
        resources = executor["container"].get("resources", {})
        config = k8s[name]
        assert config["pvcMount"][0]["mountPath"] == "/workspace", task
        assert {e["envVar"] for s in config["secretAsEnv"] for e in s["keyToEnv"]} >= {"WANDB_API_KEY"}
        if task in TRAINING:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", task
            assert resources["accelerator"]["resourceCount"] == "1", task
            assert config["tolerations"][0]["key"] == "nvidia.com/gpu", task
            assert config["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}, task
            assert "/trainer:" in executor["container"]["image"], task
        else:
            assert "accelerator" not in resources and "nodeSelector" not in config, task
            assert "/runtime:" in executor["container"]["image"], task


def test_pipeline_shape():
    spec, _ = yaml.safe_load_all(COMPILED.read_text())
    root = spec["root"]["dag"]["tasks"]
    assert (
        "record-failure" in root
        and root["record-failure"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    )
    cycle = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    loop = next(t for n, t in cycle.items() if n.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("reward-plan-Output")
    condition = next(t for n, t in cycle.items() if n.startswith("condition"))
    assert "== 'deploy'" in condition["triggerPolicy"]["condition"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"workspace", "config", "overrides"}


def _stage_of(spec: dict, task: dict) -> str:
    """The cycle stage a compiled task runs: the `run_stage("<stage>", ...)` in its executor's source
    (`begin` for canary-decide); a ParallelFor or If holds one task, whose stage it is."""
    component = spec["components"][task["componentRef"]["name"]]
    if "dag" in component:
        (inner,) = component["dag"]["tasks"].values()
        return _stage_of(spec, inner)
    source = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["command"][-1]
    if m := re.search(r'run_stage\("(\w+)"', source):
        return m.group(1)
    assert "begin(cfg, ws)" in source, task["componentRef"]["name"]
    return "begin"


def test_compiled_graph_follows_the_declared_cycle_order():
    spec, _ = yaml.safe_load_all(COMPILED.read_text())
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    stage = {name: _stage_of(spec, task) for name, task in tasks.items()}
    needs = {stage[name]: {stage[d] for d in task.get("dependentTasks", [])} for name, task in tasks.items()}
    assert list(needs) == list(stage.values()) and set(needs) == {"begin", *cycle.STAGES}  # one task per stage
    assert needs["begin"] == set()
    for name, declared in cycle.NEEDS.items():
        # every task but the ParallelFor takes the cycle number from `begin`
        assert needs[name] - {"begin"} == set(declared), f"{name}: the graph needs {needs[name]}, cycle.py {declared}"
    for member, plan in cycle.FAN_OUT.items():  # a ParallelFor over the plan's list
        loop = next(t for n, t in tasks.items() if stage[n] == member)
        plan_task = next(n for n in tasks if stage[n] == plan)
        assert loop["parameterIterator"]["items"]["inputParameter"] == f"pipelinechannel--{plan_task}-Output"


@pytest.mark.parametrize("decision", ["deploy", "reject"])
def test_run_in_process_runs_the_declared_order(monkeypatch, decision):
    def fake(name):
        def run(cfg, ws, n, **kwargs):
            assert n == 3
            if name == "reward_plan":
                return ["3/helpfulness/0", "3/helpfulness/1"]
            return {"decision": decision} if name == "gate" else {"stage": name, **kwargs}

        return run

    monkeypatch.setattr(cycle, "begin", lambda cfg, ws: {"cycle": 3})
    for name in cycle.STAGES:
        monkeypatch.setitem(cycle.STAGES, name, fake(name))
    ran = []
    out = cycle.run_in_process(None, None, on_stage=lambda name, seconds: ran.append(name))
    members = ["reward_member", "reward_member"]
    expected = ["begin", "collect", "annotate", "version_data", "reward_plan", *members, "reward_finish", "prm"]
    expected += ["policy", "offline", "evaluate", "gate"] + (["deploy_canary"] if decision == "deploy" else [])
    assert ran == expected
    for i, name in enumerate(ran[1:], 1):
        assert set(cycle.NEEDS[name]) <= set(ran[:i]), name
    assert out["cycle"] == 3 and list(out["results"]) == list(dict.fromkeys(expected))
    assert [r["spec"] for r in out["results"]["reward_member"]] == ["3/helpfulness/0", "3/helpfulness/1"]


def test_declared_order_runs_every_need_first():
    seen: set[str] = set()
    for name, needs in cycle.NEEDS.items():
        assert set(needs) <= seen, f"{name} needs {set(needs) - seen}, declared after it"
        seen.add(name)
    assert all(plan in cycle.NEEDS[member] for member, plan in cycle.FAN_OUT.items())


def test_gpu_settings_come_from_the_config(tmp_path):
    cfg = load_config(None, ["pipeline.accelerator_limit=0"])
    spec, platform = yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "cpu.yaml").read_text())
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "accelerator" not in executor["container"].get("resources", {})


class FakeClient:
    def __init__(self, existing: str | None = None):
        self.existing, self.calls = existing, []

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", name))
        return self.existing

    def upload_pipeline(self, package, pipeline_name, description):
        self.calls.append(("upload_pipeline", pipeline_name))
        return SimpleNamespace(pipeline_id="p-1")

    def upload_pipeline_version(self, package, pipeline_version_name, pipeline_id):
        self.calls.append(("upload_pipeline_version", pipeline_id))
        return SimpleNamespace(pipeline_version_id="v-1")

    def create_experiment(self, name):
        self.calls.append(("create_experiment", name))
        return SimpleNamespace(experiment_id="e-1")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("create_recurring_run", kwargs))
        return SimpleNamespace(recurring_run_id="r-1")


@pytest.mark.parametrize("existing", [None, "p-0"])
def test_schedule_uploads_a_pipeline_or_a_version_and_creates_one_recurring_run(existing):
    client = FakeClient(existing)
    params = {"workspace": "/workspace", "config": "tiny", "overrides": []}
    done = schedule(client, COMPILED, "0 0 2 * * 0", params=params, version_name="v-test")
    names = [c[0] for c in client.calls]
    pipeline_id = existing or "p-1"
    assert ("upload_pipeline" in names) == (existing is None)
    run = client.calls[-1][1]
    assert run == {
        "experiment_id": "e-1",
        "job_name": "rlhfops-weekly-cycle",
        "cron_expression": "0 0 2 * * 0",
        "max_concurrency": 1,
        "no_catchup": True,
        "params": params,
        "pipeline_id": pipeline_id,
        "version_id": "v-1",
        "service_account": None,
    }
    assert done.recurring_run_id == "r-1" and done.pipeline_id == pipeline_id


def test_schedule_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="6 fields"):
        check_cron("0 2 * * 0")
    with pytest.raises(FileNotFoundError, match="rlhfops compile"):
        schedule(FakeClient(), tmp_path / "missing.yaml", "0 0 2 * * 0")


def test_progress_stream_reports_each_finished_stage_once():
    seen = []
    log = io.StringIO()
    stream = ProgressStream(log, lambda name, state, seconds: seen.append((name, state)))
    stream.write("11:00:00.0 - INFO - Executing task \x1b[96m'collect'\x1b[0m\nnoise\n")
    stream.write("11:00:01.0 - INFO - Task 'collect' finished with status \x1b[92mSUCCESS\x1b[0m\n")
    stream.write("11:00:01.0 - INFO - Task 'collect' finished with status SUCCESS\n")  # no start of its own
    stream.write("11:00:02.0 - ERROR - Pipeline 'p' finished with status FAILURE. Inner task failed: 'gate'.\n")
    assert seen == [("collect", "SUCCESS")]
    assert stream.status == "FAILURE" and "Inner task failed: 'gate'" in stream.failure
    assert "noise" in log.getvalue()


def test_schedule_runs_in_the_namespace_and_account_the_manifests_prepare(monkeypatch, tmp_path):
    """`rlhfops schedule --config cluster` creates runs where the PVC, Secrets and Roles are
    (pipeline.namespace), as the ServiceAccount the Roles are bound to, reading the same config."""
    import kfp
    from typer.testing import CliRunner

    from rlhfops.cli import app

    made = {}

    class Client(FakeClient):
        def __init__(self, host, namespace=None, existing_token=None):
            super().__init__()
            made.update(host=host, namespace=namespace, client=self)

    monkeypatch.setattr(kfp, "Client", Client)
    package = tmp_path / "p.yaml"
    package.write_text(COMPILED.read_text())
    r = CliRunner().invoke(app, ["schedule", "--host", "http://kfp", "--config", "cluster", "--package", str(package)])
    assert r.exit_code == 0, r.output
    cfg = load_config("cluster")
    run = made["client"].calls[-1][1]
    assert made["namespace"] == cfg.pipeline.namespace == "rlhfops"
    assert run["service_account"] == cfg.pipeline.service_account == "rlhfops-pipeline"
    assert run["params"] == {"workspace": "/workspace", "config": "cluster", "overrides": []}
    rbac = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text()))
    subjects = {(s["name"], s["namespace"]) for d in rbac if d["kind"] == "RoleBinding" for s in d["subjects"]}
    assert subjects == {(run["service_account"], made["namespace"])}
