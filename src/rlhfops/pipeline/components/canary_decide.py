"""Canary decide, the first task of a cycle: promote, roll back or keep the last canary; fix the cycle number."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from rlhfops.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def canary_decide(
    workspace: str, config: str, overrides: List[str], group: str, decision: Output[Metrics]
) -> NamedTuple("Begin", [("cycle", int), ("canary", str)]):
    from rlhfops.cycle import begin, open_stage

    cfg, ws = open_stage(workspace, config, overrides)
    result = begin(cfg, ws)
    decision.metadata.update(result["canary"])
    return NamedTuple("Begin", [("cycle", int), ("canary", str)])(result["cycle"], result["canary"]["decision"])
