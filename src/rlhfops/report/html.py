"""`rlhfops report`: an HTML page of the bench and the cycle history, with the plots embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rlhfops.bench.records import BENCH_JSON
from rlhfops.files import atomic_write_text
from rlhfops.report.bench_text import detail_lines, read_bench, relative_text, speed_lines, table_rows
from rlhfops.report.history import cycle_history, plot_cycle_history
from rlhfops.report.plots import BENCH_PLOTS
from rlhfops.workspace import Workspace


def has_bench(ws: Workspace) -> bool:
    """Does the workspace hold a `rlhfops bench` run (`<ws>/bench/bench.json`)?"""
    return (ws.root / "bench" / BENCH_JSON).exists()


def write_plots(ws: Workspace, out_dir: Path) -> dict[str, Path]:
    """Every plot the workspace has data for: the bench's (bench.json) and the cycle history of the
    workspace itself and of the bench's first seed."""
    plots = {}
    if has_bench(ws):
        bench = read_bench(ws)
        plots.update({name: plot(bench, out_dir / f"{name}.png") for name, plot in BENCH_PLOTS.items()})
        seed_ws = Workspace(ws.root / "bench" / "runs" / f"seed-{bench['seeds'][0]}")
        if cycle_history(seed_ws):
            plots["bench_cycle_history"] = plot_cycle_history(seed_ws, out_dir / "bench_cycle_history.png")
    if cycle_history(ws):
        plots["cycle_history"] = plot_cycle_history(ws, out_dir / "cycle_history.png")
    return plots


def _html_table(rows: list[list[str]], head: list[str]) -> str:
    out = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    for r in rows:
        out += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
    return out + "</table>"


def write_html_report(ws: Workspace, out: Path) -> tuple[Path, dict[str, Path]]:
    """An HTML page (plots embedded as PNG data) of the bench and the cycle history; the PNGs are
    also written to `<out stem>-plots/`. Returns the page and the plots."""
    plots = write_plots(ws, out.parent / f"{out.stem}-plots")
    if not plots:
        raise FileNotFoundError(f"nothing to report in '{ws.root}'; run `rlhfops bench` or `rlhfops run` first")
    parts = [f"<h1>rlhfops report: {html.escape(str(ws.root))}</h1>"]
    if has_bench(ws):
        bench = read_bench(ws)
        rows = [
            [
                r["technique"],
                r["purpose"],
                r["measure"],
                f"{r['mean']:+.3f} +- {r['std']:.3f}",
                " / ".join(f"{g:+.3f}" for g in r["gains"]),
                relative_text(r),
                r["verdict"],
                r["cost"],
            ]
            for r in table_rows(bench)
        ]
        parts += [
            "<h2>Techniques on the built-in task</h2>",
            _html_table(
                rows, ["technique", "what it is for", "measured", "gain", "per seed", "relative", "verdict", "cost"]
            ),
            f"<p>Seeds {html.escape(str(bench['seeds']))}, {bench['plan']['name']} plan, "
            f"{bench['seconds'] / 60:.1f} min.</p>",
            "<h2>Behind the rows (means over seeds)</h2><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in detail_lines(bench))
            + "</ul>",
            "<h2>Speed ratios</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in speed_lines(bench["speed"])),
            "</ul>",
        ]
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{name}' src='data:image/png;base64,{data}'>"
        )
    style = "body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{border:1px solid #ccc;padding:4px}"
    atomic_write_text(
        out, f"<html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return out, plots
