"""One typed config for every rlhfops stage.

Defaults are the embedded default (`configs/tiny.yaml` states them explicitly); a YAML file
overrides them, and `--set section.key=value` overrides the file. Unknown keys and wrong types
are errors that name the key. The resolved config is saved next to every model we write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILENAME = "rlhfops_config.yaml"


class ConfigError(ValueError):
    """A config that cannot be used; the message is one sentence for a person."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoiseConfig(Section):
    """Per-example probabilities with which the noisy teacher corrupts a reference solution."""

    wrong_step: float = Field(0.06, ge=0, le=1, description="one step's result is off; later steps follow it")
    skipped_step: float = Field(0.06, ge=0, le=1, description="an intermediate step is left out")
    wrong_answer: float = Field(0.05, ge=0, le=1, description="no working, a wrong number as the answer")
    inconsistent_answer: float = Field(0.05, ge=0, le=1, description="the answer differs from the last step")
    over_refusal: float = Field(0.06, ge=0, le=1, description="a safe prompt is refused")
    undefined_number: float = Field(0.15, ge=0, le=1, description="a number is made up for an undefined prompt")
    verbose: float = Field(0.08, ge=0, le=1, description="a step is written out twice")


class TaskConfig(Section):
    """The built-in arithmetic task (DESIGN.md, 'The built-in task')."""

    name: Literal["arithmetic"] = "arithmetic"
    min_ops: int = Field(1, ge=1, description="fewest operations in a solve expression")
    max_ops: int = Field(2, ge=1, description="most operations in a solve expression")
    max_operand: int = Field(9, ge=1, description="operands are drawn from 0..max_operand")
    ops: str = Field("+-*/", description="operators that may appear; '/' only ever divides exactly")
    kind_weights: dict[Literal["solve", "undefined", "unsafe"], float] = Field(
        default_factory=lambda: {"solve": 0.7, "undefined": 0.15, "unsafe": 0.15},
        description="relative frequency of each prompt kind",
    )
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the prompt space hashed to validation")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the prompt space hashed to test")
    n_train: int = Field(8000, ge=1, description="training prompts (SFT)")
    n_val: int = Field(256, ge=1, description="validation prompts")
    n_test: int = Field(512, ge=1, description="held-out test prompts (gold evaluation)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.min_ops > self.max_ops:
            raise ValueError(f"min_ops ({self.min_ops}) must not exceed max_ops ({self.max_ops})")
        if not self.ops or set(self.ops) - set("+-*/"):
            raise ValueError(f"ops must be a non-empty subset of '+-*/', got {self.ops!r}")
        if sum(self.kind_weights.values()) <= 0 or min(self.kind_weights.values()) < 0:
            raise ValueError("kind_weights must be non-negative with a positive sum")
        return self


class ModelConfig(Section):
    """The policy: a tiny Llama built from this config, or any Hugging Face causal LM by path."""

    name_or_path: str | None = Field(
        None, description="a local directory or hub id of a causal LM; None builds the tiny Llama below"
    )
    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(384, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(128, ge=16)
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class SFTConfig(Section):
    """Supervised fine-tuning on noisy-teacher data with trl's SFTTrainer."""

    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    epochs: float = Field(4.0, gt=0, description="passes over the n_train noisy-teacher examples")
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    max_length: int = Field(96, ge=8, description="prompt + completion tokens; longer examples are truncated")
    logging_steps: int = Field(50, ge=1)


class GenerationConfig(Section):
    """Decoding used by evaluation (and later by collection, Best-of-N and serving)."""

    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0, description="0 keeps the full distribution")
    batch_size: int = Field(256, ge=1)


class EvalConfig(Section):
    """Gold evaluation on the held-out test split."""

    greedy: bool = Field(
        False, description="greedy decoding; false (default) scores the policy's own samples at generation.temperature"
    )
    samples_per_prompt: int = Field(4, ge=1, description="sampled responses per test prompt (1 when greedy)")
    n_test: int | None = Field(None, ge=1, description="evaluate on the first n test prompts; None: all")


OBJECTIVES = ("helpfulness", "harmlessness", "honesty", "conciseness")


class PreferenceConfig(Section):
    """Preference pairs for reward models: k responses per prompt judged per objective."""

    n_prompts: int = Field(1500, ge=1, description="train prompts to build pairs from")
    n_val_prompts: int = Field(640, ge=1, description="validation prompts (clean labels) for RM accuracy")
    responses_per_prompt: int = Field(4, ge=2, description="k: half noisy-teacher responses, half policy samples")
    selection: Literal["max_min", "max_random"] = Field(
        "max_min", description="chosen = a best response; rejected = a worst one, or a random worse one"
    )
    label_noise: float = Field(0.1, ge=0, lt=0.5, description="AI-judge label noise: chosen/rejected swapped")


class RewardConfig(Section):
    """Bradley-Terry reward-model ensembles, one per objective (trl RewardTrainer)."""

    objectives: list[Literal["helpfulness", "harmlessness", "honesty", "conciseness"]] = Field(
        default_factory=lambda: list(OBJECTIVES)
    )
    members: int = Field(3, ge=1, description="K ensemble members per objective")
    kind: Literal["full", "heads"] = Field(
        "full", description="full: K whole models; heads: K linear heads on the frozen shared policy trunk"
    )
    bootstrap: bool = Field(True, description="each member trains on its own bootstrap resample of the pairs")
    member_init: list[str] = Field(
        default_factory=list,
        description="per-member model path (any HF sequence-classification or causal LM); empty: the policy",
    )
    aggregation: Literal["mean", "weighted", "min", "uwo"] = Field("mean")
    uwo_lambda: float = Field(1.0, ge=0, description="uwo: mean - lambda * std")
    uncertainty_penalty: float = Field(
        0.0, ge=0, description="composite reward: minus this times the mean ensemble spread over objectives"
    )
    prm_weight: float = Field(0.0, ge=0, description="composite reward: plus this times the PRM solution score")
    lr: float = Field(1e-3, gt=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(96, ge=8)
    data: PreferenceConfig = Field(default_factory=PreferenceConfig)


class PRMConfig(Section):
    """Process reward model: a probability per step, trained with binary cross-entropy."""

    lr: float = Field(2e-3, gt=0)
    epochs: float = Field(4.0, gt=0)
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(96, ge=8)
    n_prompts: int = Field(1500, ge=1, description="train prompts whose responses are step-labelled")
    wrong_step_rate: float = Field(
        0.35, ge=0, le=1, description="teacher rate of wrong steps in PRM data: the negatives a PRM learns from"
    )
    skipped_step_rate: float = Field(0.1, ge=0, le=1, description="teacher rate of skipped steps in PRM data")
    n_val_prompts: int = Field(256, ge=1)
    aggregation: Literal["min", "product", "last"] = Field("min", description="step probabilities -> solution")


class ScalarisationConfig(Section):
    """How the per-objective reward vector becomes one number."""

    method: Literal["weighted", "hierarchical"] = "weighted"
    weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(OBJECTIVES, 0.25))
    priority: list[str] = Field(
        default_factory=lambda: ["harmlessness", "honesty", "helpfulness"],
        description="hierarchical: earlier objectives must pass their threshold before later ones count",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"harmlessness": 0.0, "honesty": 0.0},
        description="hierarchical: per-objective pass mark on the normalised reward scale",
    )


