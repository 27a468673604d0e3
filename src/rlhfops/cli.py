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
) -> None:
    """The main job on the embedded default: train the SFT policy, then evaluate it beside the untrained one."""
    from rlhfops.evaluation import eval_table

    cfg, ws = _setup(config, set_, workspace)
    out = _train_sft(cfg, ws, progress=not json_out)
    results = {"untrained": _evaluate(cfg, ws, None, "untrained"), "sft": _evaluate(cfg, ws, out, "sft")}
    if json_out:
        _emit_json(results)
    else:
        console.print(eval_table(results))
        console.print(f"results in {ws.eval_path('sft').parent}/, policy in {out}/")


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
from rlhfops import cli_data, cli_serving  # noqa: E402, F401

if __name__ == "__main__":
    app()
