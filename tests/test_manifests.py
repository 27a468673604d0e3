"""The cluster path as shipped: the kustomize output (what a cluster gets), the compiled pipeline
(what KFP runs), the custom objects rlhfops creates at run time (InferenceService, TrainJob) and
the config agree with each other and with the upstream schemas.

- Built-in kinds validate with kubernetes-validate (strict); InferenceService, ServingRuntime and
  TrainJob against the upstream CRDs in tests/fixtures/crds/ (strict: an unknown field fails, as
  `kubectl apply --validate=strict` would).
- Consistency checks (`problems`): Secret keys used vs defined, namespace / ServiceAccount / PVC /
  RBAC, access modes, pinned images, cache off for side-effect tasks, restricted pod security on
  every pod spec. Each check runs on the shipped world (no problems) and on deliberately broken
  copies of it (the problem is found).
"""

import copy
import gzip
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes_validate.utils import latest_version

from rlhfops import __version__, trainer_job
from rlhfops.config import load_config
from rlhfops.images import DEFAULT_REGISTRY, RUN_AS_USER, image_ref
from rlhfops.pipeline import COMPILED
from rlhfops.pipeline.graph import SIDE_EFFECTS
from rlhfops.serving import kserve

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
CRDS = Path(__file__).parent / "fixtures" / "crds"
TARGETS = ["base", "overlays/local", "overlays/gpu"]
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml.gz",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml.gz",
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml.gz",
}
# What Kubeflow Pipelines' own code calls inside a run's pods (manifests/base/rbac.yaml says where).
KFP_RUNTIME = {
    ("", "pods", None): {"get"},
    ("", "configmaps", "kfp-launcher"): {"get"},
    ("", "secrets", "mlpipeline-minio-artifact"): {"get"},
    ("argoproj.io", "workflowtaskresults", None): {"create", "patch"},
}

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None and not os.environ.get("CI"),
    reason="kubectl (with its built-in kustomize) is not installed; CI installs it",
)


@cache
def _build(target: str) -> tuple:
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / target)], capture_output=True, text=True, check=True)
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def build(target: str) -> list[dict]:
    return copy.deepcopy(list(_build(target)))


# ---- schemas --------------------------------------------------------------------------------------


