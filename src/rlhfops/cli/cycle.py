"""`rlhfops run | stage | compile | schedule`: whole cycles through kfp.local, one stage on its own,
and the pipeline for a Kubeflow cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from rlhfops.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    console,
    emit_json,
    evaluate_to_workspace,
    fail,
    read_json,
    setup,
    train_sft,
    user_errors,
)
from rlhfops.config import Config, load_config
from rlhfops.pipeline import COMPILED
from rlhfops.workspace import Workspace, is_model_dir

if TYPE_CHECKING:
    from rlhfops.pipeline.warm import WarmServer


@app.command()
def run(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycles: Annotated[
        int | None,
        typer.Option(
            "--cycles",
            "-n",
            help="run until the workspace has this many finished cycles (default pipeline.cycles); a re-run "
            "after a crash completes the same total, it does not add N more",
        ),
    ] = None,
) -> None:
    """The main job: the SFT policy (once), then iterative-RLHF cycles until the workspace has N
    finished ones, each the cycle pipeline run through kfp.local, with simulated canary traffic
    between cycles. Holds the workspace lock: a second `rlhfops run` on the same workspace says who
    holds it and exits 2."""
    from contextlib import ExitStack

    from rlhfops.cycle import workspace_lock

    cfg, ws = setup(config, set_, workspace)
    n_cycles = cycles if cycles is not None else cfg.pipeline.cycles
    if n_cycles < 1:
        fail(f"--cycles must be at least 1, got {n_cycles}")
    with ExitStack() as held:
        with user_errors():
            note = held.enter_context(workspace_lock(ws))
        if note:
            typer.secho(f"note: {note}", err=True)
        from rlhfops.pipeline.local import start_warm_server

        warm = start_warm_server(cfg, held)  # one for every cycle; its imports overlap the SFT step
        _run(cfg, ws, config, set_, json_out, n_cycles, warm)


def _run(
    cfg: Config,
    ws: Workspace,
    config: str | None,
    set_: list[str] | None,
    json_out: bool,
    n_cycles: int,
    warm: WarmServer | None = None,
) -> None:
    import time

    from rlhfops.cycle import cycles_done, decide_canary, next_cycle
    from rlhfops.evaluation import eval_table, win_rate
    from rlhfops.files import atomic_write_json

    started = time.perf_counter()
    sft = ws.model_dir("sft")
    sft_seconds = None
    if not is_model_dir(sft):
        sft = train_sft(cfg, ws, progress=not json_out)
        sft_seconds = time.perf_counter() - started
        results = {
            "untrained": evaluate_to_workspace(cfg, ws, None, "untrained"),
            "sft": evaluate_to_workspace(cfg, ws, sft, "sft"),
        }
        if not json_out:
            console.print(eval_table(results))
    elif not ws.eval_path("sft").exists():
        evaluate_to_workspace(cfg, ws, sft, "sft")
    if not json_out:
        console.print(f"SFT policy in {sft}/")
    report = {"sft": read_json(ws.eval_path("sft")), "sft_seconds": sft_seconds, "cycles": []}
    if not json_out and cycles_done(ws) >= n_cycles:
        console.print(f"the workspace has {cycles_done(ws)} finished cycles already (asked for {n_cycles})")
    while cycles_done(ws) < n_cycles:
        cycle = next_cycle(ws)
        row = _run_cycle_pipeline_with_traffic(cfg, ws, config, set_ or [], cycle, quiet=json_out, warm=warm)
        report["cycles"].append(row)
        if cycles_done(ws) < cycle:  # the pipeline said it succeeded, yet the cycle is not done: never loop
            fail(f"cycle {cycle} ran but is not done (no gate decision, or a deploy without its canary)")
    with user_errors():
        final = decide_canary(cfg, ws)  # the last cycle's canary, on the traffic it got
        report["final_canary"] = final
        report["stable"] = _stable_gold(cfg, ws)
    start = read_json(ws.eval_path("untrained")) if ws.eval_path("untrained").exists() else None
    if start is not None:  # the model the run started from, on the same prompts and judges
        report["start"] = start
        for name in ("sft", "stable"):
            report[f"{name}_win_rate_vs_start"] = win_rate(start["per_prompt"], report[name]["per_prompt"])
    report["seconds"] = time.perf_counter() - started
    atomic_write_json(ws.eval_path("run"), report)  # `make readme` tabulates it
    if json_out:
        emit_json(report)
        return
    console.print(f"last canary: {final['decision']} ({final['reason']})")
    if "start" not in report:
        title = "SFT vs the stable model now"
        console.print(eval_table({"sft": report["sft"], "stable": report["stable"]}, title=title))
        return
    columns = {"start": report["start"]}
    for name in ("sft", "stable"):
        columns[name] = {**report[name], "win_rate": report[f"{name}_win_rate_vs_start"]}
    title = "the start model, SFT and the stable model now (evaluation judges)"
    console.print(eval_table(columns, title=title, versus="start"))


def _run_cycle_pipeline_with_traffic(
    cfg: Config,
    ws: Workspace,
    config: str | None,
    overrides: list[str],
    cycle: int,
    quiet: bool,
    warm: WarmServer | None = None,
) -> dict[str, Any]:
    """One pipeline run of cycle `cycle` through kfp.local, its table of gold scores, and simulated
    traffic for the canary it deployed; returns the cycle's row of `rlhfops run`'s report."""
    import time

    from rlhfops.cycle import cycle_eval_path, cycle_gate_path
    from rlhfops.pipeline.local import run_local
    from rlhfops.registry import Registry

    terminal = Console(file=sys.stdout)  # kfp.local's own output is redirected to the log while it runs

    def emit(task: str, state: str, seconds: float) -> None:
        if not quiet:
            colour = "green" if state == "SUCCESS" else "red"
            terminal.print(f"  \\[cycle {cycle}] {task:<30} [{colour}]{state.lower():<8}[/{colour}] {seconds:7.1f} s")

    if not quiet:
        console.rule(f"cycle {cycle}")
    start = time.perf_counter()
    ok, failure, log = run_local(cfg, ws, config or "", overrides, emit, warm)
    if not ok:
        fail(f"cycle {cycle} failed: {failure} (full log: {log})")
    summary = read_json(cycle_eval_path(ws, cycle))
    canary = Registry(ws.root).canary()
    deployed = canary is not None and canary.get("metrics", {}).get("cycle") == cycle
    row = {
        "cycle": cycle,
        "seconds": time.perf_counter() - start,
        "results": {
            k: {m: v for m, v in r.items() if m not in ("samples", "per_prompt")} for k, r in summary["results"].items()
        },
        "gate": read_json(cycle_gate_path(ws, cycle)) if cycle_gate_path(ws, cycle).exists() else None,
        "canary": canary["id"] if deployed else None,
    }
    if deployed and cfg.pipeline.simulate:
        from rlhfops.cycle import online_verdict
        from rlhfops.serving.simulate import simulate_traffic

        def undecided() -> bool:  # the online gate would wait: the canary needs another look's traffic
            return online_verdict(cfg, ws)[1].decision == "wait"

        with user_errors():  # a canary the next cycle would replace undecided never gets its verdict
            n = _traffic_needed(cfg)
            row["traffic"] = simulate_traffic(cfg, ws.root, n, more=undecided, max_rounds=cfg.gate.max_looks)
    row["seconds"] = time.perf_counter() - start  # the pipeline run and the simulated traffic
    if not quiet:
        _print_cycle(row)
    return row


def _traffic_needed(cfg: Config) -> int:
    """Requests for the canary to reach the gate's first look (min_samples feedback), with 15% slack."""
    import math

    share = max(cfg.serving.canary_percent, 1) / 100
    return max(cfg.simulate.n_requests, math.ceil(1.15 * cfg.gate.min_samples / share))


