"""How big each bench scenario is: `FULL` is `rlhfops bench`, `QUICK` is `--quick` (the test suite)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rlhfops.config import Config, load_config


@dataclass(frozen=True)
class BenchPlan:
    """How big each scenario is; `FULL` is `rlhfops bench`, `QUICK` is `--quick` (the test suite)."""

    config: str | None
    """YAML every run starts from (None: the embedded default, tiny.yaml)."""
    overrides: tuple[str, ...]
    """Config overrides applied before the command line's."""
    cycles: int
    """Iterative-RLHF cycles per seed."""
    grid_steps: int
    """Multi-objective weight grid: the simplex lattice with spacing 1 / grid_steps."""
    speed_prompts: int
    """Batched vs per-prompt Best-of-N: prompts, each with speed_n samples."""
    speed_n: int
    ppo_rloo_steps: int
    """PPO vs RLOOTrainer: updates, and completions per update."""
    ppo_rloo_completions: int
    scoring_batches: tuple[int, ...]
    """Fused vs member-by-member scoring: batch sizes, and timed repeats of each."""
    scoring_repeats: int
    update_steps: int
    """Roofline: timed update steps of the RM and of PPO."""
    peak_seconds: float
    """Roofline: seconds of matmuls to measure the peak."""

    def to_json(self) -> dict[str, object]:
        """The plan as `bench.json` records it, with its name (quick, full or custom)."""
        return {**asdict(self), "name": "quick" if self == QUICK else "full" if self == FULL else "custom"}


FULL = BenchPlan(
    config=None,
    overrides=(),
    cycles=3,
    grid_steps=3,
    speed_prompts=32,
    speed_n=16,
    ppo_rloo_steps=10,
    ppo_rloo_completions=32,
    scoring_batches=(1, 64),
    scoring_repeats=5,
    update_steps=5,
    peak_seconds=2.0,
)
QUICK = BenchPlan(
    config="smoke",
    overrides=(
        "sft.max_steps=20",
        "reward.data.n_val_prompts=32",
        "policy.steps=3",
        "policy.prompts_per_step=8",
        "policy.eval_every=3",
        "policy.eval_prompts=8",
        "pipeline.eval_prompts=16",
        "eval.samples_per_prompt=2",
        "best_of_n.n_prompts=8",
        "reward.kind=heads",
        "reward.max_steps=4",
        "prm.max_steps=4",
        "prm.n_prompts=64",
        "prm.n_val_prompts=16",
        "offline.max_steps=3",
        "annotation.review.n_uncertain=4",
        "annotation.review.n_validation=4",
    ),
    cycles=2,
    grid_steps=2,
    speed_prompts=4,
    speed_n=4,
    ppo_rloo_steps=2,
    ppo_rloo_completions=8,
    scoring_batches=(1, 8),
    scoring_repeats=2,
    update_steps=2,
    peak_seconds=0.3,
)


def bench_config(plan: BenchPlan, seed: int, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The plan's config for one seed: its YAML, its overrides, then the caller's."""
    return load_config(plan.config, [*plan.overrides, *overrides, f"seed={seed}"])


def bench_eval_config(cfg: Config) -> Config:
    """How the bench gold-evaluates a policy it trains beside the cycle (weight-grid, dense-PRM):
    as the cycle evaluates its candidates (`cycle.cycle_eval_config`)."""
    from rlhfops.cycle import cycle_eval_config

    return cycle_eval_config(cfg)
