import copy

import pytest

from rlhfops.config import KServeConfig, load_config
from rlhfops.serving import kserve


class FakeCustomObjectsApi:
    """Records calls and applies JSON merge patches (RFC 7386) to one stored object."""

    def __init__(self, obj):
        self.obj = copy.deepcopy(obj)
        self.patches = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")
        assert (namespace, name) == (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"])
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.get_namespaced_custom_object(group, version, namespace, plural, name)
        self.patches.append(copy.deepcopy(body))
        self.obj = merge_patch(self.obj, body)
        return copy.deepcopy(self.obj)


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@pytest.mark.parametrize("runtime", ["huggingface", "vllm", "rlhfops"])
def test_render_round_trips_through_the_kserve_sdk(runtime):
    from kserve import V1beta1InferenceService

    cfg = KServeConfig(runtime=runtime, gpus=1 if runtime == "vllm" else 0)
    obj = kserve.render_inference_service(cfg, "pvc://ws/models/v3")
    sdk = kserve.to_sdk(obj)
    assert isinstance(sdk, V1beta1InferenceService)
    assert sdk.spec.predictor.model.storage_uri == "pvc://ws/models/v3"
    assert kserve.from_sdk(sdk) == obj
    sec = obj["spec"]["predictor"]["model"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["allowPrivilegeEscalation"] is False
    limits = obj["spec"]["predictor"]["model"]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (runtime == "vllm")


def test_deploy_promote_rollback_patch_bodies():
    cfg = KServeConfig(name="pol", namespace="ns")
    api = FakeCustomObjectsApi(kserve.render_inference_service(cfg, "pvc://ws/models/v1"))
    kserve.deploy_canary(api, "pol", "ns", "pvc://ws/models/v2", percent=10)
    assert api.patches[-1] == {
        "metadata": {"annotations": {"rlhfops.io/previous-storage-uri": "pvc://ws/models/v1"}},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "pvc://ws/models/v2"}}},
    }
    with pytest.raises(ValueError, match="already has a canary"):
        kserve.deploy_canary(api, "pol", "ns", "pvc://ws/models/v3")
    kserve.rollback(api, "pol", "ns")
    assert api.patches[-1] == {
        "metadata": {"annotations": {"rlhfops.io/previous-storage-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": "pvc://ws/models/v1"}}},
    }
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "pvc://ws/models/v1"
    with pytest.raises(ValueError, match="no canary to roll back"):
        kserve.rollback(api, "pol", "ns")
    kserve.deploy_canary(api, "pol", "ns", "pvc://ws/models/v3", percent=10)
    kserve.promote(api, "pol", "ns")
    assert api.patches[-1] == {
        "metadata": {"annotations": {"rlhfops.io/previous-storage-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "pvc://ws/models/v3"
    with pytest.raises(ValueError, match="between 1 and 99"):
        kserve.deploy_canary(api, "pol", "ns", "x", percent=0)


def test_status_reads_the_traffic_split():
    obj = kserve.render_inference_service(KServeConfig(name="pol", namespace="ns"), "pvc://ws/models/v2")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 10
    obj["status"] = {
        "url": "http://pol.ns.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "traffic": [
                    {"revisionName": "pol-predictor-00002", "percent": 10, "latestRevision": True, "tag": "latest"},
                    {"revisionName": "pol-predictor-00001", "percent": 90, "latestRevision": False, "tag": "prev"},
                ]
            }
        },
    }
    st = kserve.status(FakeCustomObjectsApi(obj), "pol", "ns")
    assert st["ready"] is True and st["canary_percent"] == 10 and st["storage_uri"] == "pvc://ws/models/v2"
    assert [(t["revision"], t["percent"], t["latest"]) for t in st["traffic"]] == [
        ("pol-predictor-00002", 10, True),
        ("pol-predictor-00001", 90, False),
    ]


