"""The bench's prose: the technique table as markdown, the lines behind its rows and the speed
ratios, and the README's bench block. Every number is read off the typed records of `bench.json`
(`rlhfops.bench.records`); the technique table is recomputed from the per-seed rows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from statistics import fmean

from rlhfops.bench import records
from rlhfops.bench.records import Bench, Front, SpeedRatios, TechniqueRow, deployed_golds, sft_gold
from rlhfops.bench.table import technique_table
from rlhfops.workspace import Workspace

README_PLOTS = Path("docs") / "bench"  # next to the README: the plots its bench block embeds
README_PLOT_NAMES = ("techniques", "overoptimisation", "pareto")
AGGREGATIONS = {"single": "one RM", "mean": "mean", "min": "min", "uwo": "uwo"}


def read_bench(ws: Workspace) -> Bench:
    """The workspace's `<ws>/bench/bench.json`."""
    return records.read_bench(ws.root / "bench")


def table_rows(bench: Bench) -> list[TechniqueRow]:
    """The technique table, recomputed from the run's per-seed measurements (`rows`) by the current
    `technique_table`: bench.json's "table" is what the run printed; the report is a view of the rows."""
    return technique_table(bench["rows"])


def relative_text(row: TechniqueRow) -> str:
    rel = row.get("relative")
    return "-" if rel is None else f"{rel['mean']:+.1%} +- {rel['std']:.1%}"


def technique_markdown(bench: Bench) -> str:
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


def speed_lines(speed: SpeedRatios) -> list[str]:
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


def _avg(values: Iterable[float]) -> float:
    return fmean(list(values))


def front_line(what: str, fronts: list[Front], baseline: str) -> str:
    """One multi-objective comparison, as means over seeds: the front's size, its hypervolume vs
    `baseline` (", hypervolume ... vs ..."), how often the weighted-sum point is dominated, and the
    gold range of each objective over the grid."""
    spread = ", ".join(
        f"{o} {_avg(min(p['gold'][o] for p in m['points']) for m in fronts):.3f}-"
        f"{_avg(max(p['gold'][o] for p in m['points']) for m in fronts):.3f} "
        f"(weighted sum {_avg(m['single']['gold'][o] for m in fronts):.3f})"
        for o in fronts[0]["objectives"]
    )
    return (
        f"multi-objective, {what}: front of {_avg(m['front_size'] for m in fronts):.1f} of "
        f"{len(fronts[0]['points'])} grid points{baseline}; the weighted-sum point is dominated by a grid point in "
        f"{sum(bool(m['single_dominated']) for m in fronts)} of {len(fronts)} seeds; gold range over the grid: {spread}"
    )


def detail_lines(bench: Bench) -> list[str]:
    """The curves behind the table's rows, as means over seeds: gold after each cycle, gold and
    samples by Best-of-N, gold and proxy of each RM aggregation at the largest N, and the
    multi-objective fronts (trained policies against the training-seed null, Best-of-N selections
    against the weighted sum's point)."""
    rows = bench["rows"]
    n_cycles = len(rows[0]["cycles"])
    cycles = " -> ".join(
        [f"SFT {_avg(sft_gold(r) for r in rows):.3f}"]
        + [f"cycle {i + 1} {_avg(deployed_golds(r)[i] for r in rows):.3f}" for i in range(n_cycles)]
    )
    deployed = [sum(c["deployed"] is not None for c in r["cycles"]) for r in rows]
    curve = rows[0]["best_of_n"]["curve"]
    bon = ", ".join(
        f"N={c['n']} {_avg(r['best_of_n']['curve'][i]['gold'] for r in rows):.3f}" for i, c in enumerate(curve)
    )
    adaptive = (
        f"adaptive {_avg(r['best_of_n']['adaptive']['gold'] for r in rows):.3f} with "
        f"{_avg(r['best_of_n']['adaptive']['mean_samples_per_prompt'] for r in rows):.1f} samples per prompt"
    )
    over = ", ".join(
        f"{label} {_avg(r['overoptimisation'][how][-1]['gold'] for r in rows):.3f} "
        f"({_avg(r['overoptimisation'][how][-1]['proxy'] for r in rows):+.2f})"
        for how, label in AGGREGATIONS.items()
    )
    rerank = ", ".join(
        f"{label} {_avg(r['rerank'][key] for r in rows):.3f}"
        for key, label in (("first_sample", "first sample (N=1)"), ("outcome_rm", "outcome RM"), ("prm", "PRM"))
    )
    trained = [r["multi_objective"] for r in rows]
    at_inference = [r["multi_objective_bon"] for r in rows]
    return [
        f"iterative RLHF, gold composite of the deployed policy: {cycles} "
        f"(candidates deployed per seed: {', '.join(map(str, deployed))} of {n_cycles})",
        f"Best-of-N from SFT, gold composite: {bon}; {adaptive}",
        f"gold composite (proxy) of the pick at N={curve[-1]['n']}: {over}",
        f"solve accuracy of Best-of-{curve[-1]['n']} on the solve prompts: {rerank}",
        front_line(
            "trained policies",
            list(trained),
            f", hypervolume {_avg(m['hv_front'] for m in trained):.3f} vs {_avg(m['hv_null'] for m in trained):.3f} "
            f"for the front of the weighted-sum policy over {len(trained[0]['null_points'])} training seeds",
        ),
        front_line(
            "Best-of-N at inference",
            at_inference,
            f", hypervolume {_avg(m['hv_front'] for m in at_inference):.3f} vs "
            f"{_avg(m['hv_single'] for m in at_inference):.3f} for the weighted sum's point alone",
        ),
    ]


def bench_markdown(bench: Bench, plots: Path | None = None) -> str:
    """The technique table, the lines behind it and the speed ratios; with `plots`, the README's
    plot images under that directory."""
    lines = [
        technique_markdown(bench),
        "",
        f"Mean +- population std over seeds {', '.join(map(str, bench['seeds']))} ({bench['plan']['name']} plan); "
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
