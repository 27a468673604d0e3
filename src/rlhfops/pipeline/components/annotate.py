"""Annotate: judges score the responses; preference pairs, step labels and the review queue."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def annotate(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    responses: Input[Dataset],
    annotations: Output[Dataset],
):
    from rlhfops.cycle import export_artifact, run_stage

    counts = run_stage("annotate", workspace, config, overrides, cycle, group, responses_path=responses.path)
    export_artifact(workspace, cycle, "", annotations.path, exclude=("responses.jsonl",))
    annotations.metadata.update(counts)
