"""The kustomize output (what a cluster gets) validates: built-in kinds with kubernetes-validate
(strict), the KServe kinds through the kserve SDK models; RBAC grants only the listed calls."""

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from rlhfops.config import KServeConfig
from rlhfops.serving import kserve

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
TARGETS = ["base", "overlays/local", "overlays/gpu"]
# Every API call rlhfops makes with its ServiceAccount (manifests/base/rbac.yaml lists where).
ALLOWED = {
    ("serving.kserve.io", "inferenceservices"): {"get", "patch"},
    ("trainer.kubeflow.org", "trainjobs"): {"create", "get"},
}

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None and not os.environ.get("CI"),
    reason="kubectl (with its built-in kustomize) is not installed; CI installs it",
)


def build(target: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / target)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(target):
    docs = build(target)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "InferenceService"} <= kinds
    for d in docs:
        if d["apiVersion"].startswith("serving.kserve.io/"):
            if d["kind"] == "InferenceService":
                assert kserve.from_sdk(kserve.to_sdk(d)) == d
            else:
                assert kserve.from_sdk(kserve.to_sdk(d, "V1alpha1ServingRuntime")) == d
        else:
            kubernetes_validate.validate(d, latest_version(), strict=True)
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "rlhfops"


@needs_kubectl
def test_base_inference_service_is_the_rendered_one():
    (isvc,) = [d for d in build("base") if d["kind"] == "InferenceService"]
    assert isvc == kserve.render_inference_service(KServeConfig())


@needs_kubectl
def test_gpu_overlay_uses_vllm_on_a_gpu():
    (isvc,) = [d for d in build("overlays/gpu") if d["kind"] == "InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert "--backend=vllm" in model["args"] and model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (pvc,) = [d for d in build("overlays/local") if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "standard"


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_rbac_grants_nothing_beyond_the_listed_calls(target):
    docs = build(target)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == ALLOWED
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rlhfops", "namespace": "rlhfops"}]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_pod_security(target):
    docs = build(target)
    containers = [d["spec"]["predictor"]["model"] for d in docs if d["kind"] == "InferenceService"]
    containers += [c for d in docs if d["kind"] == "ServingRuntime" for c in d["spec"]["containers"]]
    for c in containers:
        sec = c["securityContext"]
        assert sec["runAsNonRoot"] is True and sec["allowPrivilegeEscalation"] is False
        assert sec["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]
    (runtime,) = [d for d in docs if d["kind"] == "ServingRuntime"]
    assert runtime["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("path", sorted((MANIFESTS / "secrets").glob("*.yaml")))
def test_secret_templates_hold_no_values(path):
    secret = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(secret, latest_version(), strict=True)
    assert secret["kind"] == "Secret" and "data" not in secret
    assert secret["stringData"] and all(v == "" for v in secret["stringData"].values())