def _print_cycle(row: dict[str, Any]) -> None:
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    results = row["results"]
    objectives = list(next(iter(results.values()))["gold"])
    title = f"cycle {row['cycle']}: eval judges' scores on the test split, win rate vs stable ({row['seconds']:.0f} s)"
    table = Table(title=title)
    for col in ["model", "composite", "win rate", *objectives, "solve acc"]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            fmt(r["gold_composite"]),
            fmt(r.get("win_rate")),
            *(fmt(r["gold"][o]) for o in objectives),
            fmt(r.get("solve_accuracy")),
        )
    console.print(table)
    gate = row.get("gate") or {}
    console.print(f"gate: {gate.get('decision', '-')} {gate.get('candidate') or ''} ({gate.get('reason', '')})")
    if row.get("canary"):
        traffic = row.get("traffic")
        line = f"canary: {row['canary']} deployed"
        if traffic:
            per = traffic["versions"]
            shares = ", ".join(f"{v} {d['requests']} req mean score {fmt(d['mean_gold'])}" for v, d in per.items())
            rounds = f" in {traffic['rounds']} rounds" if traffic.get("rounds", 1) > 1 else ""
            line += f"; simulated {traffic['requests']} requests{rounds} ({traffic['errors']} errors): {shares}"
        console.print(line)
    else:
        console.print("canary: none deployed this cycle")


