import re

import pytest
from kubernetes.client.exceptions import ApiException

from rlhfops import trainer_job
from rlhfops.config import ConfigError, load_config
from rlhfops.images import RUN_AS_USER, TRAINER_IMAGE

STAGE = ["train-policy", "--workspace", "/workspace", "--config", "/workspace/cycle-3/config.yaml"]


class FakeApi:
    """Records every call; `get_namespaced_custom_object` replays the given statuses in order."""

    def __init__(self, statuses=(), create_error=None):
        self.calls = []
        self.statuses = list(statuses)
        self.create_error = create_error

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural, body))
        if self.create_error:
            raise self.create_error
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural, name))
        return {"metadata": {"name": name}, "status": self.statuses.pop(0) if self.statuses else {}}


def _cond(kind, reason="", message=""):
    return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]}


def _cfg(*overrides):
    return load_config(
        None,
        [
            "trainer_job.nodes=4",
            "trainer_job.gpus_per_node=8",
            "trainer_job.secret_env={WANDB_API_KEY: 'rlhfops-secrets:wandb-api-key', AWS_ACCESS_KEY_ID: 'dvc:key-id'}",
            "trainer_job.poll_s=5",
            "trainer_job.timeout_s=60",
            *overrides,
        ],
    )


def test_run_trainjob_submits_the_full_spec_then_waits_for_complete():
    api = FakeApi([{}, _cond("Created"), _cond("Complete", "JobsCompleted")])
    sleeps = []
    final = trainer_job.run_trainjob(_cfg(), STAGE, name="rlhfops-ppo-c3", api=api, sleep=sleeps.append)

    create = api.calls[0]
    assert create[:5] == ("create", "trainer.kubeflow.org", "v1alpha1", "rlhfops", "trainjobs")
    resources = {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    assert create[5] == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": "rlhfops-ppo-c3",
            "namespace": "rlhfops",
            "labels": {"app.kubernetes.io/part-of": "rlhfops"},
        },
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
                "name": "torch-distributed",
            },
            "trainer": {
                "image": TRAINER_IMAGE,
                "command": [
                    "accelerate",
                    "launch",
                    "--config_file",
                    "/app/configs/accelerate/zero3.yaml",
                    "--num_machines",
                    "4",
                    "--num_processes",
                    "32",
                    "--machine_rank",
                    "$(PET_NODE_RANK)",
                    "--main_process_ip",
                    "$(PET_MASTER_ADDR)",
                    "--main_process_port",
                    "$(PET_MASTER_PORT)",
                    "--deepspeed_multinode_launcher",
                    "standard",
                    "-m",
                    "rlhfops.cli",
                    *STAGE,
                ],  # fmt: skip
                "numNodes": 4,
                "numProcPerNode": 8,
                "resourcesPerNode": {"requests": resources, "limits": resources},
                "env": [
                    {
                        "name": "AWS_ACCESS_KEY_ID",
                        "valueFrom": {"secretKeyRef": {"name": "dvc", "key": "key-id", "optional": False}},
                    },
                    {  # pipeline.optional_secret_env: a node starts without the W&B key
                        "name": "WANDB_API_KEY",
                        "valueFrom": {
                            "secretKeyRef": {"name": "rlhfops-secrets", "key": "wandb-api-key", "optional": True}
                        },
                    },
                ],
            },
            "runtimePatches": [
                {
                    "manager": "rlhfops.dev/trainer-job",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {
                                                        "securityContext": {
                                                            "runAsNonRoot": True,
                                                            "runAsUser": RUN_AS_USER,
                                                            "runAsGroup": RUN_AS_USER,
                                                            "fsGroup": RUN_AS_USER,
                                                            "seccompProfile": {"type": "RuntimeDefault"},
                                                        },
                                                        "volumes": [
                                                            {
                                                                "name": "workspace",
                                                                "persistentVolumeClaim": {
                                                                    "claimName": "rlhfops-workspace"
                                                                },
                                                            }
                                                        ],
                                                        "containers": [
                                                            {
                                                                "name": "node",
                                                                "securityContext": {
                                                                    "runAsNonRoot": True,
                                                                    "allowPrivilegeEscalation": False,
                                                                    "capabilities": {"drop": ["ALL"]},
                                                                    "seccompProfile": {"type": "RuntimeDefault"},
                                                                },
                                                                "volumeMounts": [
                                                                    {"name": "workspace", "mountPath": "/workspace"}
                                                                ],
                                                            }
                                                        ],
                                                    }
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
            "activeDeadlineSeconds": 60,
        },
    }
    gets = api.calls[1:]
    assert gets == [("get", "trainer.kubeflow.org", "v1alpha1", "rlhfops", "trainjobs", "rlhfops-ppo-c3")] * 3
    assert sleeps == [5.0, 5.0]
    assert final["status"]["conditions"][0]["type"] == "Complete"


