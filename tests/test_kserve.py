import copy

import pytest

from rlhfops.config import KServeConfig, load_config
from rlhfops.serving import kserve


class FakeCustomObjectsApi:
    """Records calls and applies JSON merge patches (RFC 7386) to one stored object; with `obj` None
    the service does not exist (404) until created, and becomes Ready after `ready_after` reads."""

    def __init__(self, obj, ready_after=0):
        self.obj = copy.deepcopy(obj)
        self.patches = []
        self.created = []
        self.reads = 0
        self.ready_after = ready_after

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from kubernetes.client.exceptions import ApiException

        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")
        if self.obj is None:
            raise ApiException(status=404, reason="Not Found")
        assert (namespace, name) == (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"])
        self.reads += 1
        if self.created and self.reads > self.ready_after:
            self.obj.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True"}]
        return copy.deepcopy(self.obj)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural, namespace) == ("serving.kserve.io", "v1beta1", "inferenceservices", "ns")
        assert self.obj is None
        self.created.append(copy.deepcopy(body))
        self.obj = copy.deepcopy(body)
        return body

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
    assert api.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    kserve.rollback(api, "pol", "ns")  # already rolled back: the same patch again
    kserve.deploy_canary(api, "pol", "ns", "pvc://ws/models/v3", percent=10)
    kserve.promote(api, "pol", "ns")
    assert api.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    with pytest.raises(ValueError, match="no canary to roll back"):
        kserve.rollback(api, "pol", "ns")
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
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0  # the last rolled-out revision serves
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


def _template(obj):
    """What KServe copies into the Knative revision template: the annotations and the predictor
    without canaryTrafficPercent; a change here starts a new (cold) revision."""
    predictor = {k: v for k, v in obj["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
    return obj["metadata"].get("annotations"), predictor


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_promote_and_rollback_only_move_traffic(action):
    """Promotion shifts traffic to the canary's revision, already warm, and rollback back to the last
    rolled-out one: neither may touch the revision template."""
    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns"])
    api = FakeCustomObjectsApi(kserve.render_inference_service(cfg.kserve, "pvc://rlhfops-workspace/models/v1"))
    kserve.apply(cfg, "canary", {"id": "v2", "path": "/workspace/models/cycle-0001/ppo"}, api=api)
    before = _template(api.obj)
    kserve.apply(cfg, action, api=api)
    assert _template(api.obj) == before
    assert api.obj["spec"]["predictor"].get("canaryTrafficPercent") == (None if action == "promote" else 0)


def test_a_changed_annotation_on_promotion_is_caught():
    """The check above fails on the old promote patch, which deleted an annotation."""
    obj = kserve.render_inference_service(KServeConfig(), "pvc://w/m")
    obj["metadata"]["annotations"][kserve.PREVIOUS_URI] = "pvc://w/old"
    old_promote = {"metadata": {"annotations": {kserve.PREVIOUS_URI: None}}, "spec": {"predictor": {}}}
    assert _template(merge_patch(obj, old_promote)) != _template(obj)


def test_render_is_serverless_least_privilege_and_restricted():
    from rlhfops.images import RUN_AS_USER

    cfg = KServeConfig(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    obj = kserve.render_inference_service(cfg, "pvc://w/m")
    assert obj["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Serverless"}
    predictor = obj["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "rlhfops-predictor" and predictor["automountServiceAccountToken"] is False
    assert "securityContext" not in predictor  # Knative refuses pod-level fields unless a feature flag is on
    assert predictor["model"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert predictor["tolerations"] == cfg.tolerations
    assert "runAsUser" not in predictor["model"]["securityContext"]  # KServe's image keeps its own user
    own = kserve.render_inference_service(KServeConfig(runtime="rlhfops"), "pvc://w/m")["spec"]["predictor"]
    assert own["model"]["securityContext"]["runAsUser"] == RUN_AS_USER
    assert own["model"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_first_canary_creates_the_service_on_stable_and_waits_for_it():
    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns", "kserve.ready_timeout_s=60"])
    api = FakeCustomObjectsApi(None, ready_after=3)
    naps = []
    stable = {"id": "v1", "path": "/workspace/models/sft"}
    kserve.apply(
        cfg,
        "canary",
        {"id": "v2", "path": "/workspace/models/cycle-0001/ppo"},
        api=api,
        stable=stable,
        sleep=naps.append,
    )
    (created,) = api.created
    assert created["spec"]["predictor"]["model"]["storageUri"] == "pvc://rlhfops-workspace/models/sft"
    assert "canaryTrafficPercent" not in created["spec"]["predictor"]  # the first revision takes it all
    assert naps == [cfg.kserve.poll_s] * 3  # polled until Ready before the canary patch
    (patch,) = api.patches
    assert patch["spec"]["predictor"] == {
        "canaryTrafficPercent": 10,
        "model": {"storageUri": "pvc://rlhfops-workspace/models/cycle-0001/ppo"},
    }
    with pytest.raises(ValueError, match="does not exist; the first canary deploy creates it"):
        kserve.apply(cfg, "canary", {"id": "v2", "path": "/workspace/m"}, api=FakeCustomObjectsApi(None))


def test_a_first_revision_that_never_gets_ready_is_one_error():
    from rlhfops.kube import KubeError

    cfg = load_config(None, ["kserve.name=pol", "kserve.namespace=ns", "kserve.ready_timeout_s=30"])
    api = FakeCustomObjectsApi(None, ready_after=10**6)
    clock = iter(range(0, 10**6, 10))
    with pytest.raises(KubeError, match="was not Ready within 30 s"):
        kserve.create(api, cfg.kserve, "pvc://w/m", sleep=lambda s: None, clock=lambda: next(clock))
    assert not api.patches