def _strict(node):
    """A CRD's structural schema as JSON Schema that refuses unknown fields (the API server prunes
    them; `--validate=strict` refuses them), except where the CRD preserves them."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def crd_validator(kind: str, version: str):
    with gzip.open(CRDS / CRD_FILES[kind]) as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server itself
    return jsonschema.Draft7Validator(schema)


def validate(doc: dict) -> None:
    """kubernetes-validate (strict) for built-in kinds; the upstream CRD for the custom ones."""
    if doc["kind"] in CRD_FILES:
        errors = sorted(crd_validator(doc["kind"], doc["apiVersion"].split("/")[1]).iter_errors(doc), key=str)
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
    else:
        kubernetes_validate.validate(doc, latest_version(), strict=True)


def cluster_objects(cfg) -> list[dict]:
    """The custom objects rlhfops creates at run time: the InferenceService (every runtime) and a TrainJob."""
    objs = [
        kserve.render_inference_service(cfg.kserve.model_copy(update={"runtime": r}), "pvc://rlhfops-workspace/m")
        for r in ("huggingface", "vllm", "rlhfops")
    ]
    return objs + [trainer_job.build_trainjob(cfg, "rlhfops-train-policy-c1-abcdef", ["train-policy"])]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(target):
    docs = build(target)
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "ServingRuntime"} <= {
        d["kind"] for d in docs
    }
    for d in docs:
        validate(d)


@pytest.mark.parametrize("config", ["tiny", "cluster"])
def test_the_custom_objects_rlhfops_creates_validate_against_the_upstream_crds(config):
    for obj in cluster_objects(load_config(config)):
        validate(obj)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda o: o["spec"]["predictor"].update(canaryPercent=10),  # a misspelt field
        lambda o: o["spec"]["predictor"]["model"].update(storageUri=3),  # a wrong type
        lambda o: o["spec"]["predictor"]["model"]["securityContext"].update(runAsUser="10001"),
    ],
)
def test_crd_validation_refuses_a_broken_object(break_it):
    obj = kserve.render_inference_service(load_config(None).kserve, "pvc://w/m")
    break_it(obj)
    with pytest.raises(AssertionError, match="InferenceService"):
        validate(obj)
    job = trainer_job.build_trainjob(load_config(None), "j", ["train-policy"])
    job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["replicas"] = 2
    with pytest.raises(AssertionError, match="TrainJob"):
        validate(job)


# ---- the world the checks read ---------------------------------------------------------------------


def _compiled() -> dict:
    spec, platform = yaml.safe_load_all((ROOT / COMPILED).read_text())
    return {"spec": spec, "executors": platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]}


def world(target: str = "base") -> dict:
    cfg = load_config("cluster")
    return {
        "docs": build(target),
        "secrets": [yaml.safe_load(p.read_text()) for p in sorted((MANIFESTS / "secrets").glob("*.yaml"))],
        "cfg": cfg,
        "pipeline": _compiled(),
        "objects": cluster_objects(cfg),
    }


def _of(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def _secret_refs(w) -> set[tuple[str, str, bool]]:
    """(secret, key, optional) of every Secret reference a pod we run makes."""
    refs = set()
    for executor in w["pipeline"]["executors"].values():
        for s in executor.get("secretAsEnv", []):
            refs |= {(s["secretName"], e["secretKey"], bool(s.get("optional"))) for e in s["keyToEnv"]}
    for job in _of(w["objects"], "TrainJob"):
        for e in job["spec"]["trainer"]["env"]:
            ref = e["valueFrom"]["secretKeyRef"]
            refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
    for runtime in _of(w["docs"], "ServingRuntime"):
        for container in runtime["spec"]["containers"]:
            for e in container.get("env", []):
                if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                    refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
    return refs


def check_secrets(w) -> list[str]:
    defined = {(s["metadata"]["name"], k) for s in w["secrets"] for k in s["stringData"]}
    out = [
        f"Secret {name} key {key} is used but manifests/secrets/ does not define it"
        for name, key, optional in sorted(_secret_refs(w))
        if (name, key) not in defined
    ]
    used = {(name, key) for name, key, _ in _secret_refs(w)}
    out += [f"Secret {n} key {k} is defined but no pod reads it" for n, k in sorted(defined - used)]
    # with tracking offline no one creates the W&B Secret: a pod must start without it
    out += [f"Secret {n} key {k} is mandatory" for n, k, opt in _secret_refs(w) if n == "rlhfops-secrets" and not opt]
    if not any(key == "AWS_ENDPOINT_URL" for _, key, _ in _secret_refs(w)):
        out.append("AWS_ENDPOINT_URL is never injected")
    env = {e["name"] for r in _of(w["docs"], "ServingRuntime") for c in r["spec"]["containers"] for e in c["env"]}
    if w["cfg"].serving.api_key_env not in env:
        out.append(f"the serving runtime never sets {w['cfg'].serving.api_key_env}, the API key it checks")
    return out


def check_identity(w) -> list[str]:
    """Runs, volume, Secrets, Roles and the served model in one namespace, with the right identities."""
    cfg, docs = w["cfg"], w["docs"]
    ns = cfg.pipeline.namespace
    out = []
    if [d["metadata"]["name"] for d in _of(docs, "Namespace")] != [ns]:
        out.append(f"manifests do not create the runs' namespace {ns}")
    for d in docs + w["secrets"] + w["objects"]:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns:
            out.append(f"{d['kind']} {d['metadata']['name']} is in {d['metadata'].get('namespace')}, not {ns}")
    accounts = {d["metadata"]["name"]: d for d in _of(docs, "ServiceAccount")}
    for sa in (cfg.pipeline.service_account, cfg.kserve.service_account):
        if sa not in accounts:
            out.append(f"ServiceAccount {sa} is not in the manifests")
    predictor = accounts.get(cfg.kserve.service_account, {})
    if predictor.get("automountServiceAccountToken") is not False:
        out.append(f"the predictor's ServiceAccount {cfg.kserve.service_account} mounts a token")
    roles = {d["metadata"]["name"] for d in _of(docs, "Role")}
    for b in _of(docs, "RoleBinding"):
        if b["roleRef"]["name"] not in roles:
            out.append(f"RoleBinding {b['metadata']['name']} binds a Role that does not exist")
        for s in b["subjects"]:
            if (s["kind"], s["name"], s.get("namespace")) != ("ServiceAccount", cfg.pipeline.service_account, ns):
                out.append(f"RoleBinding {b['metadata']['name']} grants to {s['name']} in {s.get('namespace')}")
    bound = {b["roleRef"]["name"] for b in _of(docs, "RoleBinding")}
    out += [f"Role {r} is bound to no one" for r in sorted(roles - bound)]
    pvcs = [d["metadata"]["name"] for d in _of(docs, "PersistentVolumeClaim")]
    for what, claim in [
        ("pipeline.pvc", cfg.pipeline.pvc),
        ("trainer_job.workspace_claim", cfg.trainer_job.workspace_claim),
        *[(f"the compiled {n}", m["constant"]) for n, e in w["pipeline"]["executors"].items() for m in e["pvcMount"]],
    ]:
        if [claim] != pvcs:
            out.append(f"{what} mounts {claim}; the manifests hold {pvcs}")
    if cfg.trainer_job.namespace != ns or cfg.kserve.namespace != ns:
        out.append("trainer_job.namespace / kserve.namespace differ from pipeline.namespace")
    for isvc in _of(w["objects"], "InferenceService"):
        if isvc["spec"]["predictor"]["serviceAccountName"] != cfg.kserve.service_account:
            out.append("the InferenceService does not run as kserve.service_account")
    if not cfg.pipeline.kserve:
        out.append("the cluster config leaves pipeline.kserve off: the cycle never deploys")
    return out


def check_access_modes(w) -> list[str]:
    return [
        f"PVC {d['metadata']['name']} is {d['spec']['accessModes']}: pods on several nodes mount it"
        for d in _of(w["docs"], "PersistentVolumeClaim")
        if d["spec"]["accessModes"] != ["ReadWriteMany"]
    ]


def _images(w) -> list[tuple[str, str]]:
    found = [
        (f"compiled {n}", e["container"]["image"])
        for n, e in w["pipeline"]["spec"]["deploymentSpec"]["executors"].items()
    ]
    for d in w["docs"] + w["objects"]:
        text = yaml.safe_dump(d)
        found += [(f"{d['kind']} {d['metadata']['name']}", m) for m in re.findall(r"image: (\S+)", text)]
    return found


def check_images(w) -> list[str]:
    out = []
    for where, image in _images(w):
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            out.append(f"{where} runs {image}, not a pinned tag")
    runtime = {c["image"] for d in _of(w["docs"], "ServingRuntime") for c in d["spec"]["containers"]}
    if runtime != {image_ref("serving", DEFAULT_REGISTRY, __version__)}:
        out.append(f"the ServingRuntime runs {runtime}, not rlhfops.images' serving image")
    return out


def check_cache(w) -> list[str]:
    spec = w["pipeline"]["spec"]
    tasks = {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]}
    for name, comp in spec["components"].items():
        if name.startswith("comp-condition"):
            tasks.update(comp["dag"]["tasks"])
    missing = SIDE_EFFECTS - set(tasks)
    cached = [n for n in sorted(SIDE_EFFECTS & set(tasks)) if tasks[n].get("cachingOptions", {}).get("enableCache")]
    return [f"{n} is not in the compiled pipeline" for n in sorted(missing)] + [
        f"{n} has side effects but KFP may replay it from cache" for n in cached
    ]


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pod_specs(w) -> list[tuple[str, dict | None, list[dict]]]:
    """(name, pod securityContext, containers) of every pod spec the project defines."""
    pods = [
        (f"ServingRuntime {d['metadata']['name']}", None, d["spec"]["containers"])
        for d in _of(w["docs"], "ServingRuntime")
    ]
    for isvc in _of(w["objects"], "InferenceService"):
        p = isvc["spec"]["predictor"]
        pods.append(("InferenceService predictor", p.get("securityContext"), [p["model"]]))
    for job in _of(w["objects"], "TrainJob"):
        for patch in job["spec"]["runtimePatches"]:
            for rj in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                pod = rj["template"]["spec"]["template"]["spec"]
                pods.append((f"TrainJob {rj['name']}", pod.get("securityContext"), pod["containers"]))
    return pods


def check_pod_security(w) -> list[str]:
    out = []
    labels = {k: v for d in _of(w["docs"], "Namespace") for k, v in d["metadata"].get("labels", {}).items()}
    for mode in ("enforce", "warn", "audit"):
        if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted":
            out.append(f"the namespace does not {mode} the restricted Pod Security Standard")
    for name, pod, containers in _pod_specs(w):
        for c in containers:
            sec = {**(pod or {}), **c.get("securityContext", {})}
            if sec.get("runAsNonRoot") is not True or any(sec.get(k) != v for k, v in RESTRICTED.items()):
                out.append(f"{name} container {c['name']} is not restricted: {c.get('securityContext')}")
        if pod is not None and pod.get("fsGroup") != RUN_AS_USER:
            out.append(f"{name} sets no fsGroup {RUN_AS_USER}")
    for isvc in _of(w["objects"], "InferenceService"):
        if "securityContext" in isvc["spec"]["predictor"]:
            out.append("the predictor sets a pod securityContext, which Knative refuses by default")
    # KFP tasks: the pipeline sets the user; the KFP backend (>= 2.16) adds RESTRICTED to every pod
    for n, executor in w["pipeline"]["executors"].items():
        sec = executor.get("securityContext", {})
        if sec.get("runAsNonRoot") is not True or sec.get("runAsUser") != str(RUN_AS_USER):
            out.append(f"compiled {n} does not run as the non-root user {RUN_AS_USER}: {sec}")
    return out


def check_serving_runtime(w) -> list[str]:
    """A read-only root file system with a writable /tmp: an emptyDir mounted there."""
    out = []
    for d in _of(w["docs"], "ServingRuntime"):
        empty = {v["name"] for v in d["spec"].get("volumes", []) if "emptyDir" in v}
        for c in d["spec"]["containers"]:
            if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                out.append(f"ServingRuntime container {c['name']} has a writable root file system")
            if not any(m["mountPath"] == "/tmp" and m["name"] in empty for m in c.get("volumeMounts", [])):
                out.append(f"ServingRuntime container {c['name']} has no writable /tmp")
    return out


CHECKS = [
    check_secrets,
    check_identity,
    check_access_modes,
    check_images,
    check_cache,
    check_pod_security,
    check_serving_runtime,
]


def problems(w) -> list[str]:
    return [p for check in CHECKS for p in check(w)]


@needs_kubectl
@pytest.mark.parametrize("target", ["base", "overlays/gpu"])
def test_manifests_pipeline_and_config_agree(target):
    assert problems(world(target)) == []


def _docs(w, kind, name=None):
    return [d for d in w["docs"] if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _secret_template(w, name):
    return next(s for s in w["secrets"] if s["metadata"]["name"] == name)


def _cfg(w, section, **update):
    w["cfg"] = w["cfg"].model_copy(update={section: getattr(w["cfg"], section).model_copy(update=update)})


def _rename_secret_keys(w):
    """The template as it was when the pipeline read other key names."""
    data = _secret_template(w, "rlhfops-dvc-remote")["stringData"]
    data["access-key-id"] = data.pop("AWS_ACCESS_KEY_ID")


def _secret_envs(w):
    """Every task's and TrainJob node's secret env entries, as (entry, env var, optional key)."""
    for executor in w["pipeline"]["executors"].values():
        yield from ((s, s["keyToEnv"][0]["envVar"], "optional") for s in executor["secretAsEnv"])
    for job in _of(w["objects"], "TrainJob"):
        yield from ((e["valueFrom"]["secretKeyRef"], e["name"], "optional") for e in job["spec"]["trainer"]["env"])


def _wandb_mandatory(w):
    for entry, env, key in _secret_envs(w):
        if env == "WANDB_API_KEY":
            entry[key] = False


def _drop_endpoint(w):
    for executor in w["pipeline"]["executors"].values():
        executor["secretAsEnv"] = [
            s for s in executor["secretAsEnv"] if s["keyToEnv"][0]["envVar"] != "AWS_ENDPOINT_URL"
        ]
    for job in _of(w["objects"], "TrainJob"):
        job["spec"]["trainer"]["env"] = [e for e in job["spec"]["trainer"]["env"] if e["name"] != "AWS_ENDPOINT_URL"]


BROKEN = {
    "secret key renamed": (_rename_secret_keys, "key AWS_ACCESS_KEY_ID is used but manifests/secrets/ does not define"),
    "W&B key mandatory": (_wandb_mandatory, "Secret rlhfops-secrets key wandb-api-key is mandatory"),
    "endpoint never injected": (_drop_endpoint, "AWS_ENDPOINT_URL is never injected"),
    "runs in kubeflow": (lambda w: _cfg(w, "pipeline", namespace="kubeflow"), "not kubeflow"),
    "binding to another account": (
        lambda w: _docs(w, "RoleBinding")[0]["subjects"][0].update(name="rlhfops"),
        "grants to rlhfops in rlhfops",
    ),
    "predictor token mounted": (
        lambda w: _docs(w, "ServiceAccount", "rlhfops-predictor")[0].update(automountServiceAccountToken=True),
        "mounts a token",
    ),
    "predictor as the pipeline account": (
        lambda w: _cfg(w, "kserve", service_account="rlhfops"),
        "ServiceAccount rlhfops is not in the manifests",
    ),
    "another claim": (
        lambda w: _cfg(w, "trainer_job", workspace_claim="data"),
        "trainer_job.workspace_claim mounts data",
    ),
    "ReadWriteOnce": (
        lambda w: _docs(w, "PersistentVolumeClaim")[0]["spec"].update(accessModes=["ReadWriteOnce"]),
        "pods on several nodes mount it",
    ),
    ":latest runtime": (
        lambda w: _docs(w, "ServingRuntime")[0]["spec"]["containers"][0].update(image="ghcr.io/rlhfops/serving:latest"),
        "not a pinned tag",
    ),
    "untagged task image": (
        lambda w: next(iter(w["pipeline"]["spec"]["deploymentSpec"]["executors"].values()))["container"].update(
            image="ghcr.io/rlhfops/runtime"
        ),
        "not a pinned tag",
    ),
    "collect cached": (
        lambda w: w["pipeline"]["spec"]["components"]["comp-exit-handler-1"]["dag"]["tasks"]["collect"].update(
            cachingOptions={"enableCache": True}
        ),
        "collect has side effects",
    ),
    "namespace baseline": (
        lambda w: _docs(w, "Namespace")[0]["metadata"]["labels"].update(
            {"pod-security.kubernetes.io/enforce": "baseline"}
        ),
        "does not enforce the restricted",
    ),
    "TrainJob container privileged": (
        lambda w: _pod_specs(w)[-1][2][0]["securityContext"].update(allowPrivilegeEscalation=True),
        "TrainJob node container node is not restricted",
    ),
    "task as root": (
        lambda w: next(iter(w["pipeline"]["executors"].values())).pop("securityContext"),
        "does not run as the non-root user",
    ),
    "TrainJob without fsGroup": (lambda w: _pod_specs(w)[-1][1].pop("fsGroup"), "TrainJob node sets no fsGroup"),
    "predictor pod securityContext": (
        lambda w: _of(w["objects"], "InferenceService")[0]["spec"]["predictor"].update(securityContext={"fsGroup": 1}),
        "Knative refuses",
    ),
    "no /tmp": (lambda w: _docs(w, "ServingRuntime")[0]["spec"].pop("volumes"), "has no writable /tmp"),
    "kserve off": (lambda w: _cfg(w, "pipeline", kserve=False), "pipeline.kserve off"),
}


@needs_kubectl
@pytest.mark.parametrize("broken", list(BROKEN))
def test_the_checks_fail_on_a_broken_copy(broken):
    w = world()
    mutate, expected = BROKEN[broken]
    cfg = w["cfg"]
    mutate(w)
    if w["cfg"] is not cfg:  # a config change: the objects rendered from it follow
        w["objects"] = cluster_objects(w["cfg"])
    found = problems(w)
    assert any(expected in p for p in found), found


# ---- RBAC: exactly what the code calls --------------------------------------------------------------


class RecordingApi:
    """A CustomObjectsApi that serves one InferenceService and TrainJobs, recording
    (namespace, group, plural, verb) of every call; nothing else is callable."""

    def __init__(self):
        self.calls, self.objects = set(), {}

    def _record(self, namespace, group, plural, verb):
        self.calls.add((namespace, group, plural, verb))

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self._record(namespace, group, plural, "create")
        obj = copy.deepcopy(body)
        obj["status"] = {
            "conditions": [{"type": "Ready" if plural == "inferenceservices" else "Complete", "status": "True"}]
        }
        self.objects[(plural, body["metadata"]["name"])] = obj
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self._record(namespace, group, plural, "get")
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[(plural, name)])

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self._record(namespace, group, plural, "patch")
        obj = self.objects[(plural, name)]
        for key in ("canaryTrafficPercent", "model"):
            if key in body["spec"]["predictor"]:
                obj["spec"]["predictor"][key] = body["spec"]["predictor"][key]
        return obj


@needs_kubectl
def test_the_code_calls_exactly_what_the_pipeline_role_grants():
    """Every API call of the deploy steps (the first canary, promote, another canary, rollback,
    status) and of a TrainJob, recorded, against the Role bound to the runs' ServiceAccount."""
    cfg = load_config("cluster")
    api = RecordingApi()
    stable, v2, v3 = ({"id": f"v{i}", "path": f"/workspace/models/m{i}"} for i in (1, 2, 3))
    kserve.apply(cfg, "canary", v2, api=api, stable=stable, sleep=lambda s: None)
    kserve.apply(cfg, "promote", api=api)
    kserve.apply(cfg, "canary", v3, api=api)
    kserve.apply(cfg, "rollback", api=api)
    kserve.read_status(cfg, api=api)
    trainer_job.run_trainjob(cfg, ["train-policy"], api=api, sleep=lambda s: None)
    called: dict[tuple[str, str, None], set[str]] = {}
    for namespace, group, plural, verb in api.calls:
        assert namespace == cfg.pipeline.namespace
        called.setdefault((group, plural, None), set()).add(verb)
    docs = build("base")
    assert _granted(docs, "rlhfops-pipeline") == called
    assert _granted(docs, "rlhfops-kfp-runtime") == KFP_RUNTIME


