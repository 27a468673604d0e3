"""`rlhfops bench`: the technique table and the speed ratios, measured on the built-in task.

Per seed, in its own workspace `<out>/runs/seed-N/`, trained once and shared by every row
(`run.run_seed`):

    sft        the starting policy (`sft.run_sft`)
    cycles     `plan.cycles` iterative-RLHF cycles in process (`run.bench_cycle`): the stages in the
               order `rlhfops.cycle` declares (`run_in_process`, as the KFP graph runs them); a
               candidate the pre-deploy gate deploys is promoted at once (no simulated traffic: the
               online gate is `benchmarks/gate_aa.py`)
    draw       Best-of-N_max from the SFT policy on `best_of_n.n_prompts` test prompts
               (`draw.draw_best_of_n_samples`), scored by every member of the last cycle's reward
               ensembles and by its PRM, judged by gold
    dense PRM  one PPO run with dense PRM step rewards, the twin of cycle 1's outcome-only PPO

Rows from those (`table.technique_table`): iterative RLHF (gold after cycles 1..n vs SFT),
multi-objective (`pareto`: policies trained per weight of a simplex grid, their Pareto front's
hypervolume vs the weighted-sum policy's over the same training seeds; the same weights at
inference in `draw.pareto`), process supervision (`draw.rerank_solve`: PRM- vs outcome-RM-reranked
Best-of-N_max on solve accuracy, and the outcome RM's pick vs the first sample; `dense_prm`: dense
vs outcome PPO), Best-of-N (gold at N_max and at 4 vs N=1; adaptive N, with its share of N_max's
samples and of its gain), ensembles (`draw.overoptimisation`: gold vs proxy as N grows, one member
vs the ensemble under mean / min / uwo, a row each at N_max), offline RL vs PPO (cycle 1's two
candidates, same start and data).

Speed ratios (`speed`), once per run on seed `seeds[0]`'s SFT policy: fused vs member-by-member
ensemble scoring, batched Best-of-N vs one `generate` per prompt, PPO vs TRL's RLOOTrainer, and
the RM and PPO update throughput as a fraction of this machine's matmul peak.

Every result is a typed record (`records`), written as `<out>/bench.json`.
"""

from rlhfops.bench.dense_prm import dense_prm_ppo, train_and_evaluate_ppo
from rlhfops.bench.draw import (
    BestOfNSamples,
    aggregated_rewards,
    draw_best_of_n_samples,
    overoptimisation,
    pareto,
    rerank_solve,
)
from rlhfops.bench.pareto import HV_REF, front_summary, logged_rewards, trained_pareto
from rlhfops.bench.plan import FULL, QUICK, BenchPlan, bench_config, bench_eval_config
from rlhfops.bench.records import BENCH_JSON, Bench, SeedResult, TechniqueRow, read_bench, write_bench
from rlhfops.bench.run import bench_cycle, run_bench, run_seed
from rlhfops.bench.speed import speed_ratios
from rlhfops.bench.table import mean_std, technique_table, verdict

__all__ = [
    "BENCH_JSON",
    "FULL",
    "HV_REF",
    "QUICK",
    "Bench",
    "BenchPlan",
    "BestOfNSamples",
    "SeedResult",
    "TechniqueRow",
    "aggregated_rewards",
    "bench_config",
    "bench_cycle",
    "bench_eval_config",
    "dense_prm_ppo",
    "draw_best_of_n_samples",
    "front_summary",
    "logged_rewards",
    "mean_std",
    "overoptimisation",
    "pareto",
    "read_bench",
    "rerank_solve",
    "run_bench",
    "run_seed",
    "speed_ratios",
    "technique_table",
    "train_and_evaluate_ppo",
    "trained_pareto",
    "verdict",
    "write_bench",
]