class ShapingConfig(Section):
    """Partial credit added to the outcome reward; capped so it never outweighs a correct outcome."""

    enabled: bool = False
    format_weight: float = Field(0.1, ge=0, description="the response parses: steps then one answer line")
    step_weight: float = Field(0.2, ge=0, description="share of valid steps")
    partial_answer_weight: float = Field(0.1, ge=0, description="answer within 10% of the gold number")
    cap: float = Field(0.3, ge=0, lt=1, description="total shaping never exceeds this (< the outcome gap of 1)")


class PolicyConfig(Section):
    """Online policy optimisation from the SFT policy: our PPO, or TRL's GRPO / RLOO."""

    algorithm: Literal["ppo", "grpo", "rloo"] = "ppo"
    reward: Literal["composite", "gold"] = Field(
        "composite", description="composite: the reward models (+ PRM, shaping) as configured; gold: exact judges"
    )
    steps: int = Field(60, ge=1, description="policy updates (PPO: rollout batches; GRPO/RLOO: trainer steps)")
    prompts_per_step: int = Field(32, ge=1, description="prompts per rollout batch")
    group_size: int = Field(4, ge=2, description="GRPO/RLOO: completions per prompt")
    lr: float = Field(3e-5, gt=0)
    critic_lr: float = Field(
        1e-3, gt=0, description="PPO critic (value head or model) learning rate: it must track returns fast"
    )
    max_new_tokens: int = Field(40, ge=1)
    temperature: float = Field(1.0, gt=0)
    kl_coef: float = Field(0.05, ge=0, description="per-token KL penalty (PPO) / beta (GRPO, RLOO)")
    target_kl: float | None = Field(6.0, description="PPO adaptive KL controller target (sequence KL); None: fixed")
    kl_horizon: int = Field(10000, ge=1, description="PPO adaptive KL controller horizon (samples)")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    value_coef: float = Field(0.1, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    ppo_epochs: int = Field(2, ge=1)
    minibatches: int = Field(2, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    early_stop_kl: float | None = Field(0.05, description="stop an update's epochs when approx KL exceeds this")
    whiten_rewards: bool = False
    reward_clip: float = Field(10.0, gt=0)
    dense_prm: bool = Field(False, description="PPO: add PRM step rewards at the step-separator tokens")
    prm_step_coef: float = Field(0.1, ge=0, description="weight of each dense PRM step reward")
    critic: Literal["value_head", "value_model"] = Field(
        "value_head", description="value head on the actor's trunk, or a separate value model from the policy"
    )
    eval_every: int = Field(20, ge=1, description="gold score on a held-out slice every this many updates")
    eval_prompts: int = Field(128, ge=1)


class OfflineConfig(Section):
    """Offline RL on logged (prompt, response, reward) tuples: token-level IQL / CQL / ILQL."""

    method: Literal["iql", "cql", "ilql"] = Field(
        "ilql", description="iql: expectile V, no conservative term; cql: tau 0.5 + conservative; ilql: both"
    )
    gamma: float = Field(0.99, ge=0, le=1)
    tau: float = Field(0.7, gt=0, lt=1, description="expectile of the V loss (iql, ilql)")
    cql_alpha: float = Field(0.1, ge=0, description="weight of the conservative term (cql, ilql)")
    awac_beta: float = Field(1.0, ge=0, description="advantage weighting exp(beta * (Q - V)) of the LM loss; 0: plain")
    awac_max_weight: float = Field(20.0, gt=0, description="clip of the AWAC weights")
    lm_coef: float = Field(1.0, ge=0, description="weight of the behaviour (LM cross-entropy) term")
    polyak: float = Field(0.005, gt=0, le=1, description="target Q heads: theta' <- (1 - a) theta' + a theta")
    lr: float = Field(3e-4, gt=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(96, ge=8)
    samples_per_prompt: int = Field(4, ge=1, description="policy samples per train prompt in the logged data")
    n_prompts: int = Field(1000, ge=1, description="train prompts whose samples are logged")
    reward: Literal["composite", "gold"] = Field("composite", description="what scores the logged samples")
    decode_beta: float = Field(1.0, ge=0, description="decoding: log_softmax(logits) + beta * (Q - V)")
    heads_train_trunk: bool = Field(
        True, description="let the Q / V / CQL gradients into the trunk (false: only the LM term trains it)"
    )
    decode_top_k: int = Field(0, ge=0)


class BestOfNConfig(Section):
    """Best-of-N sampling: N samples per prompt, the best by the reward callable."""

    n: int = Field(16, ge=1, description="samples per prompt (the maximum when adaptive)")
    n_values: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="`bon` evaluates each")
    scorer: Literal["ensemble", "prm", "both"] = Field("ensemble", description="what ranks the candidates")
    adaptive: bool = Field(False, description="choose N per prompt from the ensemble spread on a first sample")
    adaptive_spread: float = Field(0.5, ge=0, description="spread above which a prompt is hard (gets N)")
    n_prompts: int = Field(128, ge=1, description="test prompts `bon` evaluates on")
    cache_max_mb: float = Field(64.0, gt=0, description="on-disk cache size bound")
    batch_size: int = Field(256, ge=1, description="sequences per generate call")


class Config(Section):
    seed: int = Field(0, description="one seed for data, initialisation and sampling")
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    prm: PRMConfig = Field(default_factory=PRMConfig)
    scalarisation: ScalarisationConfig = Field(default_factory=ScalarisationConfig)
    shaping: ShapingConfig = Field(default_factory=ShapingConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    best_of_n: BestOfNConfig = Field(default_factory=BestOfNConfig)
    offline: OfflineConfig = Field(default_factory=OfflineConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, directory: str | Path) -> Path:
        """Write the resolved config as `rlhfops_config.yaml` into `directory`."""
        path = Path(directory) / CONFIG_FILENAME
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    got = err.get("input")
    where = f"config key '{key}'" if key else "config"
    return f"{where}: {err['msg']} (got {got!r})"


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError("; ".join(_describe(err) for err in e.errors())) from None


def resolve_path(config: str | Path | None) -> Path | None:
    """`None` -> defaults; a bare name like `smoke` -> `configs/smoke.yaml`; otherwise a path."""
    if config is None:
        return None
    path = Path(config)
    if not path.exists() and path.suffix == "" and (CONFIG_DIR / f"{config}.yaml").exists():
        path = CONFIG_DIR / f"{config}.yaml"
    if not path.exists():
        raise ConfigError(f"config file '{config}' does not exist")
    return path


def parse_override(item: str) -> tuple[list[str], Any]:
    """`sft.lr=3e-4` -> (['sft', 'lr'], 3e-4); the value is read as YAML (numbers, bools, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}' must look like section.key=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    # YAML 1.1 reads '3e-4' as a string; accept it as the number the user meant.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- `--set` overrides, validated once at the end."""
    data: dict[str, Any] = {}
    path = resolve_path(config)
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections")
        data = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{'.'.join(keys)}': '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return validate(data)