def _granted(docs, role: str) -> dict[tuple[str, str, str | None], set[str]]:
    (r,) = _docs({"docs": docs}, "Role", role)
    granted: dict = {}
    for rule in r["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    granted.setdefault((group, resource, name), set()).update(rule["verbs"])
    return granted


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_no_cluster_wide_rights(target):
    assert not [d for d in build(target) if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


@needs_kubectl
def test_the_local_overlay_is_one_node_read_write_once():
    (pvc,) = [d for d in build("overlays/local") if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "standard" and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("path", sorted((MANIFESTS / "secrets").glob("*.yaml")))
def test_secret_templates_hold_no_values(path):
    secret = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(secret, latest_version(), strict=True)
    assert secret["kind"] == "Secret" and "data" not in secret
    assert secret["stringData"] and all(v == "" for v in secret["stringData"].values())


def test_no_latest_anywhere():
    """No file the project ships names an image by `:latest`."""
    files = [*MANIFESTS.rglob("*.yaml"), *(ROOT / "configs").glob("*.yaml"), ROOT / "params.yaml", ROOT / COMPILED]
    files += [*(ROOT / "images").glob("*.Dockerfile"), *(ROOT / "src" / "rlhfops").rglob("*.py")]
    offenders = [str(f.relative_to(ROOT)) for f in files if re.search(r"[\w/.-]+:latest\b", f.read_text())]
    assert offenders == []
