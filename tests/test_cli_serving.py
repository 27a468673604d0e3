import json

from typer.testing import CliRunner

from rlhfops.cli import app
from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
from rlhfops.serving.store import InteractionStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [*args])


def test_models_deploy_and_gate_locally(tmp_path):
    ws = str(tmp_path)
    reg = Registry(tmp_path)
    v1 = reg.register(tmp_path / "models" / "sft", metrics={"gold": 0.5}, stage="stable")
    v2 = reg.register(tmp_path / "models" / "ppo", parent=v1)
    r = run("models", "-w", ws, "--json")
    assert r.exit_code == 0 and [v["id"] for v in json.loads(r.stdout)] == [v1, v2]
    assert "candidate" in run("models", "-w", ws).stdout
    r = run("deploy", "canary", v2, "-w", ws, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"canary": v2} and reg.canary()["id"] == v2
    store = InteractionStore.for_workspace(tmp_path)
    for i in range(40):
        store.add_feedback(store.log("q", "a", v1, 5.0, "ok"), float(i % 2))
        store.add_feedback(store.log("q", "a", v2, 5.0, "ok"), 1.0)
    status = json.loads(run("deploy", "status", "-w", ws, "--json", "--set", "gate.min_samples=40").stdout)
    assert status["stable"] == v1 and status["canary"] == v2 and status["gate"]["decision"] == "promote"
    r = run("deploy", "gate", "-w", ws, "--json", "--apply", "--set", "gate.min_samples=40")
    assert r.exit_code == 0 and json.loads(r.stdout)["decision"] == "promote"
    assert reg.stable()["id"] == v2 and reg.get(v2)["decisions"][-1]["decision"] == "promote"
    r = run("deploy", "rollback", "-w", ws)
    assert r.exit_code == 2 and "no canary version to roll back" in r.stderr


def test_clear_errors(tmp_path):
    r = run("deploy", "canary", "v5", "-w", str(tmp_path))
    assert r.exit_code == 2 and "no model version 'v5'" in r.stderr
    r = run("simulate-traffic", "-w", str(tmp_path), "-n", "3")
    assert r.exit_code == 2 and "has no stable version" in r.stderr
    r = run("deploy", "promote", "-w", str(tmp_path))
    assert r.exit_code == 2 and "no canary version to promote" in r.stderr


def test_simulate_traffic_command(tmp_path):
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    Registry(tmp_path).register(path, stage="stable")
    r = run(
        "simulate-traffic", "-c", "smoke", "-w", str(tmp_path), "-n", "20", "--json", "--set", "simulate.max_tokens=8"
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["errors"] == 0 and out["versions"]["v1"]["requests"] == 20
    assert InteractionStore.for_workspace(tmp_path).count("v1") == 20


class FakeInferenceServices:
    """The CustomObjectsApi calls KServe control makes, on one stored InferenceService."""

    def __init__(self, obj):
        self.obj, self.patches, self.refuse = obj, [], None

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return json.loads(json.dumps(self.obj))

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        if self.refuse is not None:
            raise self.refuse
        self.patches.append(body)
        return self.get_namespaced_custom_object(group, version, namespace, plural, name)


def test_deploy_on_kserve_goes_through_kserve_apply(tmp_path, monkeypatch):
    """The canary's storage URI is the pvc:// URI the pipeline uses (not a local path), and an API
    refusal is one error line."""
    from kubernetes.client.exceptions import ApiException

    import rlhfops.kube
    from rlhfops.serving import kserve

    on_volume = f"pipeline.mount_path={tmp_path}"
    cfg = load_config(None, [on_volume])
    reg = Registry(tmp_path)
    v1 = reg.register(tmp_path / "models" / "sft", stage="stable")
    v2 = reg.register(tmp_path / "models" / "ppo", parent=v1)
    api = FakeInferenceServices(kserve.render_inference_service(cfg.kserve, f"pvc://{cfg.pipeline.pvc}/models/sft"))
    monkeypatch.setattr(rlhfops.kube, "custom_objects_api", lambda: api)
    r = run("deploy", "canary", v2, "-w", str(tmp_path), "--kserve", "--json", "--set", on_volume)
    assert r.exit_code == 0, r.stderr
    (patch,) = api.patches
    assert patch["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{cfg.pipeline.pvc}/models/ppo"
    api.refuse = ApiException(status=403, reason="Forbidden")
    r = run("deploy", "promote", "-w", str(tmp_path), "--kserve")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: the Kubernetes API refused the request on InferenceService "
        f"{cfg.kserve.namespace}/{cfg.kserve.name}: 403 Forbidden"
    ]


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    """Kubernetes stops a pod with SIGTERM: `rlhfops serve` drains and exits 0, not killed mid-request."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    cfg = load_config("smoke")
    model_dir = save_policy(*reversed(init_policy(cfg)), cfg, tmp_path / "m")
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfops.cli", "serve", "-c", "smoke", "-w", str(tmp_path), "--model", str(model_dir),
         "--port", "0", "--version", "v1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        text = proc.stdout.readline()
        while not text.rstrip().endswith("}") or text.count("{") != text.count("}"):  # the JSON, maybe indented
            text += proc.stdout.readline()
        url = json.loads(text)["server"]
        assert not url.endswith(f":{cfg.serving.stable_port}")  # --port 0: a free port, not the default
        assert httpx.get(url + "/health", timeout=30).json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
