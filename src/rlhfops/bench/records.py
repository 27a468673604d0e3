"""The typed records `rlhfops bench` measures and `rlhfops report` reads: one TypedDict per level of
`bench.json` (the whole run, a seed, a cycle, each measured row, the speed ratios), so the file's
format is the records' JSON form as it is (`read_bench` / `write_bench`: no conversion, no copy).

    Bench
      plan, overrides, seeds, seconds
      table  [TechniqueRow]                       the technique table as the run printed it
      rows   [SeedResult]                         one per seed
        cycles [CycleResult]                      the iterative cycles, in order
        best_of_n BestOfNReport                   `evaluate_best_of_n` of the SFT policy
        overoptimisation {aggregation: [OverOptimisationPoint]}
        rerank Rerank, multi_objective_bon Front, multi_objective TrainedFront, dense_prm DensePRM
      speed  SpeedRatios

The accessors below name the few values that are read off a record in more than one place (the
technique table, the report's lines, the plots), so each is decided once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from rlhfops.files import atomic_write_json
from rlhfops.workspace import BENCH_JSON


class MeanStd(TypedDict):
    mean: float
    std: float


class EvalResult(TypedDict):
    """The headline of an `evaluation.evaluate` result (its per-sample lists dropped)."""

    gold: dict[str, float]
    gold_composite: float
    solve_accuracy: float | None
    step_validity: float | None
    over_refusal_rate: float | None


def eval_headline(result: dict[str, Any]) -> EvalResult:
    """An evaluation result without its per-sample lists ("samples", "per_prompt"); every other key kept."""
    return cast(EvalResult, {k: v for k, v in result.items() if k not in ("samples", "per_prompt")})


class GateRecord(TypedDict):
    decision: str
    candidate: str | None
    reason: str | None


class CycleResult(TypedDict):
    """One in-process cycle: every policy's evaluation by name ("stable" and each candidate), the
    pre-deploy gate, the version it deployed (promoted at once) and each stage's seconds."""

    cycle: int
    results: dict[str, EvalResult]
    gate: GateRecord
    deployed: str | None
    after: EvalResult
    """The stable policy after the cycle: the deployed candidate, else the stable one."""
    offline_samples: int | None
    seconds: dict[str, float]


class BestOfNPoint(TypedDict):
    n: int
    gold: float
    proxy: float
    samples_per_prompt: int
    samples: int
    kl: float


class AdaptiveN(TypedDict):
    n: int
    signal: str  # best_of_n.adaptive_signal
    threshold: float
    gold: float
    proxy: float
    samples: int
    mean_samples_per_prompt: float
    hard_prompts: int
    share_of_gain: float | None
    share_of_samples: float


class BestOfNReport(TypedDict):
    """`inference.best_of_n.evaluate_best_of_n`'s report."""

    n_prompts: int
    scorer: str
    n_max: int
    curve: list[BestOfNPoint]
    adaptive: AdaptiveN


class OverOptimisationPoint(TypedDict):
    n: int
    kl: float
    gold: float
    proxy: float


class Rerank(TypedDict):
    n: int
    prompts: int
    prm: float
    outcome_rm: float
    first_sample: float


class FrontPoint(TypedDict):
    """One policy (or one Best-of-N selection) of a multi-objective comparison."""

    weights: NotRequired[dict[str, float]]
    gold: dict[str, float]
    over_refusal: NotRequired[float]
    training_seed: NotRequired[int]
    gold_composite: NotRequired[float]
    front: NotRequired[bool]


class Front(TypedDict):
    """`front_summary`: the grid's Pareto front vs the configured weighted sum's point."""

    objectives: list[str]
    points: list[FrontPoint]
    single: FrontPoint
    front_size: int
    hv_front: float
    hv_single: float
    single_dominated: bool
    best_on_front: dict[str, float]


class TrainedFront(Front):
    """`trained_pareto`: a `Front` of trained policies, plus the null (the weighted-sum policy
    trained with the grid's training seeds)."""

    null_points: list[FrontPoint]
    hv_null: float
    null_front_size: int
    samples: int
    train_seconds: float
    policies: int


class PPORun(TypedDict):
    gold_composite: float
    solve_accuracy: float | None
    step_validity: float | None


class DensePRM(TypedDict):
    dense: PPORun
    outcome: PPORun
    dense_seconds: float


class SeedResult(TypedDict):
    """Everything one seed measured (`rlhfops.bench.run.run_seed`)."""

    seed: int
    members: int
    seconds: dict[str, float]
    cycles: list[CycleResult]
    best_of_n: BestOfNReport
    overoptimisation: dict[str, list[OverOptimisationPoint]]
    rerank: Rerank
    multi_objective_bon: Front
    multi_objective: TrainedFront
    dense_prm: DensePRM


class TechniqueRow(TypedDict):
    """One row of the technique table: the technique's values and its baseline's, per seed."""

    technique: str
    purpose: str
    measure: str
    values: list[float]
    baselines: list[float]
    gains: list[float]
    mean: float
    std: float
    relative: MeanStd | None
    verdict: str
    cost: str


class ScoringRow(TypedDict):
    batch: int
    member_by_member_s: float
    stacked_s: float
    heads_s: float


class ScoringSpeed(TypedDict):
    members: int
    rows: list[ScoringRow]


class BatchingSpeed(TypedDict):
    prompts: int
    n: int
    batched_s: float
    per_prompt_s: float
    ratio: float


class PPOvsRLOO(TypedDict):
    steps: int
    completions: int
    ppo: float
    rloo: float
    ratio: float


class UpdateThroughput(TypedDict):
    params: int
    tokens_per_step: int
    flops_per_s: float
    fraction_of_peak: NotRequired[float]


class Roofline(TypedDict):
    matmul_peak_flops_per_s: float
    threads: int
    rm: UpdateThroughput
    ppo: UpdateThroughput


class SpeedRatios(TypedDict):
    ensemble_scoring: ScoringSpeed
    best_of_n_batching: BatchingSpeed
    ppo_vs_rloo: PPOvsRLOO
    roofline: Roofline


class Bench(TypedDict):
    """The whole run, as `bench.json` holds it."""

    plan: dict[str, object]
    """`BenchPlan` as a dict, plus "name": quick, full or custom."""
    overrides: list[str]
    seeds: list[int]
    table: list[TechniqueRow]
    rows: list[SeedResult]
    speed: SpeedRatios
    seconds: float


# ---- reading and writing -------------------------------------------------------------------------


def write_bench(out: Path, bench: Bench) -> Path:
    """`<out>/bench.json`, written atomically."""
    path = Path(out) / BENCH_JSON
    atomic_write_json(path, bench)
    return path


def read_bench(out: Path) -> Bench:
    """`<out>/bench.json`; a missing file is one clear error."""
    path = Path(out) / BENCH_JSON
    if not path.exists():
        raise FileNotFoundError(f"'{path}' does not exist; run `rlhfops bench` first")
    return json.loads(path.read_text())


# ---- values read in more than one place ----------------------------------------------------------


def sft_gold(seed: SeedResult) -> float:
    """Gold composite of the SFT policy: the stable policy cycle 1 evaluated (nothing is deployed before it)."""
    return seed["cycles"][0]["results"]["stable"]["gold_composite"]


def deployed_golds(seed: SeedResult) -> list[float]:
    """Gold composite of the stable policy after each cycle."""
    return [c["after"]["gold_composite"] for c in seed["cycles"]]


def candidate_gold(cycle: CycleResult, name: str) -> float:
    """Gold composite of one policy ("stable", "ppo", "offline", ...) the cycle evaluated."""
    return cycle["results"][name]["gold_composite"]