def test_secrets_default_to_the_pipeline_tasks_secrets():
    job = trainer_job.build_trainjob(load_config(), "j", STAGE)
    secrets = load_config().pipeline.secret_env
    assert {e["name"] for e in job["spec"]["trainer"]["env"]} == set(secrets) and secrets
    for e in job["spec"]["trainer"]["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        assert f"{ref['name']}:{ref['key']}" == secrets[e["name"]]


def test_image_and_labels_can_be_given_per_job():
    cfg = _cfg("trainer_job.image=reg.example/trainer:9")
    job = trainer_job.build_trainjob(cfg, "j", STAGE, labels={"rlhfops.dev/cycle": "3"})
    assert job["spec"]["trainer"]["image"] == "reg.example/trainer:9"
    assert trainer_job.build_trainjob(cfg, "j", STAGE, image="x/y:1")["spec"]["trainer"]["image"] == "x/y:1"
    assert job["metadata"]["labels"] == {"app.kubernetes.io/part-of": "rlhfops", "rlhfops.dev/cycle": "3"}


def test_failure_is_one_clear_error():
    api = FakeApi([_cond("Created"), _cond("Failed", "DeadlineExceeded", "node 2 was OOM-killed")])
    with pytest.raises(trainer_job.TrainJobError) as info:
        trainer_job.run_trainjob(_cfg(), STAGE, name="j1", api=api, sleep=lambda s: None)
    assert str(info.value) == "TrainJob rlhfops/j1 failed (DeadlineExceeded): node 2 was OOM-killed"


def test_timeout_says_how_far_it_got():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    api = FakeApi([_cond("Created")] * 100)
    with pytest.raises(trainer_job.TrainJobError, match=r"did not finish within 60 s \(Created\)"):
        trainer_job.wait(api, "j2", "rlhfops", timeout_s=60, poll_s=5, sleep=sleep, clock=lambda: now[0])
    assert len(api.calls) == 13  # t = 0, 5, ..., 60


@pytest.mark.parametrize(
    ("status", "fragment"),
    [(404, "is the Kubeflow Trainer deployed?"), (409, "already exists"), (403, "may not create TrainJobs")],
)
def test_create_errors_name_the_cause(status, fragment):
    api = FakeApi(create_error=ApiException(status=status, reason="x"))
    with pytest.raises(trainer_job.TrainJobError, match=re.escape(fragment)):
        trainer_job.run_trainjob(_cfg(), STAGE, name="j3", api=api)
    assert [c[0] for c in api.calls] == ["create"]


def test_job_names_are_dns_labels_and_unique():
    name = trainer_job.job_name("Train_Policy", cycle=12)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name.startswith("rlhfops-train-policy-c12-")
    assert trainer_job.job_name("x" * 100) != trainer_job.job_name("x" * 100)
    assert len(trainer_job.job_name("x" * 100)) <= 63


def test_bad_inputs():
    with pytest.raises(ValueError, match="stage_args must name"):
        trainer_job.launch_command(_cfg(), [])
    with pytest.raises(ConfigError, match="secret-name:key"):
        load_config(None, ["trainer_job.secret_env={WANDB_API_KEY: just-a-name}"])


def test_cluster_config_loads_and_launches_a_zero3_job(configs_dir):
    cfg = load_config("cluster")
    assert cfg.model.name_or_path and cfg.tracking.mode == "online"
    tj = cfg.trainer_job
    # the image keeps the repository's configs/ at /app/configs
    assert (configs_dir / tj.accelerate_config.removeprefix("/app/configs/")).exists()
    assert "zero_stage: 3" in (configs_dir / "accelerate" / "zero3.yaml").read_text()
    command = trainer_job.build_trainjob(cfg, "j", STAGE)["spec"]["trainer"]["command"]
    assert command[command.index("--num_processes") + 1] == str(tj.nodes * tj.gpus_per_node) == "16"
    assert cfg.pipeline.accelerator_limit >= 1 and cfg.kserve.gpus >= 1
