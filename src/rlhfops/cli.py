"""`rlhfops ...`: one sub-command per stage; each wires a library function to paths and config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rlhfops.config import Config, ConfigError, load_config
from rlhfops.workspace import Workspace

app = typer.Typer(
    name="rlhfops",
    help="Iterative RLHF on Kubeflow: the stages of one RLHF cycle, runnable one by one or as a whole.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config: a path or a name in configs/ (tiny, smoke).")
]
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Directory holding models and results.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key, e.g. --set sft.lr=3e-4 (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _setup(config: str | None, overrides: list[str] | None, workspace: Path) -> tuple[Config, Workspace]:
    try:
        cfg = load_config(config, overrides or ())
        ws = Workspace(workspace)
    except (ConfigError, NotADirectoryError) as e:
        _fail(str(e))
    _quiet_libraries()
    return cfg, ws


def _quiet_libraries() -> None:
    """Our own progress bars and tables only: no tqdm bars or advisory warnings from HF libraries."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _train_sft(cfg: Config, ws: Workspace, progress: bool) -> Path:
    from rlhfops.sft import run_sft

    try:
        return run_sft(cfg, ws.model_dir("sft"), progress=progress)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _evaluate(cfg: Config, ws: Workspace, model_path: Path | None, name: str) -> dict[str, Any]:
    """Gold evaluation of a saved policy, or of the untrained starting policy when model_path is None."""
    from rlhfops.evaluation import evaluate, evaluate_dir
    from rlhfops.files import atomic_write_json
    from rlhfops.modeling import init_policy
    from rlhfops.tasks import make_task

    try:
        if model_path is not None:
            result = evaluate_dir(cfg, model_path)
        else:
            tokenizer, model = init_policy(cfg)
            result = {"model": "untrained", **evaluate(model, tokenizer, make_task(cfg.task, seed=cfg.seed), cfg)}
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    atomic_write_json(ws.eval_path(name), result)
    return result


