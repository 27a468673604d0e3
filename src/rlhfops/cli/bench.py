"""`rlhfops bench | report`: the benchmark suite and the HTML report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

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
    setup,
    user_errors,
)


@app.command()
def bench(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="one seed at smoke size: every scenario and ratio, in about a minute")
    ] = False,
    seeds: Annotated[
        list[int] | None, typer.Option("--seeds", help="seeds, e.g. --seeds 0 1 2 (default 0 1 2; --quick: 0)")
    ] = None,
    more_seeds: Annotated[list[int] | None, typer.Argument(hidden=True, metavar="")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for bench.json and the runs (default <workspace>/bench)")
    ] = None,
) -> None:
    """The technique table (mean +- std over seeds) and the speed ratios, measured on the built-in task."""
    from rich.table import Table

    from rlhfops.bench import FULL, QUICK, run_bench
    from rlhfops.report import detail_lines, relative_text, speed_lines

    if more_seeds and not seeds:
        fail(f"unexpected argument(s) {' '.join(map(str, more_seeds))}; seeds go after --seeds")
    plan = QUICK if quick else FULL
    if config is not None:
        plan = dataclasses.replace(plan, config=config)
    chosen = [*(seeds or []), *(more_seeds or [])] or ([0] if quick else [0, 1, 2])
    _, ws = setup(plan.config, [*plan.overrides, *(set_ or [])], workspace)
    out = out or ws.root / "bench"
    log = (lambda _: None) if json_out else console.print
    with user_errors():
        result = run_bench(plan, chosen, out, set_ or [], log=log)
    if json_out:
        emit_json({k: result[k] for k in ("seeds", "table", "speed", "seconds")})
        return
    table = Table(title=f"rlhfops bench: seeds {' '.join(map(str, chosen))} ({result['seconds'] / 60:.1f} min)")
    for col in ("technique", "what it is for", "measured", "gain (mean +- std)", "relative", "verdict", "cost"):
        numeric = col in ("gain (mean +- std)", "relative")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric or col == "technique")
    colours = {"gain": "green", "loss": "red", "no clear effect": "yellow"}
    for r in result["table"]:
        table.add_row(
            r["technique"],
            r["purpose"],
            r["measure"],
            f"{r['mean']:+.3f} +- {r['std']:.3f}",
            relative_text(r),
            f"[{colours[r['verdict']]}]{r['verdict']}[/]",
            r["cost"],
        )
    console.print(table)
    for line in [*detail_lines(result), *speed_lines(result["speed"])]:
        console.print(f"- {line}")
    console.print(f"written to {out / 'bench.json'}; `rlhfops report` draws the plots")


@app.command()
def report(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="the HTML page (default <workspace>/report.html)")] = None,
) -> None:
    """An HTML page with PNG plots of the bench and the workspace's cycle history (also to W&B when on)."""
    from rlhfops.report import log_report, write_html_report

    cfg, ws = setup(config, set_, workspace)
    with user_errors():
        page, plots = write_html_report(ws, out or ws.root / "report.html")
    log_report(cfg, ws, plots)
    console.print(f"report written to [bold]{page}[/] ({len(plots)} plots in {page.parent / (page.stem + '-plots')}/)")
