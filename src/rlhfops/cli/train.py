"""`rlhfops sft | eval | train-rm | score | train-prm | tune-weights | train-policy | bon | offline`:
the training and evaluation stages on their own, outside a cycle."""

from __future__ import annotations

import json
import sys
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
    evaluate_to_workspace,
    fail,
    read_json,
    require_model,
    require_policy,
    setup,
    train_sft,
    trained_model,
    user_errors,
)
from rlhfops.workspace import RM_SUMMARY, RM_WEIGHTS, TRAIN_LOG


@app.command()
def sft(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the model here instead of the workspace's SFT policy: e.g. a longer-trained verifier LM "
            "for reward.likelihood_lm and prm.init.",
        ),
    ] = None,
) -> None:
    """Train the starting policy on noisy-teacher data (trl SFTTrainer)."""
    cfg, ws = setup(config, set_, workspace)
    out = train_sft(cfg, ws, progress=not json_out, out=out)
    log = read_json(out / TRAIN_LOG)
    losses = [row["loss"] for row in log if "loss" in row]
    summary = {
        "model_dir": str(out),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "steps": log[-1].get("step") if log else 0,
    }
    if json_out:
        emit_json(summary)
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

    cfg, ws = setup(config, set_, workspace)
    path = model or ws.model_dir("sft")
    if not path.exists():
        fail(f"model directory '{path}' does not exist; train one with `rlhfops sft` or pass --model")
    result = evaluate_to_workspace(cfg, ws, path, path.name)
    if json_out:
        emit_json(result)
    else:
        console.print(eval_table({path.name: result}))


@app.command("train-rm")
def train_rm(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train reward-model ensembles: every objective x ensemble member (trl RewardTrainer)."""
    from rich.table import Table

    from rlhfops.reward.train import train_reward_models

    cfg, ws = setup(config, set_, workspace)
    policy = require_policy(ws)
    data = ws.data_dir("preferences")
    with user_errors():
        # the union of the workspace's cycles when it has cycle data, else pairs sampled from the policy
        out = train_reward_models(cfg, data, policy, ws.model_dir("reward"), progress=not json_out, workspace=ws)
    summary = read_json(out / RM_SUMMARY)
    if json_out:
        emit_json(summary)
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


SCORE_CHARS_PER_TOKEN = 32


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
    from rlhfops.reward.build import composite_reward
    from rlhfops.reward.functions import load_ensembles
    from rlhfops.reward.prm import ProcessRewardModel

    cfg, ws = setup(config, set_, workspace)
    # what a record may hold before it reaches a tokenizer: the models read at most max_length tokens,
    # and no tokenizer makes fewer than one token of SCORE_CHARS_PER_TOKEN characters
    max_chars = SCORE_CHARS_PER_TOKEN * max(cfg.reward.max_length, cfg.prm.max_length)

    def check(record: dict[str, Any]) -> str | None:
        for field in ("prompt", "response"):
            if not isinstance(record.get(field), str):
                return f"field '{field}' must be a string"
        chars = len(record["prompt"]) + len(record["response"])
        if chars > max_chars:
            return (
                f"prompt and response hold {chars} characters, more than the {max_chars} that `score` reads "
                f"({SCORE_CHARS_PER_TOKEN} x the longest of reward.max_length and prm.max_length)"
            )
        return None

    with user_errors():
        records = read_jsonl(input_path, check)
        if not records:
            raise ValueError(f"'{input_path}' holds no records to score")
        ensembles = load_ensembles(ws.model_dir("reward"), cfg.reward.objectives)
        prm_dir = trained_model(ws, "prm")
        prm = ProcessRewardModel.load(prm_dir) if prm_dir is not None else None
        prompts, responses = [r["prompt"] for r in records], [r["response"] for r in records]
        parts = composite_reward(cfg, ensembles=ensembles, prm=prm, prm_dir=prm_dir).vectors(prompts, responses)
        steps = prm.step_scores(prompts, responses) if prm is not None else [None] * len(records)
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

    cfg, ws = setup(config, set_, workspace)
    policy = require_policy(ws)
    with user_errors():
        metrics = train_prm_on_task(
            cfg, policy, ws.data_dir("steps"), ws.model_dir("prm"), progress=not json_out, workspace=ws
        )
    if json_out:
        emit_json(metrics)
        return
    if "skipped" in metrics:
        console.print(f"no PRM: {metrics['skipped']}")
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

    cfg, ws = setup(config, set_, workspace)
    policy = require_policy(ws)
    with user_errors():
        report = run_tuning(cfg, policy, ws.model_dir("reward"), ws.model_dir("reward") / RM_WEIGHTS)
    if json_out:
        emit_json(report)
        return
    weights = ", ".join(f"{k} {v:.2f}" for k, v in report["best_weights"].items())
    console.print(f"best weights over {report['grid_size']} grid points: {weights}")
    for name, value in report["test_utility"].items():
        console.print(f"  test gold utility of the picked candidate, {name.replace('_', ' ')}: {value:.3f}")
    as_yaml = ", ".join(f"{k}: {v:g}" for k, v in report["best_weights"].items())
    console.print(
        f"written to {ws.model_dir('reward') / RM_WEIGHTS}; use with --set 'scalarisation.weights={{{as_yaml}}}'",
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
    from rlhfops.rl.train import train_policy as optimise

    cfg, ws = setup(config, set_, workspace)
    policy = require_policy(ws)
    algorithm = cfg.policy.algorithm
    out = ws.model_dir(algorithm)
    with user_errors():
        optimise(cfg, policy, out, ws.model_dir("reward"), trained_model(ws, "prm"), progress=not json_out)
    results = {
        "sft": evaluate_to_workspace(cfg, ws, policy, "sft"),
        algorithm: evaluate_to_workspace(cfg, ws, out, algorithm),
    }
    if json_out:
        emit_json(results)
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

    cfg, ws = setup(config, set_, workspace)
    policy = require_model(model) if model else require_policy(ws)
    with user_errors():
        result = evaluate_best_of_n(
            cfg,
            policy,
            ws.model_dir("reward"),
            trained_model(ws, "prm"),
            ws.eval_path(f"bon-{policy.name}"),
            cache_dir=ws.root / "cache" / "bon",
        )
    if json_out:
        emit_json(result)
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
    from rlhfops.reward.build import reward_fn
    from rlhfops.rl.ilql import build_offline_data, train_offline

    cfg, ws = setup(config, set_, workspace)
    policy = require_policy(ws)
    data = ws.data_dir("offline") / f"samples-{cfg.offline.reward}.jsonl"
    out = ws.model_dir("offline")
    with user_errors():
        if not data.exists():  # the reward models are let go before training (no local keeps them alive)
            build_offline_data(
                cfg, policy, data, reward_fn(cfg, cfg.offline.reward, ws.model_dir("reward"), trained_model(ws, "prm"))
            )
        train_offline(cfg, policy, data, out, progress=not json_out)
    results = {
        "sft": evaluate_to_workspace(cfg, ws, policy, "sft"),
        "offline": evaluate_to_workspace(cfg, ws, out, "offline"),
    }
    if json_out:
        emit_json(results)
    else:
        console.print(eval_table(results))
        console.print(f"offline policy in {out}/ (the beta {cfg.offline.decode_beta} shift extracted into the LM)")
