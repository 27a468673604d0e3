"""Reports made from what a workspace holds, never from numbers typed by hand.

`python -m rlhfops.report README.md workspace` rewrites each README block between
`<!-- NAME:start -->` and `<!-- NAME:end -->` from the files the commands left in the workspace:

    gold-eval   `rlhfops run`               <ws>/eval/{untrained,sft}.json, <ws>/models/sft/train_log.json
    reward      `rlhfops train-rm`, `train-prm`   <ws>/models/reward/summary.json, <ws>/models/prm/metrics.json
    weights     `rlhfops tune-weights`      <ws>/models/reward/weights.json
    scoring     `benchmarks/ensemble_scoring.py --out <ws>/bench/ensemble_scoring.json`
    kinds       `benchmarks/ensemble_kinds.py --out <ws>/bench/ensemble_kinds.json`
    bon         `rlhfops bon`               <ws>/eval/bon-sft.json
    policy      `rlhfops train-policy`      <ws>/eval/{sft,ppo,grpo,rloo}.json
    throughput  `benchmarks/ppo_vs_rloo.py --out <ws>/bench/ppo_vs_rloo.json`
    dense-prm   `benchmarks/ppo_dense_prm.py --out <ws>/bench/ppo_dense_prm.json`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rlhfops.files import atomic_write_text
from rlhfops.workspace import Workspace

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


def _read(path: Path, produced_by: str) -> Any:
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
    results = {name: _read(ws.eval_path(name), "rlhfops run") for name in ("untrained", "sft")}
    log = _read(ws.model_dir("sft") / "train_log.json", "rlhfops run")
    seconds = next((row["train_runtime"] for row in log if "train_runtime" in row), None)
    return gold_eval_markdown(results, seconds)


def reward_block(ws: Workspace) -> str:
    summary = _read(ws.model_dir("reward") / "summary.json", "rlhfops train-rm")
    manifest = _read(
        ws.model_dir("reward") / next(k for k in summary if isinstance(summary[k], dict)) / "manifest.json",
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
    prm_path = ws.model_dir("prm") / "metrics.json"
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


def scoring_block(ws: Workspace) -> str:
    bench = _read(ws.root / "bench" / "ensemble_scoring.json", "make bench-scoring")
    lines = [
        f"K={bench['members']} members of the tiny Llama, {bench['threads']} torch threads; seconds per call "
        "and speed-up over member-by-member scoring:",
        "",
        "| batch | member by member (s) | stacked (s) | speed-up | shared trunk + heads (s) | speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in bench["rows"]:
        seq = r["member_by_member_s"]
        lines.append(
            f"| {r['batch']} | {seq:.4f} | {r['stacked_s']:.4f} | {seq / r['stacked_s']:.2f}x | "
            f"{r['heads_s']:.4f} | {seq / r['heads_s']:.2f}x |"
        )
    return "\n".join(lines)


def kinds_block(ws: Workspace) -> str:
    bench = _read(ws.root / "bench" / "ensemble_kinds.json", "make bench-kinds")
    objectives = list(bench["full"]["objectives"])
    lines = [
        "| kind | train (s) | score val pairs (s) | " + " | ".join(objectives) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(objectives),
    ]
    for kind, r in bench.items():
        accs = " | ".join(f"{v['mean_member']:.3f} / {v['ensemble']:.3f}" for v in r["objectives"].values())
        lines.append(f"| {kind} | {r['train_s']:.1f} | {r['score_val_s']:.2f} | {accs} |")
    return "\n".join(lines) + "\n\nAccuracy: mean member / ensemble (mean aggregation) on clean validation pairs."


def weights_block(ws: Workspace) -> str:
    report = _read(ws.model_dir("reward") / "weights.json", "rlhfops tune-weights")
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
    result = _read(ws.eval_path("bon-sft"), "rlhfops bon")
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
    results = {"sft": _read(ws.eval_path("sft"), "rlhfops run")}
    for name in ("ppo", "grpo", "rloo"):
        if ws.eval_path(name).exists():
            results[name] = json.loads(ws.eval_path(name).read_text())
    if len(results) == 1:
        raise FileNotFoundError(f"no policy evaluation in '{ws.eval_path('ppo').parent}'; run `rlhfops train-policy`")
    for name in results:
        if name != "sft":
            log = _read(ws.model_dir(name) / "train_log.json", "rlhfops train-policy")
            results[name]["_updates"] = len(log) if name == "ppo" else max(r.get("step", 0) for r in log)
    lines = ["| metric | " + " | ".join(results) + " |", "| --- |" + " ---: |" * len(results)]
    for label, get in ROWS[:7]:
        cells = ["-" if get(r) is None else f"{get(r):.3f}" for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| updates | " + " | ".join(str(r.get("_updates", "-")) for r in results.values()) + " |")
    return "\n".join(lines)


def throughput_block(ws: Workspace) -> str:
    bench = _read(ws.root / "bench" / "ppo_vs_rloo.json", "make bench-ppo")
    return (
        f"{bench['steps']} updates x {bench['completions']} completions from the SFT policy: PPO "
        f"{bench['ppo']:.1f} completions/s, TRL RLOOTrainer {bench['rloo']:.1f} completions/s, "
        f"ratio {bench['ppo'] / bench['rloo']:.2f}x."
    )


def dense_prm_block(ws: Workspace) -> str:
    from statistics import fmean, pstdev

    runs = _read(ws.root / "bench" / "ppo_dense_prm.json", "make bench-dense-prm")
    lines = [
        "| PPO reward | seeds | gold composite | solve accuracy | step validity | seconds per run |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, rows in runs.items():
        cells = [
            f"{fmean(r[k] for r in rows):.3f} +- {pstdev(r[k] for r in rows):.3f}"
            for k in ("gold_composite", "solve_accuracy", "step_validity")
        ]
        seconds = fmean(r["seconds"] for r in rows)
        label = "outcome only" if variant == "outcome" else "outcome + dense PRM steps"
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines) + "\n\nMean +- population std over seeds; test split, 4 samples per prompt."


def offline_block(ws: Workspace) -> str:
    from statistics import fmean, pstdev

    bench = _read(ws.root / "bench" / "offline_vs_ppo.json", "make bench-offline")
    rows = bench["rows"]

    def stat(values: list[float]) -> str:
        return f"{fmean(values):.3f} +- {pstdev(values):.3f}"

    lines = [
        "| policy | seeds | gold composite | gain over SFT | solve accuracy | over-refusal | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, label in (("sft", "SFT (start)"), ("offline", "offline RL (ILQL heads, beta-2 shift)"), ("ppo", "PPO")):
        if side not in rows[0]:
            continue
        gold = [r[side]["gold_composite"] for r in rows]
        gain = [r[side]["gold_composite"] - r["sft"]["gold_composite"] for r in rows]
        seconds = "-" if side == "sft" else f"{fmean(r[f'{side}_train_s'] for r in rows):.0f}"
        lines.append(
            f"| {label} | {len(rows)} | {stat(gold)} | {'-' if side == 'sft' else stat(gain)} | "
            f"{stat([r[side]['solve_accuracy'] for r in rows])} | {stat([r[side]['over_refusal_rate'] for r in rows])} "
            f"| {seconds} |"
        )
    return "\n".join(lines) + (
        f"\n\nMean +- population std over seeds; {bench['samples']} completions each (offline: logged SFT samples; "
        "PPO: sampled on line), both scored by the composite reward; test split, 4 samples per prompt. "
        "Training seconds: PPO's include its sampling and scoring"
        + (
            f"; offline RL's exclude logging its data (sampling and scoring took {fmean(data_s):.0f} s)."
            if (data_s := [r["offline_data_s"] for r in rows if r.get("offline_data_s")])
            else "; offline RL's exclude logging its data."
        )
    )


def cycles_block(ws: Workspace) -> str:
    """The main job's last run: per cycle the stable model and each candidate's gold composite, the
    gate, the canary and its traffic; then SFT vs the stable model at the end, and the wall times."""
    run = _read(ws.eval_path("run"), "make demo")
    lines = [
        "| cycle | stable | candidates (gold composite) | gate | canary traffic (canary / stable mean gold) | s |",
        "| ---: | ---: | --- | --- | --- | ---: |",
    ]
    for c in run["cycles"]:
        res = c["results"]
        cands = ", ".join(f"{n} {r['gold_composite']:.3f}" for n, r in res.items() if n != "stable")
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
                f"{canary.get('mean_gold', float('nan')):.3f} / {stable.get('mean_gold', float('nan')):.3f}"
            )
        lines.append(
            f"| {c['cycle']} | {res['stable']['gold_composite']:.3f} | {cands} | {decision} | {traffic} "
            f"| {c['seconds']:.0f} |"
        )
    final = run["final_canary"]
    sft_s = f"SFT training {run['sft_seconds']:.0f} s, then " if run.get("sft_seconds") else ""
    lines += [
        "",
        f"Last canary: {final['decision']} ({final.get('reason', '')}). Gold composite on the full test split: "
        f"SFT {run['sft']['gold_composite']:.3f} -> stable after the run {run['stable']['gold_composite']:.3f} "
        f"(solve accuracy {run['sft']['solve_accuracy']:.3f} -> {run['stable']['solve_accuracy']:.3f}). "
        f"Wall time: {sft_s}{len(run['cycles'])} cycles in {sum(c['seconds'] for c in run['cycles']):.0f} s "
        f"({run['seconds']:.0f} s in all).",
    ]
    return "\n".join(lines)


def load_block(ws: Workspace) -> str:
    r = _read(ws.root / "bench" / "load_router.json", "make bench-load")
    return "\n".join(
        [
            "| requests | clients | errors | records in the store | canary share | p50 ms | p99 ms | requests/s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {r['requests']} | {r['clients']} | {r['errors']} | {r['records_in_store']} | "
            f"{r['canary_share_pct']:.2f}% (target {r['canary_percent']:g}%) | {r['latency_p50_ms']:.0f} | "
            f"{r['latency_p99_ms']:.0f} | {r['requests_per_s']:.1f} |",
            "",
            f"Router + stable + canary servers in one process on loopback, each backend the {r['model_parameters']:,}-"
            f"parameter policy at max_tokens {r['max_tokens']}; {r['seconds']:.0f} s on this 2-core machine.",
        ]
    )


def gate_block(ws: Workspace) -> str:
    r = _read(ws.root / "bench" / "gate_aa.json", "make bench-gate")
    lines = [
        "| online test | allowed error | false promotions (p = 0.3 / 0.5 / 0.8) | promoted when it should be |",
        "| --- | ---: | --- | --- |",
    ]
    groups: dict[tuple, list] = {}
    for row in r["online"]:
        groups.setdefault((row["online_test"], row["alpha"]), []).append(row)
    for (test, alpha), rows in groups.items():
        false = " / ".join(f"{x['false_promotion_rate']:.3f}" for x in rows)
        true = " / ".join(f"{x['promote_rate_at_true_effect']:.3f}" for x in rows)
        what = "equal canary" if test == "superiority" else f"canary worse by {-rows[0]['false_effect']:g}"
        good = "canary +0.1" if test == "superiority" else "equal canary"
        lines.append(f"| {test} | {alpha:g} | {false} ({what}) | {true} ({good}) |")
    lines += [
        "",
        "| pre-deploy gate | allowed error | trials | false deploys (A/A) | deployed at +0.15 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in r["offline"]:
        lines.append(
            f"| {row['method']} ({row['n_prompts']} prompts) | {row['alpha']:g} | {row['trials']} | "
            f"{row['aa_false_deploy_rate']:.3f} | {row['deploy_rate_at_effect_0.15']:.3f} |"
        )
    lines.append(f"\nSimulated thumbs up / down, online: {r['trials']} trials per cell (seed {r['seed']}).")
    return "\n".join(lines)


def active_block(ws: Workspace) -> str:
    r = _read(ws.root / "bench" / "active_learning.json", "make bench-active")
    curves = r["curves"]
    lines = ["| round | random: pairs, accuracy | uncertainty: pairs, accuracy |", "| ---: | --- | --- |"]
    for a, b in zip(curves["random"], curves["uncertainty"], strict=True):
        lines.append(
            f"| {a['round']} | {a['pairs_mean']:.0f}, {a['accuracy_mean']:.3f} +- {a['accuracy_std']:.3f} | "
            f"{b['pairs_mean']:.0f}, {b['accuracy_mean']:.3f} +- {b['accuracy_std']:.3f} |"
        )
    c = r["config"]
    lines.append(
        f"\nMean over the four objectives and {c['seeds']} seeds of the validation accuracy of {c['members']}-head "
        f"ensembles; pool {c['pool']} prompts, {c['batch']} prompts labelled per round."
    )
    return "\n".join(lines)


BLOCKS = {
    "cycles": cycles_block,
    "gold-eval": gold_eval_block,
    "reward": reward_block,
    "weights": weights_block,
    "scoring": scoring_block,
    "kinds": kinds_block,
    "bon": bon_block,
    "policy": policy_block,
    "throughput": throughput_block,
    "dense-prm": dense_prm_block,
    "offline": offline_block,
    "load": load_block,
    "gates": gate_block,
    "active": active_block,
}


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"the README has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def update_readme(readme: Path, workspace: Workspace, blocks: list[str] | None = None) -> None:
    """Rewrite the named blocks (default: all) from the workspace; all or nothing."""
    text = readme.read_text()
    for name in blocks or list(BLOCKS):
        text = replace_block(text, name, BLOCKS[name](workspace))
    atomic_write_text(readme, text)


if __name__ == "__main__":
    if len(sys.argv) < 3 or any(b not in BLOCKS for b in sys.argv[3:]):
        sys.exit(f"usage: python -m rlhfops.report README.md WORKSPACE [{'|'.join(BLOCKS)} ...]")
    try:
        update_readme(Path(sys.argv[1]), Workspace(Path(sys.argv[2])), sys.argv[3:] or None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
