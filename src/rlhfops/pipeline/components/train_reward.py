"""Train the reward ensembles on the data of every cycle so far: the fan-out plan, one member, the finish."""

from typing import List

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from rlhfops.images import RUNTIME_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def reward_plan(workspace: str, config: str, overrides: List[str], cycle: int, group: str, data_tag: str) -> List[str]:
    from rlhfops.cycle import run_stage

    return run_stage("reward_plan", workspace, config, overrides, cycle, group)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def reward_member(workspace: str, config: str, overrides: List[str], group: str, spec: str, member: Output[Model]):
    from rlhfops.cycle import parse_spec, run_stage, write_pointer

    cycle, _ = parse_spec(spec)
    write_pointer(member, run_stage("reward_member", workspace, config, overrides, cycle, group, spec=spec))


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def reward_finish(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    members: Input[List[Model]],
    reward: Output[Model],
    metrics: Output[Metrics],
):
    from rlhfops.cycle import log_metrics, run_stage, write_pointer

    result = run_stage("reward_finish", workspace, config, overrides, cycle, group)
    write_pointer(reward, result)
    log_metrics(metrics, result)
