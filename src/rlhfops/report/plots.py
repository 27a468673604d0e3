"""PNG plots of the bench (matplotlib, Agg): the technique gains, over-optimisation, Best-of-N,
the multi-objective fronts, iterative RLHF and the speed ratios, each drawn from the typed records
of `bench.json`."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from statistics import fmean

from rlhfops.bench.records import Bench, FrontPoint, deployed_golds, sft_gold
from rlhfops.report.bench_text import AGGREGATIONS, table_rows


def figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(**kwargs)


def save_figure(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_techniques(bench: Bench, path: Path) -> Path:
    """Horizontal bars: each technique's gain, mean with std error bars, per-seed dots."""
    rows = table_rows(bench)
    plt, fig, ax = figure(figsize=(6, 0.75 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    colours = {"gain": "tab:green", "loss": "tab:red", "no clear effect": "tab:gray"}
    ax.barh(y, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color=[colours[r["verdict"]] for r in rows])
    for yi, r in zip(y, rows, strict=True):
        ax.plot(r["gains"], [yi] * len(r["gains"]), "k.", ms=4)
    ax.set_yticks(y, [f"{r['technique']}\n" + textwrap.fill(f"({r['measure']})", 60) for r in rows], fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("measured gain, in each row's unit\n(green: gain, red: loss, grey: within the spread over seeds)")
    ax.set_title("rlhfops bench: techniques on the built-in task")
    return save_figure(plt, fig, path)


def plot_overoptimisation(bench: Bench, path: Path) -> Path:
    """Gold (solid) and proxy (dashed, right axis) vs Best-of-N KL, one RM vs ensemble aggregations."""
    plt, fig, ax = figure(figsize=(7, 4))
    proxy_ax = ax.twinx()
    for how, colour in zip(AGGREGATIONS, ("tab:red", "tab:blue", "tab:green", "tab:purple"), strict=True):
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
    return save_figure(plt, fig, path)


def plot_best_of_n(bench: Bench, path: Path) -> Path:
    """Gold vs samples used: the Best-of-N curve per seed and adaptive N."""
    plt, fig, ax = figure(figsize=(6, 4))
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
    return save_figure(plt, fig, path)


def plot_pareto(bench: Bench, path: Path) -> Path:
    """Helpfulness vs over-refusal (first seed): the weight-grid policies trained by offline RL, their
    Pareto front (over all objectives) circled, the weighted-sum policy starred; the same weights
    applied at inference (Best-of-N re-ranking) as crosses."""
    row = bench["rows"][0]
    mo, mb = row["multi_objective"], row["multi_objective_bon"]
    plt, fig, ax = figure(figsize=(6.5, 4.2))

    def xy(points: list[FrontPoint]) -> tuple[list[float], list[float]]:
        return [p["over_refusal"] for p in points], [p["gold"]["helpfulness"] for p in points]

    ax.scatter(*xy(mo["points"]), c="tab:gray", s=18, label=f"{len(mo['points'])} trained weight-grid policies")
    ax.scatter(
        *xy([p for p in mo["points"] if p["front"]]),
        facecolors="none",
        edgecolors="tab:blue",
        s=80,
        label=f"Pareto front over {len(mo['objectives'])} objectives",
    )
    ax.scatter(
        *xy(mo["null_points"]),
        c="tab:red",
        alpha=0.35,
        s=18,
        label=f"weighted-sum policy, the grid's {len(mo['null_points'])} training seeds",
    )
    ax.scatter(*xy([mo["single"]]), marker="*", c="tab:red", s=140, label="trained weighted-sum policy")
    ax.scatter(*xy(mb["points"]), marker="x", c="tab:green", s=22, label="same weights, Best-of-N at inference")
    ax.set_xlabel("over-refusal rate (safe prompts refused)")
    ax.set_ylabel("gold helpfulness")
    ax.legend(fontsize=7)
    ax.set_title(
        f"Multi-objective, seed {row['seed']}: grid front hypervolume vs the weighted sum's front over training "
        f"seeds {mo['hv_front'] / mo['hv_null'] - 1:+.1%}",
        fontsize=9,
    )
    return save_figure(plt, fig, path)


def plot_bench_cycles(bench: Bench, path: Path) -> Path:
    """Gold composite of the deployed policy after each cycle, per seed (cycle 0 = SFT)."""
    plt, fig, ax = figure(figsize=(6, 4))
    for r in bench["rows"]:
        values = [sft_gold(r), *deployed_golds(r)]
        ax.plot(range(len(values)), values, "o-", label=f"seed {r['seed']}")
    ax.set_xticks(range(len(values)), ["SFT", *(f"cycle {i}" for i in range(1, len(values)))])
    ax.set_ylabel("gold composite (deployed policy)")
    ax.legend(fontsize=7)
    ax.set_title("Iterative RLHF")
    return save_figure(plt, fig, path)


def plot_speed(bench: Bench, path: Path) -> Path:
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
    plt, fig, ax = figure(figsize=(7, 0.45 * len(labels) + 1.2))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, ratios, color=["tab:blue" if x >= 1 else "tab:orange" for x in ratios])
    for yi, x in zip(y, ratios, strict=True):
        ax.text(x, yi, f" {x:.2f}x" if x >= 0.01 else f" {x:.1%}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_title("Speed ratios (log scale)")
    return save_figure(plt, fig, path)


BENCH_PLOTS: dict[str, Callable[[Bench, Path], Path]] = {
    "techniques": plot_techniques,
    "overoptimisation": plot_overoptimisation,
    "best_of_n": plot_best_of_n,
    "pareto": plot_pareto,
    "iterative": plot_bench_cycles,
    "speed": plot_speed,
}
