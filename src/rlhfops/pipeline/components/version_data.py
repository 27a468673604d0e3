"""Version the cycle's data: git + DVC commit, tag cycle-NNNN, push to the DVC remote."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def version_data(
    workspace: str, config: str, overrides: List[str], cycle: int, group: str, annotations: Input[Dataset]
) -> str:
    from rlhfops.cycle import run_stage

    return run_stage("version_data", workspace, config, overrides, cycle, group)["tag"]
