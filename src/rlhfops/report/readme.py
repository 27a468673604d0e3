"""README blocks: each `<!-- NAME:start -->` ... `<!-- NAME:end -->` block rewritten from the files
the commands left in a workspace (`BLOCKS`: block name -> the function that writes its markdown)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlhfops.files import atomic_write_text
from rlhfops.report.bench_text import README_PLOT_NAMES, README_PLOTS, bench_block, read_bench
from rlhfops.report.benchmark_blocks import (
    active_block,
    dense_prm_block,
    gate_block,
    kinds_block,
    load_block,
    offline_block,
    scoring_block,
    step_labels_block,
    throughput_block,
)
from rlhfops.report.blocks import (
    bon_block,
    cycles_block,
    example_run_block,
    gold_eval_block,
    policy_block,
    reward_block,
    weights_block,
)
from rlhfops.report.plots import BENCH_PLOTS
from rlhfops.workspace import Workspace

BLOCKS: dict[str, Callable[[Workspace], str]] = {
    "cycles": cycles_block,
    "example-run": example_run_block,
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
    """`text` with the body of block `name` replaced; a README without the block is one clear error."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"the README has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


# blocks written from a workspace of their own (`make example-real`), never by default
OWN_WORKSPACE = ("example-run",)


def update_readme(readme: Path, workspace: Workspace, blocks: list[str] | None = None) -> None:
    """Rewrite the named blocks (default: all but OWN_WORKSPACE's) from the workspace; all or nothing."""
    text = readme.read_text()
    names = blocks or [name for name in BLOCKS if name not in OWN_WORKSPACE]
    for name in names:
        text = replace_block(text, name, BLOCKS[name](workspace))
    if "bench" in names:  # the plots the bench block embeds, regenerated with it
        bench = read_bench(workspace)
        for name in README_PLOT_NAMES:
            BENCH_PLOTS[name](bench, readme.parent / README_PLOTS / f"{name}.png")
    atomic_write_text(readme, text)
