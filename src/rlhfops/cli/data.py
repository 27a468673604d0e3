"""`rlhfops collect | annotate | review | data`: the data side of a cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlhfops.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    console,
    emit_json,
    fail,
    require_model,
    setup,
    trained_model,
    user_errors,
)
from rlhfops.config import Config
from rlhfops.workspace import RESPONSES, Workspace

CycleOpt = Annotated[int | None, typer.Option("--cycle", help="Cycle number; default: the workspace's latest.")]
VersionOpt = Annotated[
    bool, typer.Option("--version/--no-version", help="dvc add, commit, tag cycle-NNNN and push the cycle's data.")
]


def _latest(ws: Workspace, cycle: int | None, what: str) -> int:
    if cycle is not None:
        return cycle
    cycles = ws.cycle_numbers()
    if not cycles:
        fail(f"the workspace '{ws.root}' has no cycle data to {what}; run `rlhfops collect` first")
    return cycles[-1]


def _version(cfg: Config, ws: Workspace, cycle: int, paths: list[Path]) -> str:
    from rlhfops.versioning import commit_cycle

    return commit_cycle(ws, cycle, paths, versioning=cfg.versioning)


def _show(data: dict[str, Any], json_out: bool, title: str) -> None:
    if json_out:
        emit_json(data)
        return
    console.print(f"[bold]{title}[/]")
    for key, value in data.items():
        console.print(f"  {key}: {value}")


@app.command()
def collect(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycle: Annotated[int | None, typer.Option("--cycle", help="Cycle number; default: the latest + 1.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy directory; default: models/sft.")] = None,
) -> None:
    """Collect a cycle's responses: k policy samples per prompt plus the canary's logged interactions."""
    from rlhfops.annotation.collect import collect as run_collect

    cfg, ws = setup(config, set_, workspace)
    cycle = cycle if cycle is not None else (ws.cycle_numbers() or [0])[-1] + 1
    policy = require_model(policy or ws.model_dir("sft"))
    with user_errors():
        counts = run_collect(cfg, ws, policy, ws.cycle_dir(cycle), cycle=cycle)
    _show(counts, json_out, f"cycle {cycle}: collected into {ws.cycle_dir(cycle)}/")


@app.command()
def annotate(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycle: CycleOpt = None,
    version: VersionOpt = True,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy for Monte-Carlo step labels; default: models/sft.")
    ] = None,
) -> None:
    """Judge a cycle's responses; write pairs, step labels and the review queue; version the cycle."""
    from rlhfops.annotation.annotate import annotate as run_annotate

    cfg, ws = setup(config, set_, workspace)
    cycle = _latest(ws, cycle, "annotate")
    with user_errors():
        out = ws.cycle_dir(cycle)
        summary = run_annotate(
            cfg,
            ws,
            out / RESPONSES,
            out,
            rm_dir=trained_model(ws, "reward"),
            policy_dir=policy or ws.model_dir("sft"),
        )
        if version:
            summary["commit"] = _version(cfg, ws, cycle, [out])
    _show(summary, json_out, f"cycle {cycle}: annotated in {out}/")


review_app = typer.Typer(help="The human review queue: export for Label Studio, import the labels back.")
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(
    out: Annotated[Path, typer.Argument(help="Where to write the Label Studio import JSON.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycle: CycleOpt = None,
    study_policy: Annotated[
        list[Path] | None,
        typer.Option("--study-policy", help="Policies trained with different weights: add a weight-preference study."),
    ] = None,
    study_prompts: Annotated[int, typer.Option("--study-prompts", help="Prompts in the study.")] = 16,
) -> None:
    """Write a cycle's review queue (and optionally a weight-preference study) as Label Studio import JSON."""
    from rlhfops.annotation.review import add_study, export_queue

    cfg, ws = setup(config, set_, workspace)
    cycle = _latest(ws, cycle, "review")
    with user_errors():
        if study_policy:
            add_study(cfg, ws.cycle_dir(cycle), study_policy, study_prompts)
        n = export_queue(ws.cycle_dir(cycle), out)
    _show({"cycle": cycle, "items": n, "file": str(out)}, json_out, "review queue exported")


@review_app.command("import")
def review_import(
    export: Annotated[Path, typer.Argument(help="Label Studio JSON export of the annotated queue.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycle: CycleOpt = None,
    version: VersionOpt = True,
) -> None:
    """Import human labels: they override the AI's pairs; report Cohen's kappa and fitted study weights."""
    from rlhfops.annotation.review import import_review

    cfg, ws = setup(config, set_, workspace)
    cycle = _latest(ws, cycle, "review")
    with user_errors():
        report = import_review(cfg, ws.cycle_dir(cycle), export)
        if version:
            report["commit"] = _version(cfg, ws, (ws.cycle_numbers() or [cycle])[-1], [ws.cycle_dir(cycle)])
    _show(report, json_out, f"cycle {cycle}: human labels imported")


data_app = typer.Typer(help="Versioned cycle data (git + DVC).")
app.add_typer(data_app, name="data")


@data_app.command("history")
def data_history(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the versioned cycles: tag, commit, record counts and hashes."""
    from rich.table import Table

    from rlhfops.versioning import history

    _, ws = setup(config, set_, workspace)
    with user_errors():
        rows = history(ws)
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"cycle data in {ws.root}")
    for col in ("cycle", "tag", "commit", "path", "records", "DVC md5"):
        table.add_column(col)
    for row in rows:
        for path, info in row["paths"].items():
            cells = (str(row["cycle"]), row["tag"], row["commit"][:10], path, str(info["records"]), info["dvc_md5"])
            table.add_row(*cells)
    console.print(table)
