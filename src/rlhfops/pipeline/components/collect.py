"""Collect: k samples per prompt from the stable policy, plus the canary's logged interactions."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Output

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def collect(workspace: str, config: str, overrides: List[str], cycle: int, group: str, responses: Output[Dataset]):
    from rlhfops.cycle import export_artifact, run_stage

    counts = run_stage("collect", workspace, config, overrides, cycle, group)
    export_artifact(workspace, cycle, "responses.jsonl", responses.path)
    responses.metadata.update(counts)
