"""A training step larger than one node, run as a Kubeflow Trainer TrainJob and waited on.

The TrainJob (`trainer.kubeflow.org/v1alpha1`) refers to a ClusterTrainingRuntime (`torch-distributed`
by default): the Trainer starts `trainer_job.nodes` pods of the trainer image and gives each the
rendezvous environment (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT). Every node runs

    accelerate launch --config_file configs/accelerate/zero3.yaml --num_machines N --machine_rank R \\
        --num_processes N*G ... -m rlhfops.cli train-policy --workspace /workspace ...

so DeepSpeed ZeRO-3 shards the policy over all N x G GPUs; Kubernetes substitutes the `$(PET_...)`
references from the container's environment. The workspace PVC is mounted in every node through a
runtime patch, secrets (the W&B key, DVC remote credentials) come in as env (those in
`pipeline.optional_secret_env` optional), and every node runs under the restricted pod security of
`rlhfops.images` (non-root UID 10001, fsGroup, no privilege escalation, all capabilities dropped).

We talk to the API through `kubernetes.client.CustomObjectsApi`, which is also what the `kubeflow`
SDK's TrainerClient calls: the whole spec is built here from config, and tests assert it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from rlhfops.config import Config
from rlhfops.kube import KubeError, custom_objects_api

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
PATCH_MANAGER = "rlhfops.dev/trainer-job"
NODE = "node"  # the replicated job and container name the Trainer's runtimes use for training nodes


class TrainJobError(KubeError):
    """A TrainJob that could not be created, failed, or did not finish in time; one sentence for a person."""


def job_name(stage: str, cycle: int | None = None) -> str:
    """`rlhfops-train-policy-c3-1a2b3c`: a DNS-1035 label, unique per launch."""
    parts = ["rlhfops", stage] + ([f"c{cycle}"] if cycle is not None else [])
    base = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:48].rstrip("-")
    return f"{base}-{secrets.token_hex(3)}"


def launch_command(cfg: Config, stage_args: Sequence[str]) -> list[str]:
    """The command every node runs: `accelerate launch` over nodes x GPUs, then `rlhfops <stage_args>`."""
    if not stage_args:
        raise ValueError("stage_args must name an rlhfops sub-command, e.g. ['train-policy', '--workspace', ...]")
    tj = cfg.trainer_job
    return [
        "accelerate",
        "launch",
        "--config_file",
        tj.accelerate_config,
        "--num_machines",
        str(tj.nodes),
        "--num_processes",
        str(tj.nodes * tj.gpus_per_node),
        "--machine_rank",
        "$(PET_NODE_RANK)",
        "--main_process_ip",
        "$(PET_MASTER_ADDR)",
        "--main_process_port",
        "$(PET_MASTER_PORT)",
        # each node starts its own processes and meets the others at the master (no ssh / pdsh)
        "--deepspeed_multinode_launcher",
        "standard",
        "-m",
        "rlhfops.cli",
        *stage_args,
    ]


def build_trainjob(
    cfg: Config,
    name: str,
    stage_args: Sequence[str],
    *,
    image: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob custom object for `rlhfops <stage_args>` across `trainer_job.nodes` x `gpus_per_node`."""
    from rlhfops.images import TRAINER_IMAGE, container_security, pod_security

    tj = cfg.trainer_job
    per_node = {"nvidia.com/gpu": str(tj.gpus_per_node), "cpu": tj.cpu_per_node, "memory": tj.memory_per_node}
    env = []
    secret_env = tj.secret_env if tj.secret_env is not None else cfg.pipeline.secret_env
    for var, ref in sorted(secret_env.items()):
        secret, _, key = ref.partition(":")
        optional = var in cfg.pipeline.optional_secret_env
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}})
    node_pod = {
        "securityContext": pod_security(),
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": tj.workspace_claim}}],
        "containers": [
            {
                "name": NODE,
                "securityContext": container_security(),
                "volumeMounts": [{"name": "workspace", "mountPath": tj.workspace_mount}],
            }
        ],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": tj.namespace,
            "labels": {"app.kubernetes.io/part-of": "rlhfops", **(labels or {})},
        },
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": tj.runtime},
            "trainer": {
                "image": image or tj.image or TRAINER_IMAGE,
                "command": launch_command(cfg, stage_args),
                "numNodes": tj.nodes,
                "numProcPerNode": tj.gpus_per_node,
                "resourcesPerNode": {"requests": dict(per_node), "limits": dict(per_node)},
                "env": env,
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": NODE, "template": {"spec": {"template": {"spec": node_pod}}}}
                                ]
                            }
                        }
                    },
                }
            ],
            "activeDeadlineSeconds": int(tj.timeout_s),
        },
    }


def submit(api: Any, job: dict[str, Any]) -> str:
    """Create the TrainJob; returns its name."""
    from kubernetes.client.exceptions import ApiException

    meta = job["metadata"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, job)
    except ApiException as e:
        why = {
            404: "the TrainJob API is not installed (is the Kubeflow Trainer deployed?) or the namespace is missing",
            403: "this service account may not create TrainJobs there",
            409: "a TrainJob of that name already exists",
        }.get(e.status, e.reason)
        raise TrainJobError(f"could not create TrainJob {meta['namespace']}/{meta['name']}: {why}") from None
    return meta["name"]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def wait(
    api: Any,
    name: str,
    namespace: str,
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the TrainJob's status conditions until Complete (returned) or Failed (raised), or time out."""
    deadline = clock() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        if _condition(obj, "Complete"):
            return obj
        failed = _condition(obj, "Failed")
        if failed:
            reason = failed.get("reason") or "Failed"
            raise TrainJobError(f"TrainJob {namespace}/{name} failed ({reason}): {failed.get('message', '')}".rstrip())
        if clock() >= deadline:
            seen = [
                c.get("type") for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
            ]
            state = ", ".join(seen) or "no conditions yet"
            raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:g} s ({state})")
        sleep(poll_s)


def run_trainjob(
    cfg: Config,
    stage_args: Sequence[str],
    *,
    name: str | None = None,
    image: str | None = None,
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Build, submit and wait for a TrainJob running `rlhfops <stage_args>`; returns the finished object."""
    tj = cfg.trainer_job
    job = build_trainjob(cfg, name or job_name(stage_args[0] if stage_args else "job"), stage_args, image=image)
    api = api if api is not None else custom_objects_api()
    submitted = submit(api, job)
    return wait(api, submitted, tj.namespace, timeout_s=tj.timeout_s, poll_s=tj.poll_s, sleep=sleep)
