"""The report's plots and the technique gains in a W&B run, when tracking is on."""

from __future__ import annotations

from pathlib import Path

from rlhfops.config import Config
from rlhfops.report.bench_text import read_bench, table_rows
from rlhfops.report.html import has_bench
from rlhfops.workspace import Workspace


def log_report(cfg: Config, ws: Workspace, plots: dict[str, Path]) -> None:
    """The plots and the technique gains in a W&B run (job_type `report`), when tracking is on."""
    from rlhfops.tracking import new_group, resolve_mode, start_run

    if resolve_mode(cfg) == "disabled":
        return
    import wandb

    with start_run(cfg, "report", group=new_group("report"), workspace=ws.root) as run:
        run.run.log({f"plots/{name}": wandb.Image(str(path)) for name, path in plots.items()})
        if has_bench(ws):
            table = table_rows(read_bench(ws))
            run.log_metrics({f"bench/{r['technique']}": r["mean"] for r in table})
