"""README blocks of the scripts in `benchmarks/`: each reads the JSON its script wrote under
`<workspace>/bench/` (the Makefile's `bench-*` targets)."""

from __future__ import annotations

from statistics import fmean, median, pstdev

from rlhfops.config import Config
from rlhfops.report.blocks import read_json
from rlhfops.workspace import Workspace


def speedup(rows: list[dict], key: str) -> str:
    """Member-by-member seconds over `key`'s, per run: the median and its range, as `2.50x [2.42-2.55]`."""
    ratios = [r["member_by_member_s"] / r[key] for r in rows]
    return f"{median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def scoring_block(ws: Workspace) -> str:
    """`benchmarks/ensemble_scoring.py --out`: per K, per batch, medians over runs of the seconds per
    call, and the speed-ups as the median over runs with their range."""
    bench = read_json(ws.root / "bench" / "ensemble_scoring.json", "make bench-scoring")
    some_k = next(iter(bench["runs"].values()))
    lines = [
        f"K members of the {bench['model']}, {bench['threads']} torch threads, {len(some_k)} runs (each builds "
        "the members afresh); seconds per call (median over runs) and speed-up over member-by-member scoring "
        "(median over runs [min-max]):",
        "",
        "| K | batch | member by member (s) | stacked (s) | speed-up | shared trunk + heads (s) | speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, runs in bench["runs"].items():
        for i, row in enumerate(runs[0]):
            rows = [run[i] for run in runs]
            seq, fused, heads = (median(r[key] for r in rows) for key in ("member_by_member_s", "stacked_s", "heads_s"))
            cells = [speedup(rows, key) for key in ("stacked_s", "heads_s")]
            lines.append(f"| {k} | {row['batch']} | {seq:.4f} | {fused:.4f} | {cells[0]} | {heads:.4f} | {cells[1]} |")
    return "\n".join(lines)


def kinds_block(ws: Workspace) -> str:
    bench = read_json(ws.root / "bench" / "ensemble_kinds.json", "make bench-kinds")
    objectives = list(bench["full"]["objectives"])
    lines = [
        "| kind | train (s) | score val pairs (s) | " + " | ".join(objectives) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(objectives),
    ]
    for kind, r in bench.items():
        accs = " | ".join(f"{v['mean_member']:.3f} / {v['ensemble']:.3f}" for v in r["objectives"].values())
        lines.append(f"| {kind} | {r['train_s']:.1f} | {r['score_val_s']:.2f} | {accs} |")
    return "\n".join(lines) + "\n\nAccuracy: mean member / ensemble (mean aggregation) on clean validation pairs."


def throughput_block(ws: Workspace) -> str:
    bench = read_json(ws.root / "bench" / "ppo_vs_rloo.json", "make bench-ppo")
    text = (
        f"{bench['steps']} updates x {bench['completions']} completions from the SFT policy: PPO "
        f"{bench['ppo']:.1f} completions/s, TRL RLOOTrainer {bench['rloo']:.1f} completions/s, "
        f"ratio {bench['ppo'] / bench['rloo']:.2f}x."
    )
    if "ppo_one_epoch_update_s" in bench:  # written by benchmarks/ppo_vs_rloo.py since it measures them
        pc = Config().policy
        text += (
            f" Seconds per update (median, sampling to optimiser step): PPO with its {pc.ppo_epochs} epochs x "
            f"{pc.minibatches} minibatches {bench['ppo_update_s']:.3f}, PPO with RLOO's 1 epoch x 1 minibatch "
            f"{bench['ppo_one_epoch_update_s']:.3f}; RLOO {bench['completions'] / bench['rloo']:.3f} "
            "(its whole call over its updates, loading included)."
        )
    return text


def dense_prm_block(ws: Workspace) -> str:
    runs = read_json(ws.root / "bench" / "ppo_dense_prm.json", "make bench-dense-prm")
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
    bench = read_json(ws.root / "bench" / "offline_vs_ppo.json", "make bench-offline")
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


def load_block(ws: Workspace) -> str:
    r = read_json(ws.root / "bench" / "load_router.json", "make bench-load")
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
    r = read_json(ws.root / "bench" / "gate_aa.json", "make bench-gate")
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
    r = read_json(ws.root / "bench" / "step_labels.json", "make bench-steps")
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
    r = read_json(ws.root / "bench" / "active_learning.json", "make bench-active")
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
