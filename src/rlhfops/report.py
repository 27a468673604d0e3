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
    bench       `rlhfops bench`             <ws>/bench/bench.json (+ PNG plots under docs/bench/)

`rlhfops report` writes an HTML page with PNG plots (matplotlib, Agg) of the bench tables and of
the workspace's cycle history (`write_html_report`), and logs them to W&B when tracking is on.
"""

from __future__ import annotations

import json
import sys
import textwrap
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


def _canary_decision(ws: Workspace, version: str) -> str | None:
    """The online gate's last decision on a canary, from the workspace's registry (None if undecided)."""
    path = ws.root / "registry.json"
    if not path.exists():
        return None
    found = [v for v in json.loads(path.read_text())["versions"] if v["id"] == version]
    decisions = [d for d in found[0].get("decisions", []) if d.get("decision") != "wait"] if found else []
    return decisions[-1]["decision"] if decisions else None


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
            if decided := _canary_decision(ws, c["canary"]):
                traffic += f" -> {decided}"
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


def step_labels_block(ws: Workspace) -> str:
    r = _read(ws.root / "bench" / "step_labels.json", "make bench-steps")
    lines = [
        "| labels | lines labelled | agreement with exact | on bad steps | on good steps | every line (masked: next) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (
        ("sparse", f"sparse (1 line in {r['every']} + answer)"),
        ("mc", f"Monte-Carlo ({r['rollouts']} rollouts)"),
    ):
        a = r[key]
        lines.append(
            f"| {label} | {a['coverage']:.3f} | {a['agreement']:.3f} | {a['agreement_on_bad']:.3f} | "
            f"{a['agreement_on_good']:.3f} | {a['imputed_agreement']:.3f} |"
        )
    lines.append(f"\n{r['responses']} policy solutions to validation prompts, one sample each.")
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


# ---- the benchmark suite (`rlhfops bench`) and the HTML report (`rlhfops report`) ----------------

README_PLOTS = Path("docs") / "bench"  # next to the README: the plots its bench block embeds
README_PLOT_NAMES = ("techniques", "overoptimisation", "pareto")


def read_bench(ws: Workspace) -> dict[str, Any]:
    from rlhfops.bench import BENCH_JSON

    return _read(ws.root / "bench" / BENCH_JSON, "rlhfops bench")


def table_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The technique table, recomputed from the run's per-seed measurements (`rows`) by the current
    `technique_table`: bench.json's "table" is what the run printed; the report is a view of the rows."""
    from rlhfops.bench import technique_table

    return technique_table(bench["rows"])


def relative_text(row: dict[str, Any]) -> str:
    rel = row.get("relative")
    return "-" if rel is None else f"{rel['mean']:+.1%} +- {rel['std']:.1%}"


