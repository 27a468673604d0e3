"""The pre-deploy gate: deploy | reject the best candidate on paired per-prompt gold scores."""

from typing import List

from kfp import dsl
from kfp.dsl import Metrics, Output

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def gate(
    workspace: str, config: str, overrides: List[str], cycle: int, group: str, candidate: str, stats: Output[Metrics]
) -> str:
    from rlhfops.cycle import log_metrics, run_stage

    result = run_stage("gate", workspace, config, overrides, cycle, group)
    log_metrics(stats, result.get("stats", {}))
    return result["decision"]