def test_patches_go_out_as_merge_patch_through_the_real_client(monkeypatch):
    from kubernetes import client

    sent = {}

    def fake_request(method, url, **kwargs):
        sent.update(method=method, url=url, headers=kwargs.get("headers"), body=kwargs.get("body"))

        class R:
            status, reason, data = 200, "OK", b"{}"

            def getheaders(self):
                return {}

            def getheader(self, name, default=None):
                return default

        return R()

    api_client = client.ApiClient(client.Configuration(host="http://k8s.invalid"))
    monkeypatch.setattr(api_client, "request", fake_request)
    kserve.promote(client.CustomObjectsApi(api_client), "pol", "ns")
    assert sent["method"] == "PATCH"
    assert sent["url"].endswith("/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/pol")
    assert sent["headers"]["Content-Type"] == "application/merge-patch+json"
    assert sent["body"] == kserve.promote_patch()


def test_storage_uri_is_the_model_on_the_workspace_volume():
    cfg = load_config(None, ["pipeline.pvc=claim", "pipeline.mount_path=/workspace"])
    assert kserve.storage_uri(cfg, "/workspace/models/cycle-0002/ppo") == "pvc://claim/models/cycle-0002/ppo"
    with pytest.raises(ValueError, match=r"not on the workspace volume .*pvc://claim"):
        kserve.storage_uri(cfg, "/home/me/workspace/models/cycle-0002/ppo")


def test_apply_runs_canary_promote_rollback_on_the_configured_service():
    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns", "kserve.canary_percent=20"])
    api = FakeCustomObjectsApi(kserve.render_inference_service(cfg.kserve, "pvc://rlhfops-workspace/models/v1"))
    kserve.apply(cfg, "canary", {"id": "v2", "path": "/workspace/models/cycle-0001/ppo"}, api=api)
    predictor = api.obj["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"] == "pvc://rlhfops-workspace/models/cycle-0001/ppo"
    kserve.apply(cfg, "rollback", api=api)
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "pvc://rlhfops-workspace/models/v1"
    kserve.apply(cfg, "canary", {"id": "v3", "path": "/workspace/models/cycle-0002/ppo"}, api=api)
    kserve.apply(cfg, "promote", api=api)
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    with pytest.raises(ValueError, match="unknown KServe action 'scale'"):
        kserve.apply(cfg, "scale", api=api)
    with pytest.raises(ValueError, match="not on the workspace volume"):  # refused before the cluster is asked
        kserve.apply(cfg, "canary", {"id": "v4", "path": "/elsewhere/v4"}, api=None)


def test_apply_takes_an_explicit_storage_uri_and_reads_status_on_the_configured_service():
    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns"])
    api = FakeCustomObjectsApi(kserve.render_inference_service(cfg.kserve, "pvc://rlhfops-workspace/models/v1"))
    kserve.apply(cfg, "canary", {"id": "v2", "path": "/elsewhere/v2"}, api=api, uri="s3://bucket/v2")
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/v2"
    assert kserve.read_status(cfg, api=api)["storage_uri"] == "s3://bucket/v2"


def test_apply_turns_api_failures_into_one_sentence():
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    from rlhfops.kube import KubeError

    class Refusing:
        def __init__(self, error):
            self.error = error

        def patch_namespaced_custom_object(self, *args):
            raise self.error

    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns"])
    with pytest.raises(KubeError, match="refused the request on InferenceService ns/pol: 403 Forbidden"):
        kserve.apply(cfg, "promote", api=Refusing(ApiException(status=403, reason="Forbidden")))
    with pytest.raises(KubeError, match="cannot reach the Kubernetes API for InferenceService ns/pol"):
        kserve.apply(cfg, "promote", api=Refusing(MaxRetryError(None, "https://k8s.invalid")))


def test_no_credentials_is_one_clear_error(monkeypatch, tmp_path):
    from rlhfops import kube

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(kube.KubeError, match="no in-cluster or kubeconfig credentials"):
        kube.custom_objects_api()