def technique_markdown(bench: dict[str, Any]) -> str:
    lines = [
        "| technique | what it is for | measured | gain (mean +- std) | per seed | relative | verdict | cost |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in table_rows(bench):
        lines.append(
            f"| {r['technique']} | {r['purpose']} | {r['measure']} | {r['mean']:+.3f} +- {r['std']:.3f} "
            f"| {' / '.join(f'{g:+.3f}' for g in r['gains'])} | {relative_text(r)} | {r['verdict']} | {r['cost']} |"
        )
    return "\n".join(lines)


def speed_lines(speed: dict[str, Any]) -> list[str]:
    """One sentence per speed ratio, each with the ratio it measured."""
    scoring = ", ".join(
        f"batch {r['batch']} {r['member_by_member_s'] / r['stacked_s']:.2f}x (trunk + heads "
        f"{r['member_by_member_s'] / r['heads_s']:.2f}x)"
        for r in speed["ensemble_scoring"]["rows"]
    )
    b, p, roof = speed["best_of_n_batching"], speed["ppo_vs_rloo"], speed["roofline"]
    return [
        f"fused (stacked) vs member-by-member scoring of K={speed['ensemble_scoring']['members']}: {scoring}",
        f"batched Best-of-{b['n']} vs one `generate` per prompt ({b['prompts']} prompts): {b['ratio']:.2f}x "
        f"({b['per_prompt_s']:.2f} s -> {b['batched_s']:.2f} s)",
        f"PPO vs TRL RLOOTrainer ({p['steps']} updates x {p['completions']} completions): {p['ratio']:.2f}x "
        f"({p['ppo']:.1f} vs {p['rloo']:.1f} completions/s)",
        f"training throughput vs this machine's matmul peak ({roof['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, "
        f"{roof['threads']} threads; FLOPs = 6 x params x tokens): RM update {roof['rm']['fraction_of_peak']:.1%}, "
        f"PPO update {roof['ppo']['fraction_of_peak']:.1%}",
    ]


def detail_lines(bench: dict[str, Any]) -> list[str]:
    """The curves behind the table's rows, as means over seeds: gold after each cycle, gold and
    samples by Best-of-N, gold and proxy of each RM aggregation at the largest N, and the
    multi-objective fronts."""
    from statistics import fmean

    rows = bench["rows"]

    def avg(values) -> float:
        return fmean(list(values))

    n_cycles = len(rows[0]["cycles"])
    cycles = " -> ".join(
        [f"SFT {avg(r['cycles'][0]['results']['stable']['gold_composite'] for r in rows):.3f}"]
        + [f"cycle {i + 1} {avg(r['cycles'][i]['after']['gold_composite'] for r in rows):.3f}" for i in range(n_cycles)]
    )
    deployed = [sum(c["deployed"] is not None for c in r["cycles"]) for r in rows]
    curve = rows[0]["best_of_n"]["curve"]
    bon = ", ".join(
        f"N={c['n']} {avg(r['best_of_n']['curve'][i]['gold'] for r in rows):.3f}" for i, c in enumerate(curve)
    )
    adaptive = (
        f"adaptive {avg(r['best_of_n']['adaptive']['gold'] for r in rows):.3f} with "
        f"{avg(r['best_of_n']['adaptive']['mean_samples_per_prompt'] for r in rows):.1f} samples per prompt"
    )
    names = {"single": "one RM", "mean": "mean", "min": "min", "uwo": "uwo"}
    over = ", ".join(
        f"{label} {avg(r['overoptimisation'][how][-1]['gold'] for r in rows):.3f} "
        f"({avg(r['overoptimisation'][how][-1]['proxy'] for r in rows):+.2f})"
        for how, label in names.items()
    )
    rerank = ", ".join(
        f"{label} {avg(r['rerank'][key] for r in rows):.3f}"
        for key, label in (("first_sample", "first sample (N=1)"), ("outcome_rm", "outcome RM"), ("prm", "PRM"))
    )
    lines = [
        f"iterative RLHF, gold composite of the deployed policy: {cycles} "
        f"(candidates deployed per seed: {', '.join(map(str, deployed))} of {n_cycles})",
        f"Best-of-N from SFT, gold composite: {bon}; {adaptive}",
        f"gold composite (proxy) of the pick at N={curve[-1]['n']}: {over}",
        f"solve accuracy of Best-of-{curve[-1]['n']} on the solve prompts: {rerank}",
    ]
    for key, what in (("multi_objective", "trained policies"), ("multi_objective_bon", "Best-of-N at inference")):
        if key not in rows[0]:
            continue
        mo = [r[key] for r in rows]
        objectives = mo[0]["objectives"]
        spread = ", ".join(
            f"{o} {avg(min(p['gold'][o] for p in m['points']) for m in mo):.3f}-"
            f"{avg(max(p['gold'][o] for p in m['points']) for m in mo):.3f} "
            f"(weighted sum {avg(m['single']['gold'][o] for m in mo):.3f})"
            for o in objectives
        )
        null = (
            f", hypervolume {avg(m['hv_front'] for m in mo):.3f} vs {avg(m['hv_null'] for m in mo):.3f} for the "
            f"front of the weighted-sum policy over {len(mo[0]['null_points'])} training seeds"
            if "hv_null" in mo[0]
            else f", hypervolume {avg(m['hv_front'] for m in mo):.3f} vs {avg(m['hv_single'] for m in mo):.3f} "
            "for the weighted sum's point alone"
        )
        lines.append(
            f"multi-objective, {what}: front of {avg(m['front_size'] for m in mo):.1f} of {len(mo[0]['points'])} "
            f"grid points{null}; the weighted-sum point is dominated by a grid point in "
            f"{sum(bool(m.get('single_dominated')) for m in mo)} of {len(mo)} seeds; gold range over the grid: {spread}"
        )
    return lines


def bench_markdown(bench: dict[str, Any], plots: Path | None = None) -> str:
    seeds = bench["seeds"]
    lines = [
        technique_markdown(bench),
        "",
        f"Mean +- population std over seeds {', '.join(map(str, seeds))} ({bench['plan']['name']} plan); "
        "verdict: gain / loss when the mean clears its spread, otherwise no clear effect. "
        f"Wall time {bench['seconds'] / 60:.1f} min on this machine.",
        "",
        "Behind the rows (means over seeds):",
        "",
        *(f"- {line}" for line in detail_lines(bench)),
        "",
        "Speed ratios, each measured side by side in the same run:",
        "",
        *(f"- {line}" for line in speed_lines(bench["speed"])),
    ]
    if plots is not None:
        lines += ["", *(f"![{name}]({(plots / f'{name}.png').as_posix()})" for name in README_PLOT_NAMES)]
    return "\n".join(lines)


def bench_block(ws: Workspace) -> str:
    return bench_markdown(read_bench(ws), README_PLOTS)


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(**kwargs)


def _save(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_techniques(bench: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: each technique's gain, mean with std error bars, per-seed dots."""
    rows = table_rows(bench)
    plt, fig, ax = _figure(figsize=(6, 0.75 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    colours = {"gain": "tab:green", "loss": "tab:red", "no clear effect": "tab:gray"}
    ax.barh(y, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color=[colours[r["verdict"]] for r in rows])
    for yi, r in zip(y, rows, strict=True):
        ax.plot(r["gains"], [yi] * len(r["gains"]), "k.", ms=4)
    ax.set_yticks(y, [f"{r['technique']}\n" + textwrap.fill(f"({r['measure']})", 60) for r in rows], fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("measured gain, in each row's unit\n(green: gain, red: loss, grey: within the spread over seeds)")
    ax.set_title("rlhfops bench: techniques on the built-in task")
    return _save(plt, fig, path)


def plot_overoptimisation(bench: dict[str, Any], path: Path) -> Path:
    """Gold (solid) and proxy (dashed, right axis) vs Best-of-N KL, one RM vs ensemble aggregations."""
    from statistics import fmean

    plt, fig, ax = _figure(figsize=(7, 4))
    proxy_ax = ax.twinx()
    for how, colour in zip(
        ("single", "mean", "min", "uwo"), ("tab:red", "tab:blue", "tab:green", "tab:purple"), strict=True
    ):
        curves = [r["overoptimisation"][how] for r in bench["rows"]]
        kl = [c["kl"] for c in curves[0]]
        gold = [fmean(c[i]["gold"] for c in curves) for i in range(len(kl))]
        proxy = [fmean(c[i]["proxy"] for c in curves) for i in range(len(kl))]
        ax.plot(kl, gold, "o-", color=colour, label=f"gold, {'one RM' if how == 'single' else 'ensemble ' + how}")
        proxy_ax.plot(kl, proxy, "--", color=colour, alpha=0.6)
    ax.set_xlabel("KL(Best-of-N || policy) = log N - (N-1)/N")
    ax.set_ylabel("gold composite of the pick (solid)")
    proxy_ax.set_ylabel("proxy reward of the pick (dashed)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Over-optimisation under Best-of-N pressure (mean over seeds)")
    return _save(plt, fig, path)


def plot_best_of_n(bench: dict[str, Any], path: Path) -> Path:
    """Gold vs samples used: the Best-of-N curve per seed and adaptive N."""
    plt, fig, ax = _figure(figsize=(6, 4))
    for r in bench["rows"]:
        b = r["best_of_n"]
        ax.plot(
            [c["samples_per_prompt"] for c in b["curve"]],
            [c["gold"] for c in b["curve"]],
            "o-",
            alpha=0.7,
            label=f"seed {r['seed']}: N = {', '.join(str(c['n']) for c in b['curve'])}",
        )
        ax.plot([b["adaptive"]["mean_samples_per_prompt"]], [b["adaptive"]["gold"]], "k*", ms=10)
    ax.plot([], [], "k*", label="adaptive N")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per prompt")
    ax.set_ylabel("gold composite")
    ax.legend(fontsize=7)
    ax.set_title("Best-of-N and adaptive N")
    return _save(plt, fig, path)


def plot_pareto(bench: dict[str, Any], path: Path) -> Path:
    """Helpfulness vs over-refusal (first seed): the weight-grid policies trained by offline RL, their
    Pareto front (over all objectives) circled, the weighted-sum policy starred; the same weights
    applied at inference (Best-of-N re-ranking) as crosses."""
    row = bench["rows"][0]
    mo, mb = row["multi_objective"], row.get("multi_objective_bon")
    plt, fig, ax = _figure(figsize=(6.5, 4.2))

    def xy(points):
        return [p["over_refusal"] for p in points], [p["gold"]["helpfulness"] for p in points]

    ax.scatter(*xy(mo["points"]), c="tab:gray", s=18, label=f"{len(mo['points'])} trained weight-grid policies")
    ax.scatter(
        *xy([p for p in mo["points"] if p["front"]]),
        facecolors="none",
        edgecolors="tab:blue",
        s=80,
        label=f"Pareto front over {len(mo['objectives'])} objectives",
    )
    if mo.get("null_points"):
        ax.scatter(
            *xy(mo["null_points"]),
            c="tab:red",
            alpha=0.35,
            s=18,
            label=f"weighted-sum policy, the grid's {len(mo['null_points'])} training seeds",
        )
    ax.scatter(*xy([mo["single"]]), marker="*", c="tab:red", s=140, label="trained weighted-sum policy")
    if mb is not None:
        ax.scatter(*xy(mb["points"]), marker="x", c="tab:green", s=22, label="same weights, Best-of-N at inference")
    ax.set_xlabel("over-refusal rate (safe prompts refused)")
    ax.set_ylabel("gold helpfulness")
    ax.legend(fontsize=7)
    base, against = (
        (mo["hv_null"], "the weighted sum's front over training seeds")
        if "hv_null" in mo
        else (mo["hv_single"], "the weighted sum")
    )
    ax.set_title(
        f"Multi-objective, seed {row['seed']}: grid front hypervolume vs {against} {mo['hv_front'] / base - 1:+.1%}",
        fontsize=9,
    )
    return _save(plt, fig, path)


def plot_bench_cycles(bench: dict[str, Any], path: Path) -> Path:
    """Gold composite of the deployed policy after each cycle, per seed (cycle 0 = SFT)."""
    plt, fig, ax = _figure(figsize=(6, 4))
    for r in bench["rows"]:
        values = [r["cycles"][0]["results"]["stable"]["gold_composite"]] + [
            c["after"]["gold_composite"] for c in r["cycles"]
        ]
        ax.plot(range(len(values)), values, "o-", label=f"seed {r['seed']}")
    ax.set_xticks(range(len(values)), ["SFT", *(f"cycle {i}" for i in range(1, len(values)))])
    ax.set_ylabel("gold composite (deployed policy)")
    ax.legend(fontsize=7)
    ax.set_title("Iterative RLHF")
    return _save(plt, fig, path)


def plot_speed(bench: dict[str, Any], path: Path) -> Path:
    """Every speed ratio as a bar (log scale), 1x marked."""
    speed = bench["speed"]
    labels, ratios = [], []
    for r in speed["ensemble_scoring"]["rows"]:
        labels.append(f"fused vs member-by-member\nscoring, batch {r['batch']}")
        ratios.append(r["member_by_member_s"] / r["stacked_s"])
    labels.append(f"batched vs per-prompt\nBest-of-{speed['best_of_n_batching']['n']}")
    ratios.append(speed["best_of_n_batching"]["ratio"])
    labels.append("PPO vs TRL RLOO\n(completions/s)")
    ratios.append(speed["ppo_vs_rloo"]["ratio"])
    for k in ("rm", "ppo"):
        labels.append(f"{k.upper()} update\nvs matmul peak")
        ratios.append(speed["roofline"][k]["fraction_of_peak"])
    plt, fig, ax = _figure(figsize=(7, 0.45 * len(labels) + 1.2))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, ratios, color=["tab:blue" if x >= 1 else "tab:orange" for x in ratios])
    for yi, x in zip(y, ratios, strict=True):
        ax.text(x, yi, f" {x:.2f}x" if x >= 0.01 else f" {x:.1%}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_title("Speed ratios (log scale)")
    return _save(plt, fig, path)


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
        gate_path = path.with_name(f"cycle-{n:04d}-gate.json")
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
    plt, fig, (top, bottom) = _figure(nrows=2, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
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
    return _save(plt, fig, path)


BENCH_PLOTS = {
    "techniques": plot_techniques,
    "overoptimisation": plot_overoptimisation,
    "best_of_n": plot_best_of_n,
    "pareto": plot_pareto,
    "iterative": plot_bench_cycles,
    "speed": plot_speed,
}


def write_plots(ws: Workspace, out_dir: Path) -> dict[str, Path]:
    """Every plot the workspace has data for: the bench's (bench.json) and the cycle history of the
    workspace itself and of the bench's first seed."""
    from rlhfops.bench import BENCH_JSON

    plots = {}
    bench_path = ws.root / "bench" / BENCH_JSON
    if bench_path.exists():
        bench = json.loads(bench_path.read_text())
        plots.update({name: plot(bench, out_dir / f"{name}.png") for name, plot in BENCH_PLOTS.items()})
        seed_ws = Workspace(bench_path.parent / "runs" / f"seed-{bench['seeds'][0]}")
        if cycle_history(seed_ws):
            plots["bench_cycle_history"] = plot_cycle_history(seed_ws, out_dir / "bench_cycle_history.png")
    if cycle_history(ws):
        plots["cycle_history"] = plot_cycle_history(ws, out_dir / "cycle_history.png")
    return plots


def _html_table(rows: list[list[str]], head: list[str]) -> str:
    import html

    out = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    for r in rows:
        out += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
    return out + "</table>"


def write_html_report(ws: Workspace, out: Path) -> tuple[Path, dict[str, Path]]:
    """An HTML page (plots embedded as PNG data) of the bench and the cycle history; the PNGs are
    also written to `<out stem>-plots/`. Returns the page and the plots."""
    import base64
    import html

    from rlhfops.bench import BENCH_JSON

    plots = write_plots(ws, out.parent / f"{out.stem}-plots")
    if not plots:
        raise FileNotFoundError(f"nothing to report in '{ws.root}'; run `rlhfops bench` or `rlhfops run` first")
    parts = [f"<h1>rlhfops report: {html.escape(str(ws.root))}</h1>"]
    bench_path = ws.root / "bench" / BENCH_JSON
    if bench_path.exists():
        bench = json.loads(bench_path.read_text())
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


def log_report(cfg, ws: Workspace, plots: dict[str, Path]) -> None:
    """The plots and the technique gains in a W&B run (job_type `report`), when tracking is on."""
    from rlhfops.bench import BENCH_JSON
    from rlhfops.tracking import new_group, resolve_mode, start_run

    if resolve_mode(cfg) == "disabled":
        return
    import wandb

    with start_run(cfg, "report", group=new_group("report"), workspace=ws.root) as run:
        run.run.log({f"plots/{name}": wandb.Image(str(path)) for name, path in plots.items()})
        bench_path = ws.root / "bench" / BENCH_JSON
        if bench_path.exists():
            table = table_rows(json.loads(bench_path.read_text()))
            run.log_metrics({f"bench/{r['technique']}": r["mean"] for r in table})


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
    "step-labels": step_labels_block,
    "bench": bench_block,
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
    names = blocks or list(BLOCKS)
    for name in names:
        text = replace_block(text, name, BLOCKS[name](workspace))
    if "bench" in names:  # the plots the bench block embeds, regenerated with it
        bench = read_bench(workspace)
        for name in README_PLOT_NAMES:
            BENCH_PLOTS[name](bench, readme.parent / README_PLOTS / f"{name}.png")
    atomic_write_text(readme, text)


if __name__ == "__main__":
    if len(sys.argv) < 3 or any(b not in BLOCKS for b in sys.argv[3:]):
        sys.exit(f"usage: python -m rlhfops.report README.md WORKSPACE [{'|'.join(BLOCKS)} ...]")
    try:
        update_readme(Path(sys.argv[1]), Workspace(Path(sys.argv[2])), sys.argv[3:] or None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
