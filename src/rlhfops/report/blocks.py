"""README blocks of the workspace's own results: the gold evaluation, the reward models, the tuned
weights, Best-of-N, the optimised policies and the main job's cycles. Each block reads the files a
command left in the workspace; a missing file is one clear error naming the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfops.workspace import PRM_METRICS, REGISTRY, RM_MANIFEST, RM_SUMMARY, RM_WEIGHTS, TRAIN_LOG, Workspace

ROWS = (
    ("gold helpfulness", lambda r: r["gold"]["helpfulness"]),
    ("gold harmlessness", lambda r: r["gold"]["harmlessness"]),
    ("gold honesty", lambda r: r["gold"]["honesty"]),
    ("gold conciseness", lambda r: r["gold"]["conciseness"]),
    ("gold composite", lambda r: r["gold_composite"]),
    ("solve accuracy", lambda r: r["solve_accuracy"]),
    ("step validity", lambda r: r["step_validity"]),
    ("refusal recall (unsafe refused)", lambda r: r["refusal_recall"]),
    ("over-refusal rate (safe refused)", lambda r: r["over_refusal_rate"]),
    ("undefined recall", lambda r: r["undefined_recall"]),
)


def _score(x: float | None) -> str:
    """A mean score, or '-' when no response was labelled."""
    return "-" if x is None else f"{x:.3f}"


def read_json(path: Path, produced_by: str) -> Any:
    """The JSON a command wrote; a missing file is one clear error naming the command."""
    if not path.exists():
        raise FileNotFoundError(f"'{path}' does not exist; run `{produced_by}` first")
    return json.loads(path.read_text())


def gold_eval_markdown(results: dict[str, dict[str, Any]], train_seconds: float | None = None) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for label, get in ROWS:
        cells = ["-" if get(r) is None else f"{get(r):.3f}" for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = next(iter(results.values()))
    note = f"Test split: {first['n_prompts']} prompts, {first['decoding']}."
    if train_seconds is not None:
        note += f" SFT training took {train_seconds:.0f} s on this machine."
    return "\n".join(lines) + "\n\n" + note


def gold_eval_block(ws: Workspace) -> str:
    results = {name: read_json(ws.eval_path(name), "rlhfops run") for name in ("untrained", "sft")}
    log = read_json(ws.model_dir("sft") / TRAIN_LOG, "rlhfops run")
    seconds = next((row["train_runtime"] for row in log if "train_runtime" in row), None)
    return gold_eval_markdown(results, seconds)


def reward_block(ws: Workspace) -> str:
    summary = read_json(ws.model_dir("reward") / RM_SUMMARY, "rlhfops train-rm")
    manifest = read_json(
        ws.model_dir("reward") / next(k for k in summary if isinstance(summary[k], dict)) / RM_MANIFEST,
        "rlhfops train-rm",
    )
    lines = [
        f"Reward ensembles ({manifest['kind']}, K={len(manifest['members'])}), accuracy on clean validation pairs:",
        "",
        "| objective | pairs | members | mean member | ensemble mean | weighted | min | uwo | spread right "
        "| spread wrong |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for obj, s in summary.items():
        if not isinstance(s, dict):
            continue
        acc = s["ensemble_accuracy"]
        lines.append(
            f"| {obj} | {s['pairs']} | {' / '.join(f'{a:.3f}' for a in s['member_accuracy'])} "
            f"| {s['mean_member_accuracy']:.3f} | {acc['mean']:.3f} | {acc['weighted']:.3f} "
            f"| {acc['min']:.3f} | {acc['uwo']:.3f} | {s['spread_when_right']:.3f} | {s['spread_when_wrong']:.3f} |"
        )
    prm_path = ws.model_dir("prm") / PRM_METRICS
    if prm_path.exists():
        m = json.loads(prm_path.read_text())
        ranking = ", ".join(f"{how} {r['rate']:.3f}" for how, r in m["ranking"].items())
        n = next(iter(m["ranking"].values()))["n"]
        lines += [
            "",
            f"PRM: validation step accuracy {m['step_accuracy']:.3f} over {m['n_steps']} labelled lines "
            f"(bad lines {m['bad_step_accuracy']:.3f}, good lines {m['good_step_accuracy']:.3f}); reference "
            f"scored above the same solution with one wrong step in {ranking} of {n} cases (by aggregation).",
        ]
    return "\n".join(lines)


def weights_block(ws: Workspace) -> str:
    report = read_json(ws.model_dir("reward") / RM_WEIGHTS, "rlhfops tune-weights")
    weights = ", ".join(f"{k} {v:.2f}" for k, v in report["best_weights"].items())
    lines = [
        f"Best weights over {report['grid_size']} simplex grid points (validation): {weights}.",
        "",
        "| candidate picked by | test gold utility |",
        "| --- | ---: |",
    ]
    lines += [f"| {k.replace('_', ' ')} | {v:.3f} |" for k, v in report["test_utility"].items()]
    return "\n".join(lines)


def bon_block(ws: Workspace) -> str:
    result = read_json(ws.eval_path("bon-sft"), "rlhfops bon")
    lines = [
        f"{result['n_prompts']} test prompts, scorer `{result['scorer']}`; gold = mean gold composite of the picked "
        "response, proxy = the scorer's value, KL = the analytic bound log N - (N-1)/N:",
        "",
        "| N | gold | proxy | samples | KL |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['n']} | {r['gold']:.3f} | {r['proxy']:.3f} | {r['samples']} | {r['kl']:.3f} |" for r in result["curve"]
    ]
    a = result["adaptive"]
    lines.append(f"| adaptive (<= {a['n']}) | {a['gold']:.3f} | {a['proxy']:.3f} | {a['samples']} | - |")
    return "\n".join(lines)


def policy_block(ws: Workspace) -> str:
    """SFT beside every optimised policy the workspace holds an evaluation of."""
    results = {"sft": read_json(ws.eval_path("sft"), "rlhfops run")}
    for name in ("ppo", "grpo", "rloo"):
        if ws.eval_path(name).exists():
            results[name] = json.loads(ws.eval_path(name).read_text())
    if len(results) == 1:
        raise FileNotFoundError(f"no policy evaluation in '{ws.eval_path('ppo').parent}'; run `rlhfops train-policy`")
    for name in results:
        if name != "sft":
            log = read_json(ws.model_dir(name) / TRAIN_LOG, "rlhfops train-policy")
            results[name]["_updates"] = len(log) if name == "ppo" else max(r.get("step", 0) for r in log)
    lines = ["| metric | " + " | ".join(results) + " |", "| --- |" + " ---: |" * len(results)]
    for label, get in ROWS[:7]:
        cells = ["-" if get(r) is None else f"{get(r):.3f}" for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| updates | " + " | ".join(str(r.get("_updates", "-")) for r in results.values()) + " |")
    return "\n".join(lines)


def _canary_decision(ws: Workspace, version: str) -> str | None:
    """The online gate's last decision on a canary, from the workspace's registry (None if undecided)."""
    path = ws.root / REGISTRY
    if not path.exists():
        return None
    found = [v for v in json.loads(path.read_text())["versions"] if v["id"] == version]
    decisions = [d for d in found[0].get("decisions", []) if d.get("decision") != "wait"] if found else []
    return decisions[-1]["decision"] if decisions else None


def _cycle_table(ws: Workspace, run: dict[str, Any]) -> list[str]:
    """Per cycle of `rlhfops run`'s report: the stable model and each candidate's gold composite, the
    gate, the canary and its traffic, the wall time."""
    lines = [
        "| cycle | stable | candidates (gold composite) | gate | canary traffic (canary / stable mean gold) | s |",
        "| ---: | ---: | --- | --- | --- | ---: |",
    ]
    for c in run["cycles"]:
        res = c["results"]
        cands = ", ".join(f"{n} {_score(r['gold_composite'])}" for n, r in res.items() if n != "stable")
        gate = c.get("gate") or {}
        decision = f"{gate.get('decision', '-')} {gate.get('candidate') or ''}".strip()
        if gate.get("stats", {}).get("lower") is not None:
            decision += f" (diff {gate['stats']['diff']:+.3f}, lower {gate['stats']['lower']:+.3f})"
        traffic = "-"
        if c.get("traffic"):
            per = c["traffic"]["versions"]
            canary = per.get(c["canary"], {})
            stable = next((v for k, v in per.items() if k != c["canary"]), {})
            traffic = (
                f"{c['canary']}: {canary.get('requests', 0)} of {c['traffic']['requests']} requests, "
                f"{_score(canary.get('mean_gold'))} / {_score(stable.get('mean_gold'))}"
            )
            if decided := _canary_decision(ws, c["canary"]):
                traffic += f" -> {decided}"
        lines.append(
            f"| {c['cycle']} | {_score(res['stable']['gold_composite'])} | {cands} | {decision} | {traffic} "
            f"| {c['seconds']:.0f} |"
        )
    return lines


def _wall_time(run: dict[str, Any]) -> str:
    sft_s = f"SFT training {run['sft_seconds']:.0f} s, then " if run.get("sft_seconds") else ""
    cycles = sum(c["seconds"] for c in run["cycles"])
    return f"Wall time: {sft_s}{len(run['cycles'])} cycles in {cycles:.0f} s ({run['seconds']:.0f} s in all)."


def cycles_block(ws: Workspace) -> str:
    """The main job's last run: per cycle the stable model and each candidate's gold composite, the
    gate, the canary and its traffic; then SFT vs the stable model at the end, and the wall times."""
    run = read_json(ws.eval_path("run"), "make demo")
    lines = _cycle_table(ws, run)
    final = run["final_canary"]
    lines += [
        "",
        f"Last canary: {final['decision']} ({final.get('reason', '')}). Gold composite on the full test split: "
        f"SFT {run['sft']['gold_composite']:.3f} -> stable after the run {run['stable']['gold_composite']:.3f} "
        f"(solve accuracy {run['sft']['solve_accuracy']:.3f} -> {run['stable']['solve_accuracy']:.3f}). "
        + _wall_time(run),
    ]
    return "\n".join(lines)


def example_run_block(ws: Workspace) -> str:
    """Any task's `rlhfops run`: the cycles, then the start model, SFT and the stable model after the
    run on the evaluation judges (mean per objective, composite, the task's own metrics, win rates
    against the start), the model and the sizes the run used, and the wall time."""
    from rlhfops.config import CONFIG_FILENAME, load_config
    from rlhfops.evaluation import task_metric_keys

    run = read_json(ws.eval_path("run"), "rlhfops run")
    if "start" not in run:
        raise ValueError(f"'{ws.eval_path('run')}' has no start model evaluation; it was written by an older rlhfops")
    lines = _cycle_table(ws, run)
    final = run["final_canary"]
    columns = {"start": run["start"], "sft": run["sft"], "stable": run["stable"]}
    lines += ["", f"Last canary: {final['decision']} ({final.get('reason', '')}).", ""]
    lines += ["| evaluation judges | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for objective in run["start"]["gold"]:
        lines.append(f"| {objective} | " + " | ".join(_score(r["gold"][objective]) for r in columns.values()) + " |")
    lines.append("| composite | " + " | ".join(_score(r["gold_composite"]) for r in columns.values()) + " |")
    for key in task_metric_keys(run["start"]):
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(_score(r.get(key)) for r in columns.values()) + " |")
    wins = ["-", _score(run.get("sft_win_rate_vs_start")), _score(run.get("stable_win_rate_vs_start"))]
    lines.append("| win rate vs start | " + " | ".join(wins) + " |")
    cfg = load_config(ws.model_dir("sft") / CONFIG_FILENAME)  # the run's configuration, saved with its SFT model
    first = run["start"]
    sizes = (
        f"model {Path(cfg.model.name_or_path or 'the tiny Llama').name}, task "
        f"{cfg.task.factory or cfg.task.name}; SFT {cfg.sft.max_steps} steps of {cfg.sft.batch_size}; "
        f"{cfg.reward.members} reward member(s) per objective, {cfg.reward.max_steps} steps of "
        f"{cfg.reward.batch_size}; {cfg.policy.algorithm} {cfg.policy.steps} updates of "
        f"{cfg.policy.prompts_per_step} prompts; {cfg.collect.n_prompts} x {cfg.collect.samples_per_prompt} "
        f"responses collected per cycle; evaluation: {first['n_prompts']} test prompts, {first['decoding']}"
    )
    lines += ["", f"Sizes: {sizes}. " + _wall_time(run)]
    return "\n".join(lines)
