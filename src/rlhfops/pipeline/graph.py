"""The iterative-RLHF cycle as a Kubeflow pipeline: one run is one cycle; a recurring run repeats it.

The tasks and their dependencies are `rlhfops.cycle.CYCLE`'s stages and needs (tests/test_pipeline.py
compares the compiled graph with it): canary_decide (`begin`) first, reward_member in a ParallelFor
over reward_plan's list, canary_deploy under If(gate == "deploy"), all inside an ExitHandler whose
record_failure task records a failed cycle in the registry. The data edges carry the dependencies, so
each task's inputs are the outputs of the stages it needs (KFP shows the lineage of every artifact).

Runtime parameters (what the Kubeflow UI asks for): `workspace` (the mounted volume), `config` (a
name in configs/ or a path on the volume), `overrides` (a list of "a.b=value").

Cluster settings come from the compile-time config's `pipeline` section: every task mounts the
workspace PVC, gets the secrets as env (`optional_secret_env` optional) and runs as the images'
non-root user (the KFP backend >= 2.16 adds the rest of the restricted profile: no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp); training tasks request GPUs
(accelerator type and limit), tolerate GPU taints, select GPU nodes and get CPU / memory limits.
Tasks with side effects outside their outputs (`SIDE_EFFECTS`: the registry, the interaction
store, the data versions, the InferenceService) never come from KFP's cache. `rlhfops compile`
writes `pipelines/iterative_rlhf.yaml` (checked in, at the repository root).
"""

from pathlib import Path
from typing import List

from kfp import compiler, dsl, kubernetes

from rlhfops.config import Config, PipelineConfig
from rlhfops.images import RUN_AS_USER
from rlhfops.pipeline import COMPILED
from rlhfops.pipeline.components.annotate import annotate
from rlhfops.pipeline.components.canary_decide import canary_decide
from rlhfops.pipeline.components.canary_deploy import canary_deploy
from rlhfops.pipeline.components.collect import collect
from rlhfops.pipeline.components.evaluate import evaluate
from rlhfops.pipeline.components.gate import gate
from rlhfops.pipeline.components.offline_rl import offline_rl
from rlhfops.pipeline.components.record_failure import record_failure
from rlhfops.pipeline.components.train_policy import train_policy
from rlhfops.pipeline.components.train_prm import train_prm
from rlhfops.pipeline.components.train_reward import reward_finish, reward_member, reward_plan
from rlhfops.pipeline.components.version_data import version_data

PIPELINE_NAME = "rlhfops-iterative-rlhf"
# Tasks that change state outside their outputs: a cached replay would skip the change (a run with a
# reused name would collect nothing, decide no canary, deploy nothing).
SIDE_EFFECTS = frozenset({"canary-decide", "collect", "annotate", "version-data", "canary-deploy", "record-failure"})


def _cluster(task: dsl.PipelineTask, pc: PipelineConfig, train: bool) -> dsl.PipelineTask:
    """The workspace volume, secrets and non-root user on every task; GPUs, node selection and limits
    on training tasks; no cache for tasks with side effects."""
    if task.component_spec.name.replace("_", "-") in SIDE_EFFECTS:
        task.set_caching_options(False)
    kubernetes.mount_pvc(task, pvc_name=pc.pvc, mount_path=pc.mount_path)
    for env, ref in pc.secret_env.items():
        secret, key = ref.split(":", 1)
        kubernetes.use_secret_as_env(
            task, secret_name=secret, secret_key_to_env={key: env}, optional=env in pc.optional_secret_env
        )
    kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True)
    task.set_cpu_request(pc.cpu_request).set_memory_request(pc.memory_request)
    if train:
        task.set_cpu_limit(pc.train_cpu_limit).set_memory_limit(pc.train_memory_limit)
        if pc.accelerator_limit > 0:
            task.set_accelerator_type(pc.accelerator_type).set_accelerator_limit(pc.accelerator_limit)
            for key, value in pc.node_selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            for tol in pc.tolerations:
                kubernetes.add_toleration(
                    task,
                    key=tol.get("key"),
                    operator=tol.get("operator", "Equal"),
                    value=tol.get("value"),
                    effect=tol.get("effect"),
                )
    return task


def build_pipeline(cfg: Config):
    """The cycle pipeline with the cluster settings of `cfg.pipeline` (fixed at compile time)."""
    pc = cfg.pipeline

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="One iterative-RLHF cycle: collect, annotate, version, "
        "reward models, policy optimisation and offline RL, evaluation, gate, canary.",
    )
    def iterative_rlhf(
        workspace: str = pc.mount_path,
        config: str = "tiny",
        overrides: List[str] = [],  # noqa: B006 (a KFP default value, never mutated)
    ):
        group = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
        on_exit = _cluster(record_failure(workspace=workspace, group=group), pc, train=False)
        with dsl.ExitHandler(on_exit, name="cycle"):
            common = {"workspace": workspace, "config": config, "overrides": overrides, "group": group}
            begin = _cluster(canary_decide(**common).set_display_name("canary decide"), pc, train=False)
            cycle = begin.outputs["cycle"]
            common = {**common, "cycle": cycle}
            responses = _cluster(collect(**common), pc, train=False)
            labels = _cluster(annotate(**common, responses=responses.outputs["responses"]), pc, train=False)
            tag = _cluster(version_data(**common, annotations=labels.outputs["annotations"]), pc, train=False)
            plan = _cluster(reward_plan(**common, data_tag=tag.output), pc, train=False)
            with dsl.ParallelFor(items=plan.output, name="reward-models") as spec:
                # no upstream task outputs inside the loop (kfp.local 2.17 mixes them with the item): the
                # item carries the cycle
                loop = {k: v for k, v in common.items() if k != "cycle"}
                member = _cluster(reward_member(**loop, spec=spec), pc, train=True)
            reward = _cluster(reward_finish(**common, members=dsl.Collected(member.outputs["member"])), pc, train=True)
            prm = _cluster(train_prm(**common, data_tag=tag.output), pc, train=True)
            policy = _cluster(
                train_policy(**common, reward=reward.outputs["reward"], prm=prm.outputs["prm"]), pc, train=True
            )
            offline = _cluster(offline_rl(**common, reward=reward.outputs["reward"]), pc, train=True)
            scores = _cluster(
                evaluate(**common, policy=policy.outputs["policy"], offline=offline.outputs["policy"]),
                pc,
                train=True,
            )
            decision = _cluster(gate(**common, candidate=scores.outputs["Output"]), pc, train=False)
            with dsl.If(decision.outputs["Output"] == "deploy", name="deploy"):
                _cluster(canary_deploy(**common), pc, train=False)

    return iterative_rlhf


def compile_pipeline(cfg: Config, out: str | Path = COMPILED) -> Path:
    """Write the KFP IR YAML (what a user uploads in the Kubeflow UI)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out))
    return out
