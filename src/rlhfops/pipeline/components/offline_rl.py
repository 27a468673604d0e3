"""Offline RL (IQL / CQL / ILQL) on the most recent logged, composite-scored samples (`offline.max_samples`)."""

from typing import List

from kfp import dsl
from kfp.dsl import Input, Model, Output

from rlhfops.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def offline_rl(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    reward: Input[Model],
    policy: Output[Model],
):
    from rlhfops.cycle import run_stage, write_pointer

    write_pointer(policy, run_stage("offline", workspace, config, overrides, cycle, group))
