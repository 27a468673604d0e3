"""KServe control: render the InferenceService and move traffic between model versions.

    deploy_canary  merge-patch spec.predictor.canaryTrafficPercent = percent and the new
                   spec.predictor.model.storageUri; the URI being replaced is kept in the
                   annotation `rlhfops.io/previous-storage-uri` so a rollback can restore it
    promote        remove canaryTrafficPercent (JSON merge patch: null deletes): the latest
                   revision takes 100%
    rollback       canaryTrafficPercent = 0 and the previous storageUri back: the last rolled-out
                   revision keeps 100%
    status         the split from status.components.predictor.traffic

`apply(cfg, action, version)` is the one entry point the cycle and the CLI use: it reaches the
cluster (`rlhfops.kube`) and names the model by `storage_uri`.

Runtimes: `huggingface` is KServe's Hugging Face server with its transformers backend (CPU),
`vllm` the same server with its vLLM backend on GPU nodes, `rlhfops` this project's server image
through the `rlhfops` ServingRuntime in manifests/base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfops.config import Config, KServeConfig

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
PREVIOUS_URI = "rlhfops.io/previous-storage-uri"
ACTIONS = ("canary", "promote", "rollback")


def container_security() -> dict[str, Any]:
    """The pod-security settings every container we run gets (restricted profile)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def render_inference_service(cfg: KServeConfig, storage_uri: str | None = None) -> dict[str, Any]:
    """The InferenceService `kserve.*` describes, serving `storage_uri` (default kserve.storage_uri)."""
    resources: dict[str, Any] = {
        "requests": {"cpu": cfg.cpu, "memory": cfg.memory},
        "limits": {"cpu": cfg.cpu, "memory": cfg.memory},
    }
    if cfg.gpus:
        resources["requests"]["nvidia.com/gpu"] = str(cfg.gpus)
        resources["limits"]["nvidia.com/gpu"] = str(cfg.gpus)
    model: dict[str, Any] = {
        "name": "kserve-container",  # KServe's own name for it; the SDK model requires one
        "storageUri": storage_uri or cfg.storage_uri,
        "resources": resources,
        "securityContext": container_security(),
    }
    if cfg.runtime == "huggingface":
        model["modelFormat"] = {"name": "huggingface"}
        model["args"] = [f"--model_name={cfg.name}", "--backend=huggingface", "--dtype=float32"]
    elif cfg.runtime == "vllm":
        model["modelFormat"] = {"name": "huggingface"}
        model["args"] = [f"--model_name={cfg.name}", "--backend=vllm"]
    elif cfg.runtime == "rlhfops":
        model["modelFormat"] = {"name": "rlhfops"}
        model["runtime"] = "rlhfops"
        model["securityContext"] = {**container_security(), "readOnlyRootFilesystem": True}
    else:
        raise ValueError(f"unknown kserve.runtime '{cfg.runtime}'; expected huggingface, vllm or rlhfops")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": cfg.name, "namespace": cfg.namespace, "labels": {"app.kubernetes.io/part-of": "rlhfops"}},
        "spec": {"predictor": {"serviceAccountName": cfg.service_account, "model": model}},
    }


def to_sdk(obj: dict[str, Any], kind: str = "V1beta1InferenceService") -> Any:
    """The dict as a kserve SDK model (`kind`, an InferenceService by default). The kserve
    deserializer looks types up in `kserve.models` only; Kubernetes types (V1ObjectMeta,
    V1Container, ...) come from `kubernetes.client.models`. Specs only: the SDK lacks the Knative
    types an InferenceService `status` holds."""
    import kserve
    from kubernetes.client import models as k8s_models

    class Client(kserve.ApiClient):
        def _ApiClient__deserialize(self, data: Any, klass: Any) -> Any:
            if isinstance(klass, str) and not hasattr(kserve.models, klass) and hasattr(k8s_models, klass):
                klass = getattr(k8s_models, klass)
            return super()._ApiClient__deserialize(data, klass)

    class Response:  # ApiClient.deserialize reads `.data` as JSON text
        data = json.dumps(obj)

    return Client().deserialize(Response(), kind)


def from_sdk(isvc: Any) -> dict[str, Any]:
    from kserve import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def _get(api: Any, name: str, namespace: str) -> dict[str, Any]:
    return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _patch(api: Any, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    # CustomObjectsApi sends a dict body as application/merge-patch+json
    return api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)


def canary_patch(storage_uri: str, previous_uri: str, percent: int) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {PREVIOUS_URI: previous_uri}},
        "spec": {"predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": storage_uri}}},
    }


def promote_patch() -> dict[str, Any]:
    return {"metadata": {"annotations": {PREVIOUS_URI: None}}, "spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch(previous_uri: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {PREVIOUS_URI: None}},
        "spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": previous_uri}}},
    }


