"""Best-of-N gold evaluation of the stable model and every candidate on the same test prompts."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Input, Metrics, Model, Output

from rlhfops.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    workspace: str,
    config: str,
    overrides: List[str],
    cycle: int,
    group: str,
    policy: Input[Model],
    offline: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> str:
    from rlhfops.cycle import evaluation_html, log_metrics, run_stage
    from rlhfops.files import atomic_write_text

    summary = run_stage("evaluate", workspace, config, overrides, cycle, group)
    log_metrics(metrics, {name: r["gold_composite"] for name, r in summary["results"].items()})
    atomic_write_text(report.path, evaluation_html(summary))
    return summary["best_candidate"] or ""
