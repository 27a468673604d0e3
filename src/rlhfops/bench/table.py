"""The technique table: per technique its measured gain over its baseline on every seed, summarised."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from statistics import fmean

from rlhfops.bench.records import (
    MeanStd,
    SeedResult,
    TechniqueRow,
    candidate_gold,
    deployed_golds,
    sft_gold,
)


def mean_std(values: list[float]) -> MeanStd:
    """Mean and population std (0 for one value), as the other benchmark tables report."""
    return {"mean": fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def verdict(values: list[float]) -> str:
    """Does a gain hold beyond its spread over seeds? 'gain' / 'loss' / 'no clear effect'."""
    s = mean_std(values)
    if s["mean"] - s["std"] > 0:
        return "gain"
    if s["mean"] + s["std"] < 0:
        return "loss"
    return "no clear effect"


def technique_row(
    technique: str, purpose: str, measure: str, new: list[float], base: list[float], cost: str
) -> TechniqueRow:
    """The gain (technique - its baseline, per seed, mean +- std, a verdict), the relative gain
    (technique / baseline - 1; None when a baseline is 0) and the cost."""
    gains = [n - b for n, b in zip(new, base, strict=True)]
    relative = [n / b - 1 for n, b in zip(new, base, strict=True) if b != 0]
    s = mean_std(gains)
    return {
        "technique": technique,
        "purpose": purpose,
        "measure": measure,
        "values": new,
        "baselines": base,
        "gains": gains,
        "mean": s["mean"],
        "std": s["std"],
        "relative": mean_std(relative) if len(relative) == len(gains) else None,
        "verdict": verdict(gains),
        "cost": cost,
    }


def technique_table(rows: list[SeedResult]) -> list[TechniqueRow]:
    """The notes' summary table, measured: one `technique_row` per technique, from every seed's rows."""

    def avg(get: Callable[[SeedResult], float]) -> float:
        return fmean(get(r) for r in rows)

    n_cycles = len(rows[0]["cycles"])
    first = [r["cycles"][0] for r in rows]
    bon = [{c["n"]: c for c in r["best_of_n"]["curve"]} for r in rows]
    n_max = max(bon[0])
    gold_1 = [b[1]["gold"] for b in bon]
    at_max = {how: [r["overoptimisation"][how][-1]["gold"] for r in rows] for how in ("single", "mean", "min", "uwo")}
    n_small = 4 if 4 in bon[0] and n_max > 4 else None
    bon_gain = fmean(b[n_max]["gold"] - g for b, g in zip(bon, gold_1, strict=True))
    adaptive = [r["best_of_n"]["adaptive"] for r in rows]
    adaptive_gain = fmean(a["gold"] - g for a, g in zip(adaptive, gold_1, strict=True))
    adaptive_samples = fmean(a["mean_samples_per_prompt"] for a in adaptive)
    ppo_seconds = fmean(c["seconds"]["policy"] for c in first)
    mo = [r["multi_objective"] for r in rows]
    return [
        technique_row(
            "Iterative RLHF",
            "improve the policy cycle over cycle from fresh feedback",
            f"gold composite after cycle {n_cycles} vs SFT",
            [deployed_golds(r)[-1] for r in rows],
            [sft_gold(r) for r in rows],
            f"{avg(lambda r: r['seconds']['cycles']) / n_cycles:.0f} s per cycle",
        ),
        technique_row(
            "Multi-objective (Pareto front)",
            "a policy per trade-off between objectives",
            f"gold hypervolume ({len(mo[0]['objectives'])} objectives): front of {len(mo[0]['points'])} "
            "weight-grid policies vs front of the weighted-sum policy trained with the grid's training seeds",
            [m["hv_front"] for m in mo],
            [m["hv_null"] for m in mo],
            f"{len(mo[0]['points'])} offline-RL trainings on {mo[0]['samples']} logged samples "
            f"({avg(lambda r: r['multi_objective']['train_seconds']) / mo[0]['policies']:.1f} s each)",
        ),
        technique_row(
            "Process supervision (PRM rerank)",
            "pick solutions whose steps are right",
            f"solve accuracy of Best-of-{n_max}: PRM vs outcome RM "
            f"(first sample, no rerank: {avg(lambda r: r['rerank']['first_sample']):.3f})",
            [r["rerank"]["prm"] for r in rows],
            [r["rerank"]["outcome_rm"] for r in rows],
            f"a PRM ({avg(lambda r: r['cycles'][-1]['seconds']['prm']):.0f} s to train)",
        ),
        technique_row(
            "Outcome-RM rerank",
            "pick answers the reward model prefers",
            f"solve accuracy of Best-of-{n_max}: outcome RM (helpfulness ensemble) vs the first sample",
            [r["rerank"]["outcome_rm"] for r in rows],
            [r["rerank"]["first_sample"] for r in rows],
            f"{n_max}x samples and scoring",
        ),
        technique_row(
            "Process supervision (dense PPO)",
            "credit each step in RL",
            "gold composite: PPO with dense PRM rewards vs outcome only",
            [r["dense_prm"]["dense"]["gold_composite"] for r in rows],
            [r["dense_prm"]["outcome"]["gold_composite"] for r in rows],
            f"{avg(lambda r: r['dense_prm']['dense_seconds']):.0f} s vs {ppo_seconds:.0f} s",
        ),
        technique_row(
            f"Best-of-{n_max}",
            "spend inference compute for quality",
            f"gold composite: N={n_max} vs N=1",
            [b[n_max]["gold"] for b in bon],
            gold_1,
            f"{n_max}x samples and scoring",
        ),
        *(
            [
                technique_row(
                    f"Best-of-{n_small}",
                    "spend less inference compute for quality",
                    f"gold composite: N={n_small} vs N=1",
                    [b[n_small]["gold"] for b in bon],
                    gold_1,
                    f"{n_small}x samples and scoring",
                )
            ]
            if n_small
            else []
        ),
        technique_row(
            "Adaptive N",
            "spend samples only where the first one looks bad",
            "gold composite: adaptive N vs N=1",
            [a["gold"] for a in adaptive],
            gold_1,
            f"{adaptive_samples:.1f} samples per prompt ({adaptive_samples / n_max:.0%} of Best-of-{n_max}'s) for "
            + (f"{adaptive_gain / bon_gain:.0%} of its mean gain" if bon_gain > 0 else "no Best-of-N gain to share"),
        ),
        *(
            technique_row(
                f"RM ensembles ({how})",
                "robustness to reward over-optimisation",
                f"gold composite at N={n_max}: ensemble {how} vs one RM",
                at_max[how],
                at_max["single"],
                f"{rows[0]['members']}x RM training and scoring",
            )
            for how in ("mean", "min", "uwo")
        ),
        technique_row(
            "Offline RL (vs PPO)",
            "learn from logged data without sampling",
            "gold composite, cycle 1: offline RL vs PPO",
            [candidate_gold(c, "offline") for c in first],
            [candidate_gold(c, "ppo") for c in first],
            f"{fmean(c['seconds']['offline'] for c in first):.0f} s on {first[0]['offline_samples']} logged samples "
            f"vs PPO {ppo_seconds:.0f} s",
        ),
    ]
