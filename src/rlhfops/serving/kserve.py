"""KServe control: render the InferenceService and move traffic between model versions.

    create         the first canary deploy finds no InferenceService: it creates one serving the
                   stable model (Serverless mode: Knative revisions, the only mode where KServe
                   splits traffic) and waits until it is Ready, because KServe splits traffic only
                   once a revision has rolled out; nothing in manifests/ points at a model that
                   does not exist yet
    deploy_canary  merge-patch spec.predictor.canaryTrafficPercent = percent and the new
                   spec.predictor.model.storageUri (a new revision); the URI being replaced is
                   recorded in the annotation `rlhfops.io/previous-storage-uri`, changed only here
                   because KServe copies the service's annotations into the revision template
    promote        remove canaryTrafficPercent (JSON merge patch: null deletes): the canary's
                   revision, already warm, takes 100%; nothing else changes, so no new revision
    rollback       canaryTrafficPercent = 0: the last rolled-out revision keeps 100%, again without
                   a new revision (the next canary replaces the rejected storageUri)
    status         the split from status.components.predictor.traffic

`apply(cfg, action, version, stable=...)` is the one entry point the cycle and the CLI use: it
reaches the cluster (`rlhfops.kube`) and names every model by `storage_uri`.

Runtimes: `huggingface` is KServe's Hugging Face server with its transformers backend (CPU),
`vllm` the same server with its vLLM backend on GPU nodes, `rlhfops` this project's server image
through the `rlhfops` ServingRuntime in manifests/base. The predictor runs as `kserve.service_account`
(no API rights, no token) with the restricted `images.container_security`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfops.config import Config, KServeConfig
from rlhfops.images import RUN_AS_USER, container_security
from rlhfops.kube import KubeError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
PREVIOUS_URI = "rlhfops.io/previous-storage-uri"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
ACTIONS = ("canary", "promote", "rollback")


def render_inference_service(cfg: KServeConfig, storage_uri: str) -> dict[str, Any]:
    """The InferenceService `kserve.*` describes, serving the model at `storage_uri`."""
    resources: dict[str, Any] = {
        "requests": {"cpu": cfg.cpu, "memory": cfg.memory},
        "limits": {"cpu": cfg.cpu, "memory": cfg.memory},
    }
    if cfg.gpus:
        resources["requests"]["nvidia.com/gpu"] = str(cfg.gpus)
        resources["limits"]["nvidia.com/gpu"] = str(cfg.gpus)
    model: dict[str, Any] = {
        "name": "kserve-container",  # KServe's own name for it; the SDK model requires one
        "storageUri": storage_uri,
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
        model["securityContext"] = {**container_security(), "readOnlyRootFilesystem": True, "runAsUser": RUN_AS_USER}
    else:
        raise ValueError(f"unknown kserve.runtime '{cfg.runtime}'; expected huggingface, vllm or rlhfops")
    # No pod-level securityContext: Knative refuses one unless its `kubernetes.podspec-securitycontext`
    # feature is on, and the container's is enough for the restricted profile. No fsGroup either:
    # rlhfops.files leaves the models readable by every UID.
    predictor: dict[str, Any] = {
        "serviceAccountName": cfg.service_account,
        "automountServiceAccountToken": False,
        "model": model,
    }
    if cfg.tolerations:
        predictor["tolerations"] = [dict(t) for t in cfg.tolerations]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": cfg.name,
            "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": "rlhfops"},
            "annotations": {DEPLOYMENT_MODE: "Serverless"},
        },
        "spec": {"predictor": predictor},
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
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch() -> dict[str, Any]:
    return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def _canary_percent(obj: dict[str, Any]) -> int | None:
    return obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")


def deploy_canary(api: Any, name: str, namespace: str, storage_uri: str, percent: int = 10) -> dict[str, Any]:
    """Send `percent`% of traffic to the model at `storage_uri`; `api` is a kubernetes
    `CustomObjectsApi` (or anything with its get/patch methods)."""
    if not 0 < percent < 100:
        raise ValueError(f"a canary takes between 1 and 99 percent of traffic, got {percent}")
    current = _get(api, name, namespace)
    if _canary_percent(current) not in (None, 0, 100):
        raise ValueError(f"InferenceService '{name}' already has a canary; promote or roll it back first")
    previous = current.get("spec", {}).get("predictor", {}).get("model", {}).get("storageUri")
    if not previous:
        raise ValueError(f"InferenceService '{name}' has no spec.predictor.model.storageUri to replace")
    return _patch(api, name, namespace, canary_patch(storage_uri, previous, percent))


def promote(api: Any, name: str, namespace: str) -> dict[str, Any]:
    """The canary takes all traffic."""
    return _patch(api, name, namespace, promote_patch())


def rollback(api: Any, name: str, namespace: str) -> dict[str, Any]:
    """All traffic back to the last rolled-out revision (the previous model)."""
    if _canary_percent(_get(api, name, namespace)) in (None, 100):
        raise ValueError(f"InferenceService '{name}' has no canary to roll back")
    return _patch(api, name, namespace, rollback_patch())


def create(
    api: Any,
    cfg: KServeConfig,
    storage_uri: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Create the InferenceService serving `storage_uri` and wait until it is Ready."""
    api.create_namespaced_custom_object(
        GROUP, VERSION, cfg.namespace, PLURAL, render_inference_service(cfg, storage_uri)
    )
    deadline = clock() + cfg.ready_timeout_s
    while not (st := status(api, cfg.name, cfg.namespace))["ready"]:
        if clock() >= deadline:
            raise KubeError(
                f"InferenceService {cfg.namespace}/{cfg.name} was not Ready within {cfg.ready_timeout_s:g} s "
                f"of its creation (serving {storage_uri}); see `kubectl -n {cfg.namespace} describe isvc {cfg.name}`"
            )
        sleep(cfg.poll_s)
    return st


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
    `pipeline.mount_path` (where every pipeline task mounts the workspace claim): the one rule for
    the pipeline's deploy and `rlhfops deploy canary --kserve` alike, since a model the loop trained
    is only where KServe can read it on that volume."""
    mount = Path(cfg.pipeline.mount_path).resolve()
    path = Path(model_path).resolve()
    if not path.is_relative_to(mount):
        raise ValueError(
            f"model '{model_path}' is not on the workspace volume (under pipeline.mount_path '{mount}'), "
            f"so KServe cannot load it from pvc://{cfg.pipeline.pvc}"
        )
    return f"pvc://{cfg.pipeline.pvc}/{path.relative_to(mount).as_posix()}"


def apply(
    cfg: Config,
    action: str,
    version: dict[str, Any] | None = None,
    api: Any = None,
    uri: str | None = None,
    stable: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The registry's canary step on the InferenceService `kserve.*` names: `canary` serves `version`
    (a registry record, at `storage_uri` of its path unless `uri` overrides it) to
    `kserve.canary_percent` of the traffic, first creating the service on `stable` (the registry's
    stable record) when it does not exist yet; `promote` gives the canary all of it, `rollback`
    returns it to the previous model. `api` defaults to the cluster's
    (`rlhfops.kube.custom_objects_api`). Returns the patched InferenceService."""
    from rlhfops.kube import api_errors, custom_objects_api, not_found

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
            if not_found(lambda: _get(api, kc.name, kc.namespace)):
                if stable is None:
                    raise ValueError(
                        f"InferenceService {kc.namespace}/{kc.name} does not exist; the first canary deploy "
                        "creates it from the registry's stable version, which was not given"
                    )
                create(api, kc, storage_uri(cfg, stable["path"]), sleep=sleep)
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
