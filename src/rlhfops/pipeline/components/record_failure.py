"""The ExitHandler's task: a failed cycle is recorded in the model registry."""

from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def record_failure(status: PipelineTaskFinalStatus, workspace: str, group: str):
    from rlhfops.cycle import finish_cycle

    finish_cycle(workspace, group, status.state, status.error_message or "")
