"""Canary deploy: the gated candidate becomes the canary (registry; the InferenceService in a cluster)."""

from typing import List

from kfp import dsl

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def canary_deploy(workspace: str, config: str, overrides: List[str], cycle: int, group: str) -> str:
    from rlhfops.cycle import run_stage

    return run_stage("deploy_canary", workspace, config, overrides, cycle, group)["version"]