@app.command()
def sft(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the starting policy on noisy-teacher data (trl SFTTrainer)."""
    cfg, ws = _setup(config, set_, workspace)
    out = _train_sft(cfg, ws, progress=not json_out)
    log = json.loads((out / "train_log.json").read_text())
    losses = [row["loss"] for row in log if "loss" in row]
    summary = {
        "model_dir": str(out),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "steps": log[-1].get("step") if log else 0,
    }
    if json_out:
        _emit_json(summary)
    else:
        console.print(
            f"SFT policy written to [bold]{out}[/] (loss {summary['first_loss']:.3f} -> "
            f"{summary['final_loss']:.3f} over {summary['steps']} steps)"
        )


@app.command("eval")
def eval_(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Policy directory; default: the workspace's SFT policy.")
    ] = None,
) -> None:
    """Gold evaluation of a policy on the held-out test split."""
    from rlhfops.evaluation import eval_table

    cfg, ws = _setup(config, set_, workspace)
    path = model or ws.model_dir("sft")
    if not path.is_dir():
        _fail(f"model directory '{path}' does not exist; train one with `rlhfops sft` or pass --model")
    result = _evaluate(cfg, ws, path, path.name)
    if json_out:
        _emit_json(result)
    else:
        console.print(eval_table({path.name: result}))


@app.command()
def run(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    cycles: Annotated[
        int | None, typer.Option("--cycles", "-n", help="cycles to run (default pipeline.cycles)")
    ] = None,
) -> None:
    """The main job: the SFT policy (once), then N iterative-RLHF cycles, each the cycle pipeline run
    through kfp.local, with simulated canary traffic between cycles."""
    from rlhfops.cycle import decide_canary, next_cycle
    from rlhfops.evaluation import eval_table

    cfg, ws = _setup(config, set_, workspace)
    n_cycles = cycles if cycles is not None else cfg.pipeline.cycles
    if n_cycles < 1:
        _fail(f"--cycles must be at least 1, got {n_cycles}")
    import time

    from rlhfops.files import atomic_write_json

    started = time.perf_counter()
    sft = ws.model_dir("sft")
    sft_seconds = None
    if not (sft / "config.json").exists():
        sft = _train_sft(cfg, ws, progress=not json_out)
        sft_seconds = time.perf_counter() - started
        results = {"untrained": _evaluate(cfg, ws, None, "untrained"), "sft": _evaluate(cfg, ws, sft, "sft")}
        if not json_out:
            console.print(eval_table(results))
    elif not ws.eval_path("sft").exists():
        _evaluate(cfg, ws, sft, "sft")
    if not json_out:
        console.print(f"SFT policy in {sft}/")
    report = {"sft": _read_json(ws.eval_path("sft")), "sft_seconds": sft_seconds, "cycles": []}
    for _ in range(n_cycles):
        cycle = next_cycle(ws)
        report["cycles"].append(_run_cycle(cfg, ws, config, set_ or [], cycle, quiet=json_out))
    final = decide_canary(cfg, ws)  # the last cycle's canary, on the traffic it got
    report["final_canary"] = final
    report["stable"] = _stable_gold(cfg, ws)
    report["seconds"] = time.perf_counter() - started
    atomic_write_json(ws.eval_path("run"), report)  # `make readme` tabulates it
    if json_out:
        _emit_json(report)
        return
    console.print(f"last canary: {final['decision']} ({final['reason']})")
    console.print(eval_table({"sft": report["sft"], "stable": report["stable"]}, title="SFT vs the stable model now"))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _run_cycle(cfg: Config, ws: Workspace, config: str | None, overrides: list[str], cycle: int, quiet: bool) -> dict:
    """One cycle pipeline run through kfp.local; its table; simulated traffic for its canary."""
    import time

    from pipelines.local import run_cycle
    from rlhfops.cycle import cycle_eval_path, cycle_gate_path
    from rlhfops.registry import Registry

    terminal = Console(file=sys.stdout)  # kfp.local's own output is redirected to the log while it runs

    def emit(task: str, state: str, seconds: float) -> None:
        if not quiet:
            colour = "green" if state == "SUCCESS" else "red"
            terminal.print(f"  \\[cycle {cycle}] {task:<30} [{colour}]{state.lower():<8}[/{colour}] {seconds:7.1f} s")

    if not quiet:
        console.rule(f"cycle {cycle}")
    start = time.perf_counter()
    ok, failure, log = run_cycle(cfg, ws, config or "", overrides, emit)
    if not ok:
        _fail(f"cycle {cycle} failed: {failure} (full log: {log})")
    summary = _read_json(cycle_eval_path(ws, cycle))
    canary = Registry(ws.root).canary()
    deployed = canary is not None and canary.get("metrics", {}).get("cycle") == cycle
    row = {
        "cycle": cycle,
        "seconds": time.perf_counter() - start,
        "results": {
            k: {m: v for m, v in r.items() if m not in ("samples", "per_prompt")} for k, r in summary["results"].items()
        },
        "gate": _read_json(cycle_gate_path(ws, cycle)) if cycle_gate_path(ws, cycle).exists() else None,
        "canary": canary["id"] if deployed else None,
    }
    if deployed and cfg.pipeline.simulate:
        from rlhfops.serving.simulate import simulate_traffic

        row["traffic"] = simulate_traffic(cfg, ws.root, _traffic_needed(cfg))
    row["seconds"] = time.perf_counter() - start  # the pipeline run and the simulated traffic
    if not quiet:
        _print_cycle(row)
    return row


def _traffic_needed(cfg: Config) -> int:
    """Requests for the canary to reach the gate's first look (min_samples feedback), with 15% slack."""
    import math

    share = max(cfg.serving.canary_percent, 1) / 100
    return max(cfg.simulate.n_requests, math.ceil(1.15 * cfg.gate.min_samples / share))


def _print_cycle(row: dict) -> None:
    from rich.table import Table

    results = row["results"]
    objectives = list(next(iter(results.values()))["gold"])
    table = Table(title=f"cycle {row['cycle']}: gold scores on the test split ({row['seconds']:.0f} s)")
    for col in ["model", "composite", *objectives, "solve acc"]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        solve = r.get("solve_accuracy")
        table.add_row(
            name,
            f"{r['gold_composite']:.3f}",
            *(f"{r['gold'][o]:.3f}" for o in objectives),
            f"{solve:.3f}" if solve is not None else "-",
        )
    console.print(table)
    gate = row.get("gate") or {}
    console.print(f"gate: {gate.get('decision', '-')} {gate.get('candidate') or ''} ({gate.get('reason', '')})")
    if row.get("canary"):
        traffic = row.get("traffic")
        line = f"canary: {row['canary']} deployed"
        if traffic:
            per = traffic["versions"]
            shares = ", ".join(f"{v} {d['requests']} req mean gold {d['mean_gold']:.3f}" for v, d in per.items())
            line += f"; simulated {traffic['requests']} requests ({traffic['errors']} errors): {shares}"
        console.print(line)
    else:
        console.print("canary: none deployed this cycle")


def _stable_gold(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Gold evaluation of the registry's stable model (cached per version in <ws>/eval/)."""
    from rlhfops.cycle import ensure_stable

    stable = ensure_stable(cfg, ws)
    path = ws.eval_path(f"stable-{stable['id']}")
    if path.exists():
        return _read_json(path)
    return _evaluate(cfg, ws, Path(stable["path"]), f"stable-{stable['id']}")


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
    from rlhfops.cycle import STAGES, ensure_stable, run_stage, scalars
    from rlhfops.files import atomic_write_json

    if name not in STAGES:
        _fail(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    if cycle < 1:
        _fail(f"--cycle must be at least 1, got {cycle}")
    cfg, ws = _setup(config, set_, workspace)
    try:
        ensure_stable(cfg, ws)
        result = run_stage(name, str(ws.root), config or "", list(set_ or []), cycle, f"stage-{name}")
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if name == "reward_plan":  # the fan-out, run here one after another
        for spec in result:
            run_stage("reward_member", str(ws.root), config or "", list(set_ or []), cycle, f"stage-{name}", spec=spec)
        result = {"members": len(result)}
    numbers = scalars(result) if isinstance(result, dict) else {}
    if metrics is not None:
        atomic_write_json(metrics, numbers)
    if json_out:
        _emit_json(result)
    else:
        console.print(f"{name} (cycle {cycle}): " + ", ".join(f"{k} {v:g}" for k, v in list(numbers.items())[:8]))


@app.command("compile")
def compile_(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the KFP IR YAML")] = Path(
        "pipelines/iterative_rlhf.yaml"
    ),
) -> None:
    """Compile the cycle pipeline to KFP IR YAML (upload it in the Kubeflow UI, or `rlhfops schedule`)."""
    from pipelines.iterative_rlhf import compile_pipeline

    try:
        cfg = load_config(config, set_ or ())
    except ConfigError as e:
        _fail(str(e))
    path = compile_pipeline(cfg, out)
    console.print(f"wrote {path}")


@app.command()
def schedule(
    host: Annotated[str, typer.Option("--host", help="Kubeflow Pipelines API endpoint, e.g. https://host/pipeline")],
    cron: Annotated[str, typer.Option("--cron", help="six-field KFP cron, seconds first")] = "0 0 2 * * 0",
    package: Annotated[Path, typer.Option("--package", help="compiled pipeline")] = Path(
        "pipelines/iterative_rlhf.yaml"
    ),
    experiment: Annotated[str, typer.Option("--experiment")] = "rlhfops",
    job_name: Annotated[str, typer.Option("--job-name")] = "rlhfops-weekly-cycle",
    run_config: Annotated[str, typer.Option("--run-config", help="the runs' `config` parameter")] = "tiny",
    run_set: Annotated[list[str] | None, typer.Option("--run-set", help="the runs' `overrides` (repeatable)")] = None,
    workspace_path: Annotated[str, typer.Option("--run-workspace", help="the runs' `workspace` parameter")] = (
        "/workspace"
    ),
    namespace: Annotated[str | None, typer.Option("--namespace", help="KFP namespace (multi-user)")] = None,
) -> None:
    """Upload the compiled pipeline (or a new version) and create a recurring run: one cycle at a
    time (max_concurrency=1), no back-filling of missed slots (no_catchup)."""
    import os

    import kfp

    from pipelines.schedule import schedule as schedule_pipeline

    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=os.environ.get("KF_TOKEN"))
        done = schedule_pipeline(
            client,
            package,
            cron,
            experiment=experiment,
            job_name=job_name,
            params={"workspace": workspace_path, "config": run_config, "overrides": list(run_set or [])},
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    except Exception as e:  # the API client's connection and HTTP errors
        _fail(f"cannot schedule on {host}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    console.print(
        f"pipeline {done.pipeline_id} version {done.version_id}: recurring run {done.recurring_run_id} "
        f"in experiment {done.experiment_id} ({cron})"
    )


def _require_policy(ws: Workspace) -> Path:
    policy = ws.model_dir("sft")
    if not (policy / "config.json").exists():
        _fail(f"no policy in '{policy}'; train one with `rlhfops sft` first")
    return policy


@app.command("train-rm")
def train_rm(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train reward-model ensembles: every objective x ensemble member (trl RewardTrainer)."""
    from rich.table import Table

    from rlhfops.reward.train import SUMMARY, train_reward_models

    cfg, ws = _setup(config, set_, workspace)
    policy = _require_policy(ws)
    data = ws.data_dir("preferences")
    try:
        # the union of the workspace's cycles when it has cycle data, else pairs sampled from the policy
        out = train_reward_models(cfg, data, policy, ws.model_dir("reward"), progress=not json_out, workspace=ws)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    summary = json.loads((out / SUMMARY).read_text())
    if json_out:
        _emit_json(summary)
        return
    table = Table(title=f"reward ensembles ({cfg.reward.kind}, K={cfg.reward.members}), clean validation pairs")
    for col in ("objective", "pairs", "member acc", "ens mean", "weighted", "min", "uwo", "spread ok/wrong"):
        table.add_column(col, justify="right")
    for obj in cfg.reward.objectives:
        s = summary[obj]
        acc = s["ensemble_accuracy"]
        table.add_row(
            obj,
            str(s["pairs"]),
            f"{s['mean_member_accuracy']:.3f}",
            *[f"{acc[h]:.3f}" for h in ("mean", "weighted", "min", "uwo")],
            f"{s['spread_when_right'] or 0:.2f}/{s['spread_when_wrong'] or 0:.2f}",
        )
    console.print(table)
    console.print(f"ensembles in {out}/")


@app.command()
def score(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL with `prompt` and `response`.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score prompt/response pairs: per-objective aggregates and spreads, PRM step scores, composite."""
    from rlhfops.files import read_jsonl
    from rlhfops.reward.functions import CompositeReward, load_ensembles

    cfg, ws = _setup(config, set_, workspace)

    def check(record: dict[str, Any]) -> str | None:
        for field in ("prompt", "response"):
            if not isinstance(record.get(field), str):
                return f"field '{field}' must be a string"
        return None

    try:
        records = read_jsonl(input_path, check)
        ensembles = load_ensembles(ws.model_dir("reward"), cfg.reward.objectives)
        prm = _load_prm(ws)
        prompts, responses = [r["prompt"] for r in records], [r["response"] for r in records]
        parts = CompositeReward(ensembles, cfg, prm if cfg.reward.prm_weight > 0 else None).vectors(prompts, responses)
        steps = prm.step_scores(prompts, responses) if prm is not None else [None] * len(records)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    rows = []
    for i, r in enumerate(records):
        rows.append(
            {
                "prompt": r["prompt"],
                "response": r["response"],
                "rewards": dict(zip(ensembles, parts["rewards"][i].tolist(), strict=True)),
                "spreads": dict(zip(ensembles, parts["spreads"][i].tolist(), strict=True)),
                "prm_steps": steps[i],
                "composite": parts["total"][i].item(),
            }
        )
    if json_out:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"scores ({cfg.reward.aggregation} over members; spread in brackets)")
    table.add_column("response")
    for obj in ensembles:
        table.add_column(obj, justify="right")
    table.add_column("PRM steps", justify="right")
    table.add_column("composite", justify="right")
    for row in rows:
        table.add_row(
            repr(row["response"]),
            *[f"{row['rewards'][o]:+.2f} ({row['spreads'][o]:.2f})" for o in ensembles],
            " ".join(f"{p:.2f}" for p in row["prm_steps"]) if row["prm_steps"] else "-",
            f"{row['composite']:+.3f}",
        )
    console.print(table)


@app.command("train-prm")
def train_prm(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the process reward model on exact step labels (a probability per step)."""
    from rlhfops.reward.prm import train_prm_on_task

    cfg, ws = _setup(config, set_, workspace)
    policy = _require_policy(ws)
    try:
        metrics = train_prm_on_task(
            cfg, policy, ws.data_dir("steps"), ws.model_dir("prm"), progress=not json_out, workspace=ws
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if json_out:
        _emit_json(metrics)
        return
    console.print(
        f"PRM validation step accuracy {metrics['step_accuracy']:.3f} (bad steps {metrics['bad_step_accuracy']:.3f}, "
        f"good steps {metrics['good_step_accuracy']:.3f}, {metrics['n_steps']} steps)"
    )
    for how, r in metrics["ranking"].items():
        console.print(f"  reference above the same solution with one wrong step ({how}): {r['rate']:.3f} of {r['n']}")
    console.print(f"PRM in {ws.model_dir('prm')}/")


@app.command("tune-weights")
def tune_weights(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Grid-search scalarisation weights on validation candidates; learn per-prompt weights."""
    from rlhfops.reward.tuning import tune_weights as run_tuning

    cfg, ws = _setup(config, set_, workspace)
    policy = _require_policy(ws)
    try:
        report = run_tuning(cfg, policy, ws.model_dir("reward"), ws.model_dir("reward") / "weights.json")
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if json_out:
        _emit_json(report)
        return
    weights = ", ".join(f"{k} {v:.2f}" for k, v in report["best_weights"].items())
    console.print(f"best weights over {report['grid_size']} grid points: {weights}")
    for name, value in report["test_utility"].items():
        console.print(f"  test gold utility of the picked candidate, {name.replace('_', ' ')}: {value:.3f}")
    as_yaml = ", ".join(f"{k}: {v:g}" for k, v in report["best_weights"].items())
    console.print(
        f"written to {ws.model_dir('reward') / 'weights.json'}; use with --set 'scalarisation.weights={{{as_yaml}}}'",
        soft_wrap=True,
    )


@app.command("train-policy")
def train_policy(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Optimise the SFT policy: our PPO, or TRL's GRPO / RLOO (policy.algorithm); then gold-evaluate it."""
    from rlhfops.evaluation import eval_table

    cfg, ws = _setup(config, set_, workspace)
    policy = _require_policy(ws)
    algorithm = cfg.policy.algorithm
    out = ws.model_dir(algorithm)
    rm_dir = ws.model_dir("reward") if cfg.policy.reward == "composite" else None
    prm_dir = ws.model_dir("prm") if (ws.model_dir("prm") / "config.json").exists() else None
    try:
        if algorithm == "ppo":
            from rlhfops.rl.ppo import train_ppo

            train_ppo(cfg, policy, out, rm_dir, prm_dir, progress=not json_out)
        else:
            from rlhfops.rl.trl_online import train_trl_online

            train_trl_online(cfg, policy, rm_dir, out, progress=not json_out, prm_dir=prm_dir)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    results = {"sft": _evaluate(cfg, ws, policy, "sft"), algorithm: _evaluate(cfg, ws, out, algorithm)}
    if json_out:
        _emit_json(results)
    else:
        console.print(eval_table(results))
        console.print(f"policy in {out}/")


@app.command()
def bon(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Policy directory; default: the SFT policy.")
    ] = None,
) -> None:
    """Best-of-N evaluation: gold and proxy score for each N in best_of_n.n_values, and adaptive N."""
    from rich.table import Table

    from rlhfops.inference.best_of_n import evaluate_best_of_n

    cfg, ws = _setup(config, set_, workspace)
    policy = model or _require_policy(ws)
    prm_dir = ws.model_dir("prm") if (ws.model_dir("prm") / "config.json").exists() else None
    try:
        result = evaluate_best_of_n(
            cfg,
            policy,
            ws.model_dir("reward"),
            prm_dir,
            ws.eval_path(f"bon-{policy.name}"),
            cache_dir=ws.root / "cache" / "bon",
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if json_out:
        _emit_json(result)
        return
    table = Table(title=f"Best-of-N on {result['n_prompts']} test prompts (scorer: {result['scorer']})")
    for col in ("N", "gold", "proxy", "samples", "KL bound"):
        table.add_column(col, justify="right")
    for row in result["curve"]:
        table.add_row(
            str(row["n"]), f"{row['gold']:.3f}", f"{row['proxy']:.3f}", str(row["samples"]), f"{row['kl']:.3f}"
        )
    a = result["adaptive"]
    table.add_row(f"adaptive (max {a['n']})", f"{a['gold']:.3f}", f"{a['proxy']:.3f}", str(a["samples"]), "-")
    console.print(table)


@app.command()
def offline(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Offline RL (IQL / CQL / ILQL) on the SFT policy's logged, scored samples; then gold-evaluate it."""
    from rlhfops.evaluation import eval_table
    from rlhfops.rl.ilql import build_offline_data, train_offline
    from rlhfops.rl.ppo import make_reward

    cfg, ws = _setup(config, set_, workspace)
    policy = _require_policy(ws)
    data = ws.data_dir("offline") / f"samples-{cfg.offline.reward}.jsonl"
    out = ws.model_dir("offline")
    try:
        if not data.exists():
            reward_cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"reward": cfg.offline.reward})})
            build_offline_data(cfg, policy, data, make_reward(reward_cfg, ws.model_dir("reward"), None))
        train_offline(cfg, policy, data, out, progress=not json_out)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    results = {"sft": _evaluate(cfg, ws, policy, "sft"), "offline": _evaluate(cfg, ws, out, "offline")}
    if json_out:
        _emit_json(results)
    else:
        console.print(eval_table(results))
        console.print(f"offline policy in {out}/ (decoding beta {cfg.offline.decode_beta})")


def _load_prm(ws: Workspace):
    from rlhfops.reward.prm import ProcessRewardModel

    path = ws.model_dir("prm")
    return ProcessRewardModel.load(path) if (path / "config.json").exists() else None


# Sub-commands defined in their own modules register themselves on `app` when imported.
from rlhfops import cli_bench, cli_data, cli_serving  # noqa: E402, F401

if __name__ == "__main__":
    app()