def deploy_canary(api: Any, name: str, namespace: str, storage_uri: str, percent: int = 10) -> dict[str, Any]:
    """Send `percent`% of traffic to the model at `storage_uri`; `api` is a kubernetes
    `CustomObjectsApi` (or anything with its get/patch methods)."""
    if not 0 < percent < 100:
        raise ValueError(f"a canary takes between 1 and 99 percent of traffic, got {percent}")
    current = _get(api, name, namespace)
    predictor = current.get("spec", {}).get("predictor", {})
    if predictor.get("canaryTrafficPercent") not in (None, 0, 100) and PREVIOUS_URI in current["metadata"].get(
        "annotations", {}
    ):
        raise ValueError(f"InferenceService '{name}' already has a canary; promote or roll it back first")
    previous = predictor.get("model", {}).get("storageUri")
    if not previous:
        raise ValueError(f"InferenceService '{name}' has no spec.predictor.model.storageUri to replace")
    return _patch(api, name, namespace, canary_patch(storage_uri, previous, percent))


def promote(api: Any, name: str, namespace: str) -> dict[str, Any]:
    """The canary takes all traffic."""
    return _patch(api, name, namespace, promote_patch())


def rollback(api: Any, name: str, namespace: str) -> dict[str, Any]:
    """All traffic back to the previous model."""
    current = _get(api, name, namespace)
    previous = current["metadata"].get("annotations", {}).get(PREVIOUS_URI)
    if not previous:
        raise ValueError(f"InferenceService '{name}' records no previous storageUri; there is no canary to roll back")
    return _patch(api, name, namespace, rollback_patch(previous))


def status(api: Any, name: str, namespace: str) -> dict[str, Any]:
    """Model URI, canary percent, readiness and the per-revision traffic split."""
    obj = _get(api, name, namespace)
    predictor = obj.get("spec", {}).get("predictor", {})
    st = obj.get("status", {})
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", []))
    traffic = [
        {
            "revision": t.get("revisionName"),
            "percent": t.get("percent", 0),
            "latest": bool(t.get("latestRevision")),
            "tag": t.get("tag"),
        }
        for t in st.get("components", {}).get("predictor", {}).get("traffic", [])
    ]
    return {
        "name": name,
        "namespace": namespace,
        "storage_uri": predictor.get("model", {}).get("storageUri"),
        "previous_storage_uri": obj.get("metadata", {}).get("annotations", {}).get(PREVIOUS_URI),
        "canary_percent": predictor.get("canaryTrafficPercent"),
        "ready": ready,
        "url": st.get("url"),
        "traffic": traffic,
    }


def storage_uri(cfg: Config, model_path: str | Path) -> str:
    """`pvc://<pipeline.pvc>/<path inside the workspace volume>` for a model directory under
    `pipeline.mount_path` (where every pipeline task mounts the workspace claim): the only place a
    model the loop trained is where KServe's storage initializer can read it."""
    mount = Path(cfg.pipeline.mount_path).resolve()
    path = Path(model_path).resolve()
    if not path.is_relative_to(mount):
        raise ValueError(
            f"model '{model_path}' is not on the workspace volume (under pipeline.mount_path '{mount}'), "
            f"so KServe cannot load it from pvc://{cfg.pipeline.pvc}"
        )
    return f"pvc://{cfg.pipeline.pvc}/{path.relative_to(mount).as_posix()}"


def apply(
    cfg: Config, action: str, version: dict[str, Any] | None = None, api: Any = None, uri: str | None = None
) -> dict[str, Any]:
    """The registry's canary step on the InferenceService `kserve.*` names: `canary` serves `version`
    (a registry record, at `storage_uri` of its path unless `uri` overrides it) to
    `kserve.canary_percent` of the traffic, `promote` gives the canary all of it, `rollback` returns
    it to the previous model. `api` defaults to the cluster's (`rlhfops.kube.custom_objects_api`).
    Returns the patched InferenceService."""
    from rlhfops.kube import api_errors, custom_objects_api

    if action not in ACTIONS:
        raise ValueError(f"unknown KServe action '{action}'; expected {', '.join(ACTIONS)}")
    if action == "canary" and version is None and uri is None:
        raise ValueError("a KServe canary needs the registry version to serve")
    if action == "canary" and uri is None:
        uri = storage_uri(cfg, version["path"])  # before touching the cluster
    kc = cfg.kserve
    api = api if api is not None else custom_objects_api()
    with api_errors(f"InferenceService {kc.namespace}/{kc.name}"):
        if action == "canary":
            return deploy_canary(api, kc.name, kc.namespace, uri, kc.canary_percent)
        if action == "promote":
            return promote(api, kc.name, kc.namespace)
        return rollback(api, kc.name, kc.namespace)


def read_status(cfg: Config, api: Any = None) -> dict[str, Any]:
    """`status` of the InferenceService `kserve.*` names, on the cluster's API by default."""
    from rlhfops.kube import api_errors, custom_objects_api

    kc = cfg.kserve
    api = api if api is not None else custom_objects_api()
    with api_errors(f"InferenceService {kc.namespace}/{kc.name}"):
        return status(api, kc.name, kc.namespace)