def _stable_gold(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Gold evaluation of the registry's stable model (cached per version in <ws>/eval/)."""
    from rlhfops.cycle import stable_or_register_sft

    stable = stable_or_register_sft(cfg, ws)
    path = ws.eval_path(f"stable-{stable['id']}")
    if path.exists():
        return read_json(path)
    return evaluate_to_workspace(cfg, ws, Path(stable["path"]), f"stable-{stable['id']}")


@app.command()
def stage(
    name: Annotated[
        str,
        typer.Argument(
            help="a stage of rlhfops.cycle.STAGES, e.g. collect, annotate, reward_plan, prm, policy, evaluate, gate"
        ),
    ],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycle: Annotated[int, typer.Option("--cycle", help="the cycle the stage works on")] = 1,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="also write the stage's numbers here (JSON)")
    ] = None,
) -> None:
    """Run one stage of a cycle on its own: the same library function a KFP component calls (dvc.yaml uses this)."""
    from rlhfops.cycle import FAN_OUT, STAGES, parse_spec, run_stage, scalars, stable_or_register_sft
    from rlhfops.files import atomic_write_json

    if name not in STAGES:
        fail(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    if name in FAN_OUT:
        fail(f"stage '{name}' runs once per item of '{FAN_OUT[name]}'; run `rlhfops stage {FAN_OUT[name]}`")
    if cycle < 1:
        fail(f"--cycle must be at least 1, got {cycle}")
    cfg, ws = setup(config, set_, workspace)
    overrides = list(set_ or [])
    with user_errors():
        stable_or_register_sft(cfg, ws)
        result = run_stage(name, str(ws.root), config or "", overrides, cycle, f"stage-{name}")
        fanned_out = next((stage for stage, plan in FAN_OUT.items() if plan == name), None)
        if fanned_out is not None:  # one call per item of the plan, here one after another (KFP: in parallel)
            for spec in result:
                run_stage(fanned_out, str(ws.root), config or "", overrides, cycle, f"stage-{name}", spec=spec)
            result = {"tasks": len(result), "units": sum(len(parse_spec(spec)[1]) for spec in result)}
    numbers = scalars(result) if isinstance(result, dict) else {}
    if metrics is not None:
        atomic_write_json(metrics, numbers)
    if json_out:
        emit_json(result)
    else:
        console.print(f"{name} (cycle {cycle}): " + ", ".join(f"{k} {v:g}" for k, v in list(numbers.items())[:8]))


@app.command("compile")
def compile_(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the KFP IR YAML")] = COMPILED,
) -> None:
    """Compile the cycle pipeline to KFP IR YAML (upload it in the Kubeflow UI, or `rlhfops schedule`)."""
    from rlhfops.pipeline.graph import compile_pipeline

    with user_errors():
        path = compile_pipeline(load_config(config, set_ or ()), out)
    console.print(f"wrote {path}")


@app.command()
def schedule(
    host: Annotated[str, typer.Option("--host", help="Kubeflow Pipelines API endpoint, e.g. https://host/pipeline")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    cron: Annotated[str, typer.Option("--cron", help="six-field KFP cron, seconds first")] = "0 0 2 * * 0",
    package: Annotated[Path, typer.Option("--package", help="compiled pipeline")] = COMPILED,
    experiment: Annotated[str, typer.Option("--experiment")] = "rlhfops",
    job_name: Annotated[str, typer.Option("--job-name")] = "rlhfops-weekly-cycle",
    run_config: Annotated[
        str | None, typer.Option("--run-config", help="the runs' `config` parameter; default: --config, else tiny")
    ] = None,
    run_set: Annotated[list[str] | None, typer.Option("--run-set", help="the runs' `overrides` (repeatable)")] = None,
    workspace_path: Annotated[
        str | None, typer.Option("--run-workspace", help="the runs' `workspace` parameter; default pipeline.mount_path")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="where the runs execute; default pipeline.namespace")
    ] = None,
    service_account: Annotated[
        str | None, typer.Option("--service-account", help="the runs' pods; default pipeline.service_account")
    ] = None,
) -> None:
    """Upload the compiled pipeline (or a new version) and create a recurring run: one cycle at a
    time (max_concurrency=1), no back-filling of missed slots (no_catchup). The runs execute in
    `pipeline.namespace` as `pipeline.service_account` of --config (the one you compiled with), where
    manifests/ put the workspace volume, the Secrets and the Roles."""
    import os

    import kfp

    from rlhfops.pipeline.schedule import schedule as schedule_pipeline

    with user_errors():
        pc = load_config(config, set_ or ()).pipeline
        params = {
            "workspace": workspace_path or pc.mount_path,
            "config": run_config or config or "tiny",
            "overrides": list(run_set or []),
        }
        try:
            client = kfp.Client(
                host=host, namespace=namespace or pc.namespace, existing_token=os.environ.get("KF_TOKEN")
            )
            done = schedule_pipeline(
                client,
                package,
                cron,
                experiment=experiment,
                job_name=job_name,
                params=params,
                service_account=service_account or pc.service_account,
            )
        except (ValueError, FileNotFoundError):
            raise  # the package or the cron: reported as they are
        except Exception as e:  # the API client's connection and HTTP errors, whatever their class
            fail(f"cannot schedule on {host}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    console.print(
        f"pipeline {done.pipeline_id} version {done.version_id}: recurring run {done.recurring_run_id} "
        f"in experiment {done.experiment_id} ({cron})"
    )
