"""Optimise the stable policy with the configured algorithm (PPO with dense PRM rewards, GRPO, RLOO)."""

from typing import List

from kfp import dsl
from kfp.dsl import Input, Model, Output

from rlhfops.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_policy(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    reward: Input[Model],
    prm: Input[Model],
    policy: Output[Model],
):
    from rlhfops.cycle import run_stage, write_pointer

    write_pointer(policy, run_stage("policy", workspace, config, overrides, cycle, group))
