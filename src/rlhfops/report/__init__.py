"""Reports made from what a workspace holds, never from numbers typed by hand.

`python -m rlhfops.report README.md workspace` (`readme`) rewrites each README block between
`<!-- NAME:start -->` and `<!-- NAME:end -->` from the files the commands left in the workspace:

    gold-eval   `rlhfops run`               <ws>/eval/{untrained,sft}.json, <ws>/models/sft/train_log.json
    reward      `rlhfops train-rm`, `train-prm`   <ws>/models/reward/summary.json, <ws>/models/prm/metrics.json
    weights     `rlhfops tune-weights`      <ws>/models/reward/weights.json
    bon         `rlhfops bon`               <ws>/eval/bon-sft.json
    policy      `rlhfops train-policy`      <ws>/eval/{sft,ppo,grpo,rloo}.json
    cycles      `make demo`                 <ws>/eval/run.json, <ws>/registry.json
    scoring, kinds, throughput, dense-prm, offline, load, gates, active, step-labels
                `benchmarks/*.py --out <ws>/bench/<name>.json` (`make bench-*`)
    bench       `rlhfops bench`             <ws>/bench/bench.json (+ PNG plots under docs/bench/)

The modules: `blocks` (the workspace's own results) and `benchmark_blocks` (the scripts' JSON);
`bench_text` (the bench's technique table, the lines behind it and the speed ratios, read off the
typed records of `rlhfops.bench.records`); `plots` and `history` (PNG plots, matplotlib Agg);
`html` (`rlhfops report`: the page with the plots embedded); `wandb_log` (the plots and gains in
W&B when tracking is on); `readme` (the block table and the rewriting).
"""

from rlhfops.report.bench_text import (
    README_PLOT_NAMES,
    README_PLOTS,
    bench_block,
    bench_markdown,
    detail_lines,
    read_bench,
    relative_text,
    speed_lines,
    table_rows,
    technique_markdown,
)
from rlhfops.report.blocks import ROWS, gold_eval_markdown
from rlhfops.report.history import cycle_history, plot_cycle_history
from rlhfops.report.html import write_html_report, write_plots
from rlhfops.report.plots import BENCH_PLOTS
from rlhfops.report.readme import BLOCKS, replace_block, update_readme
from rlhfops.report.wandb_log import log_report

__all__ = [
    "BENCH_PLOTS",
    "BLOCKS",
    "README_PLOTS",
    "README_PLOT_NAMES",
    "ROWS",
    "bench_block",
    "bench_markdown",
    "cycle_history",
    "detail_lines",
    "gold_eval_markdown",
    "log_report",
    "plot_cycle_history",
    "read_bench",
    "relative_text",
    "replace_block",
    "speed_lines",
    "table_rows",
    "technique_markdown",
    "update_readme",
    "write_html_report",
    "write_plots",
]
