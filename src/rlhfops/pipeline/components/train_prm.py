"""Train the process reward model on every cycle's step labels so far."""

from typing import List

from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from rlhfops.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_prm(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    data_tag: str,
    prm: Output[Model],
    metrics: Output[Metrics],
):
    from rlhfops.cycle import log_metrics, run_stage, write_pointer

    result = run_stage("prm", workspace, config, overrides, cycle, group)
    write_pointer(prm, result)
    log_metrics(metrics, result)
