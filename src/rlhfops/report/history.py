"""The cycle history of a workspace (each cycle's gold, gates, canary traffic and online decisions)
and its plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfops.cycle import cycle_gate_path
from rlhfops.report.plots import figure, save_figure
from rlhfops.workspace import Workspace


def cycle_history(ws: Workspace) -> list[dict[str, Any]]:
    """Per cycle of a workspace: gold per objective of stable and each candidate, the pre-deploy gate,
    the canary it deployed, its simulated traffic share (eval/run.json) and online decisions (registry)."""
    from rlhfops.registry import Registry

    run = json.loads(ws.eval_path("run").read_text()) if ws.eval_path("run").exists() else {"cycles": []}
    traffic = {c["cycle"]: c for c in run["cycles"]}
    registry = Registry(ws.root).load()
    cycle_of = {v["id"]: v.get("metrics", {}).get("cycle") for v in registry["versions"]}
    rows = []
    for path in sorted(ws.eval_path("x").parent.glob("cycle-[0-9][0-9][0-9][0-9].json")):
        summary = json.loads(path.read_text())
        n = summary["cycle"]
        gate_path = cycle_gate_path(ws, n)
        row: dict[str, Any] = {
            "cycle": n,
            "gold": {name: {**r["gold"], "composite": r["gold_composite"]} for name, r in summary["results"].items()},
            "gate": json.loads(gate_path.read_text()) if gate_path.exists() else None,
            "online": [d["decision"] for d in registry["decisions"] if cycle_of.get(d["version"]) == n],
            "canary_share": None,
        }
        t = traffic.get(n, {})
        if t.get("traffic") and t.get("canary"):
            row["canary_share"] = t["traffic"]["versions"].get(t["canary"], {}).get("requests", 0) / max(
                t["traffic"]["requests"], 1
            )
        rows.append(row)
    return rows


def plot_cycle_history(ws: Workspace, path: Path) -> Path:
    """Top: gold per objective of stable (solid) and the best candidate (dotted) by cycle. Bottom: the
    canary's share of simulated traffic; under each cycle the pre-deploy gate and the online decisions."""
    rows = cycle_history(ws)
    if not rows:
        raise FileNotFoundError(f"no cycle evaluations in '{ws.eval_path('x').parent}'; run `rlhfops run` first")
    plt, fig, (top, bottom) = figure(nrows=2, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    cycles = [r["cycle"] for r in rows]
    objectives = list(rows[0]["gold"]["stable"])
    for i, obj in enumerate(objectives):
        colour = f"C{i}"
        top.plot(cycles, [r["gold"]["stable"][obj] for r in rows], "o-", color=colour, label=f"stable {obj}")
        best = [max((v[obj] for k, v in r["gold"].items() if k != "stable"), default=float("nan")) for r in rows]
        top.plot(cycles, best, "s:", color=colour, alpha=0.7)
    top.plot([], [], "ks:", label="best candidate (dotted)")
    top.set_ylim(0, 1.05)
    top.set_ylabel("gold (test split)")
    top.legend(fontsize=6, ncol=2, loc="lower right")
    share = [r["canary_share"] if r["canary_share"] is not None else 0.0 for r in rows]
    bottom.bar(cycles, share, color="tab:orange")
    bottom.set_ylim(0, max(0.2, *share))
    bottom.set_ylabel("canary share")
    labels = []
    for r in rows:
        gate = r["gate"] or {}
        labels.append(
            f"{r['cycle']}\ngate: {gate.get('decision', '-')} {gate.get('candidate') or ''}\n"
            f"online: {', '.join(r['online']) or '-'}"
        )
    bottom.set_xticks(cycles, labels, fontsize=7)
    bottom.set_xlabel("cycle")
    fig.suptitle(f"Cycle history of {ws.root}", fontsize=9)
    return save_figure(plt, fig, path)
