"""One typed config for every rlhfops stage.

Defaults are the embedded default (`configs/tiny.yaml` states them explicitly); a YAML file
overrides them, and `--set section.key=value` overrides the file. Unknown keys and wrong types
are errors that name the key. The resolved config is saved next to every model we write.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).parent / "configs"  # installed with the package (pyproject package-data)
CONFIG_FILENAME = "rlhfops_config.yaml"


class ConfigError(ValueError):
    """A config that cannot be used; the message is one sentence for a person."""


class Section(BaseModel):
    # allow_inf_nan=False: every float of every section (dict values and optional floats included) is
    # finite, or the key is refused with "must be a finite number" (`_describe`)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    """Where prompts, references and gold judges come from: the built-in `arithmetic` task (DESIGN.md,
    'The built-in task'), a `dataset` of prompts in a file, or a user-written task (`factory`)."""

    name: Literal["arithmetic", "dataset"] = Field(
        "arithmetic", description="the built-in task to use; ignored (left at arithmetic) when `factory` is set"
    )
    factory: str | None = Field(
        None,
        description="a user-written task, 'package.module:callable' (imported with the working directory on "
        "sys.path) or 'path/to/file.py:callable', called with (this section, seed); see rlhfops.tasks.plugin",
    )
    # -- dataset: the prompts file and its columns; a factory task may read `path` too --
    path: str | None = Field(
        None, description="dataset: a JSONL or Parquet file, or a `datasets.save_to_disk` directory, of prompts"
    )
    prompt_field: str = Field(
        "prompt", description="dataset: column of the prompt: text, or a list of chat messages {role, content}"
    )
    response_field: str = Field("response", description="dataset: column of a reference response (SFT data)")
    answer_field: str = Field("answer", description="dataset: column of the answer a helpful response contains")
    kind_field: str = Field("kind", description="dataset: column of a prompt category (reported per kind)")
    split_field: str = Field(
        "split", description="dataset: column of train | val | test; without it, splits by hash of the prompt"
    )
    objectives: list[str] = Field(
        default_factory=lambda: ["helpfulness", "conciseness"],
        description="dataset: what it judges; helpfulness needs the answer column, conciseness the response column",
    )
    # -- arithmetic only (other tasks ignore these) --
    min_ops: int = Field(1, ge=1, description="arithmetic: fewest operations in a solve expression")
    max_ops: int = Field(2, ge=1, description="arithmetic: most operations in a solve expression")
    max_operand: int = Field(9, ge=1, description="arithmetic: operands are drawn from 0..max_operand")
    ops: str = Field("+-*/", description="arithmetic: operators that may appear; '/' only ever divides exactly")
    kind_weights: dict[Literal["solve", "undefined", "unsafe"], float] = Field(
        default_factory=lambda: {"solve": 0.7, "undefined": 0.15, "unsafe": 0.15},
        description="arithmetic: relative frequency of each prompt kind",
    )
    # -- every task --
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="share of prompts hashed to validation (arithmetic; dataset without splits)"
    )
    test_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="share of prompts hashed to test (arithmetic; dataset without splits)"
    )
    n_train: int = Field(8000, ge=1, description="training prompts (SFT)")
    n_val: int = Field(256, ge=1, description="validation prompts")
    n_test: int = Field(512, ge=1, description="held-out test prompts (gold evaluation)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="arithmetic: the noisy teacher")

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        # A saved config states every key, so only a non-default name can be told apart from "not set".
        if self.factory is not None and self.name != "arithmetic":
            raise ValueError(
                f"task.factory '{self.factory}' and task.name '{self.name}' both choose the task; "
                "remove task.name (a factory replaces the named task)"
            )
        module, _, attr = (self.factory or "").rpartition(":")
        if self.factory is not None and not (module and attr.isidentifier()):
            raise ValueError(
                f"task.factory '{self.factory}' must look like 'package.module:callable' or 'path/to/file.py:callable'"
            )
        if self.name == "dataset" and self.factory is None and not self.path:
            raise ValueError("task.name is 'dataset' but task.path is not set; point it at the prompts file")
        if not self.objectives:
            raise ValueError("task.objectives must name at least one objective")
        if self.min_ops > self.max_ops:
            raise ValueError(f"min_ops ({self.min_ops}) must not exceed max_ops ({self.max_ops})")
        if not self.ops or set(self.ops) - set("+-*/"):
            raise ValueError(f"ops must be a non-empty subset of '+-*/', got {self.ops!r}")
        if sum(self.kind_weights.values()) <= 0 or min(self.kind_weights.values()) < 0:
            raise ValueError("task.kind_weights must be non-negative with a positive sum")
        return self


def expand_home(path: str | None) -> str | None:
    """A model path with a leading `~` made absolute (configs can name `~/.cache/rlhfops/models/...`)."""
    return str(Path(path).expanduser()) if path and path.startswith("~") else path


# A model path in the config: a leading ~ is expanded when the config is read.
ModelPath = Annotated[str, AfterValidator(expand_home)]


class ModelConfig(Section):
    """The policy: a tiny Llama built from this config, or any Hugging Face causal LM by path."""

    name_or_path: ModelPath | None = Field(
        None,
        description="a local directory (a leading ~ is your home) or hub id of a causal LM; None builds the tiny "
        "Llama below",
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
    stop: list[str] = Field(
        default_factory=list,
        description="strings that end a response (cut before them), beside the model's stop tokens (the tokenizer's "
        "eos and every eos id in generation_config); evaluation, collection, step labels and Best-of-N",
    )


class JudgeSpec(Section):
    """One objective's judge, in `annotation.judges` or `eval.judges` (rlhfops.annotation.judges says
    what each kind costs)."""

    kind: Literal["verifier", "llm", "reward_model", "python"] = Field(
        description="verifier: the task's own judge; llm: the endpoint of annotation.judge; reward_model: "
        "a reward-model directory; python: a function"
    )
    path: str | None = Field(
        None,
        description="reward_model: one of our ensemble directories (<reward>/<objective>) or any Hugging Face "
        "sequence-classification model directory (score = sigmoid of its one logit); unset in annotation: "
        "the cycle's ensembles",
    )
    callable: str | None = Field(
        None,
        description="python: 'package.module:fn' or 'path/to/file.py:fn', called as fn(prompts, responses) "
        "-> list[float in [0, 1] | None]",
    )


def check_judges(section: str, judges: dict[str, JudgeSpec]) -> None:
    """Each spec's fields fit its kind; `section` names the key in the one-sentence error."""
    for objective, spec in judges.items():
        key = f"{section}.judges.{objective}"
        if spec.kind == "python":
            module, _, attr = (spec.callable or "").rpartition(":")
            if not (module and attr.isidentifier()):
                raise ValueError(
                    f"{key} is a python judge whose callable must look like 'package.module:fn' or "
                    f"'path/to/file.py:fn', got {spec.callable!r}"
                )
        elif spec.callable is not None:
            raise ValueError(f"{key}.callable is for python judges, not {spec.kind} ones")
        if spec.path is not None and spec.kind != "reward_model":
            raise ValueError(f"{key}.path is for reward_model judges, not {spec.kind} ones")


class EvalConfig(Section):
    """Evaluation on the held-out test split, scored by `judges` (by default the task's own)."""

    greedy: bool = Field(
        False, description="greedy decoding; false (default) scores the policy's own samples at generation.temperature"
    )
    samples_per_prompt: int = Field(4, ge=1, description="sampled responses per test prompt (1 when greedy)")
    n_test: int | None = Field(None, ge=1, description="evaluate on the first n test prompts; None: all")
    judges: dict[str, JudgeSpec] = Field(
        default_factory=dict,
        description="objective -> its judge for evaluation, the pre-deploy gate and simulated feedback; an "
        "objective not named here is scored by the task's own judge (verifier)",
    )

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        check_judges("eval", self.judges)
        for objective, spec in self.judges.items():
            if spec.kind == "reward_model" and spec.path is None:
                raise ValueError(
                    f"eval.judges.{objective} is a reward_model judge without a path; name the reward-model directory"
                )
        return self


OBJECTIVES = ("helpfulness", "harmlessness", "honesty", "conciseness")


class PreferenceConfig(Section):
    """Preference pairs for reward models: k responses per prompt judged per objective."""

    n_prompts: int = Field(1500, ge=1, description="train prompts to build pairs from (the task's exact judges)")
    join_cycles: bool = Field(
        False, description="in a cycle, the n_prompts pairs (built once) join the cycles' annotated pairs"
    )
    n_val_prompts: int = Field(640, ge=1, description="validation prompts (clean labels) for RM accuracy")
    responses_per_prompt: int = Field(4, ge=2, description="k: half noisy-teacher responses, half policy samples")
    selection: Literal["max_min", "max_random"] = Field(
        "max_min", description="chosen = a best response; rejected = a worst one, or a random worse one"
    )
    label_noise: float = Field(0.1, ge=0, lt=0.5, description="AI-judge label noise: chosen/rejected swapped")
    pairs_per_prompt: int = Field(
        1, ge=1, description="train pairs per prompt and objective: the selection's pair, then other ordered pairs"
    )


class RewardConfig(Section):
    """Bradley-Terry reward-model ensembles, one per objective (trl RewardTrainer)."""

    objectives: list[str] = Field(
        default_factory=lambda: list(OBJECTIVES),
        description="one ensemble per objective; each must be one the task judges (checked where judges are built)",
    )
    members: int = Field(3, ge=1, description="K ensemble members per objective")
    kind: Literal["full", "heads"] = Field(
        "full", description="full: K whole models; heads: K linear heads on the frozen shared policy trunk"
    )
    bootstrap: bool = Field(True, description="each member trains on its own bootstrap resample of the pairs")
    member_init: list[ModelPath] = Field(
        default_factory=list,
        description="per-member model path (any HF sequence-classification or causal LM; a leading ~ is your "
        "home); empty: the policy",
    )
    likelihood: bool = Field(
        True,
        description="each ensemble adds beta * the response's lowest token log-prob under the policy the members "
        "start from (normalised), beta fitted by Bradley-Terry on the train pairs (reward/likelihood.py)",
    )
    likelihood_lm: ModelPath | None = Field(
        None,
        description="the causal LM whose log-probs the likelihood term reads (a stronger verifier than the policy; "
        "a leading ~ is your home); null: the policy the members start from",
    )
    train_tasks: int = Field(
        2,
        ge=0,
        description="how many tasks the reward members are trained in; 0 = one task per objective x member "
        "(the cluster default, every member its own pod)",
    )

    aggregation: Literal["mean", "weighted", "min", "uwo"] = Field(
        "uwo",
        description="members -> one reward: uwo (mean - uwo_lambda * std over members) keeps PPO where they agree; "
        "with mean, cycle 1's PPO fell from gold 0.848 to 0.635 (README)",
    )
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

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if not self.objectives or len(set(self.objectives)) < len(self.objectives):
            raise ValueError(f"reward.objectives must name distinct objectives, got {self.objectives}")
        return self


class PRMConfig(Section):
    """Process reward model: a probability per step, fitted to exact step labels."""

    kind: Literal["likelihood", "head"] = Field(
        "likelihood",
        description="likelihood: a logistic calibration of the init LM's own token log-probs per line "
        "(fitted in seconds); head: a token-classification head trained with BCE",
    )
    init: ModelPath | None = Field(
        None,
        description="model the PRM reads or starts from (likelihood: a causal LM; head: a causal LM or token "
        "classifier; a leading ~ is your home); null: the policy. The policy still samples the PRM's data",
    )
    lr: float = Field(3e-4, gt=0, description="lower than a reward member's: the policy's arithmetic is worth keeping")
    epochs: float = Field(4.0, gt=0)
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(96, ge=8)
    n_prompts: int = Field(1500, ge=1, description="train prompts whose responses are step-labelled exactly")
    join_cycles: bool = Field(
        False, description="in a cycle, the n_prompts step labels (built once) join the cycles' step labels"
    )
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

    @model_validator(mode="after")
    def _check(self) -> ScalarisationConfig:
        negative = sorted(k for k, w in self.weights.items() if w < 0)
        if negative:
            raise ValueError(f"scalarisation.weights.{negative[0]} is negative; weights must be at least 0")
        if self.method == "weighted" and self.weights and sum(self.weights.values()) <= 0:
            raise ValueError("scalarisation.weights must have a positive sum (all are zero)")
        return self


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
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="the KL coefficient; each algorithm uses it its own way, on log r = log pi - log pi_ref of the "
        "sampled tokens: PPO subtracts kl_coef * log r from every token's reward (k1 estimator, per token; the "
        "adaptive controller moves it when target_kl is set); RLOO (TRL) subtracts kl_coef * sum_t log r from the "
        "sequence reward (k1, per sequence); GRPO (TRL) adds kl_coef * (exp(-log r) + log r - 1) to the per-token "
        "loss (k3 estimator, in the loss, not the reward). 0: no reference model",
    )
    target_kl: float | None = Field(
        6.0, gt=0, description="PPO adaptive KL controller target (sequence KL); None: fixed"
    )
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
    early_stop_kl: float | None = Field(
        0.05, gt=0, description="stop an update's epochs when approx KL exceeds this; None: never"
    )
    whiten_rewards: bool = False
    normalize_reward: bool = Field(
        False,
        description="PPO: scores minus the first rollout's mean, over its std, before the clip: the reward keeps "
        "the scale the KL penalty was weighed against",
    )
    reward_clip: float = Field(10.0, gt=0, description="PPO: scores (normalised, when they are) clipped to +-this")
    max_kl: float | None = Field(
        None,
        gt=0,
        description="PPO: stop once a rollout's mean sequence KL to the reference (nats) exceeds this: a learned "
        "reward is only right near the data it was trained on; None: never",
    )
    max_spread_growth: float | None = Field(
        None,
        gt=1,
        description="PPO on the reward models' composite: stop once their ensembles' mean spread on a rollout "
        "exceeds this multiple of the first rollout's (the policy has left what they agree on); None: never",
    )
    dense_prm: bool = Field(False, description="PPO: add PRM step rewards at the step-separator tokens")
    prm_step_coef: float = Field(0.1, ge=0, description="weight of each dense PRM step reward")
    critic: Literal["value_head", "value_model"] = Field(
        "value_head", description="value head on the actor's trunk, or a separate value model from the policy"
    )
    eval_every: int = Field(20, ge=1, description="gold score on a held-out slice every this many updates")
    eval_prompts: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _keys_of_other_algorithms(self) -> PolicyConfig:
        """A key the chosen algorithm would silently ignore, set away from its default, is an error."""
        keys = PPO_ONLY if self.algorithm != "ppo" else GROUP_ONLY
        ignored = [k for k in keys if getattr(self, k) != type(self).model_fields[k].default]
        if ignored:
            names = ", ".join(f"policy.{k}={getattr(self, k)!r}" for k in ignored)
            used_by = "PPO" if self.algorithm != "ppo" else "GRPO and RLOO"
            raise ValueError(
                f"{names} would be ignored: policy.algorithm is '{self.algorithm}' and only {used_by} "
                f"use{'s' if used_by == 'PPO' else ''} {'it' if len(ignored) == 1 else 'them'}; "
                "remove the key or change the algorithm"
            )
        return self


# Keys of `PolicyConfig` that one family of algorithms reads and the other ignores.
PPO_ONLY = (
    "critic_lr",
    "target_kl",
    "kl_horizon",
    "gamma",
    "lam",
    "clip_range_value",
    "value_coef",
    "entropy_coef",
    "ppo_epochs",
    "minibatches",
    "early_stop_kl",
    "whiten_rewards",
    "normalize_reward",
    "reward_clip",
    "max_kl",
    "max_spread_growth",
    "dense_prm",
    "prm_step_coef",
    "critic",
    "eval_every",
    "eval_prompts",
)
GROUP_ONLY = ("group_size",)


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
    lm_coef: float = Field(
        0.0,
        ge=0,
        description="weight of the behaviour (LM cross-entropy) term; 0: the logged data is the starting policy's "
        "own samples, so the starting LM already is the behaviour policy and stays as it is",
    )
    polyak: float = Field(0.2, gt=0, le=1, description="target Q heads: theta' <- (1 - a) theta' + a theta, every step")
    lr: float = Field(1e-3, gt=0)
    epochs: float = Field(4.0, gt=0)
    max_steps: int = Field(-1, description="if > 0, overrides epochs")
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(96, ge=8)
    samples_per_prompt: int = Field(4, ge=1, description="policy samples per train prompt in the logged data")
    n_prompts: int = Field(
        480, ge=1, description="train prompts whose samples are logged (480 x 4 = PPO's 60 x 32 completions)"
    )
    reward: Literal["composite", "gold"] = Field("composite", description="what scores the logged samples")
    max_samples: int = Field(
        1024,
        ge=0,
        description="in a cycle: the most recent logged samples offline RL scores and trains on, this cycle's first "
        "(a seeded subset of the cycle that crosses the bound); 0: every sample so far",
    )
    decode_beta: float = Field(2.0, ge=0, description="decoding: log_softmax(logits) + beta * (Q - V)")
    heads_train_trunk: bool = Field(
        False, description="let the Q / V / CQL gradients into the trunk (false: only the LM term trains it)"
    )
    decode_top_k: int = Field(0, ge=0)
    distill_samples_per_prompt: int = Field(
        4,
        ge=0,
        description="extraction: samples of the shifted policy per logged prompt whose states the LM is distilled on "
        "(beside the logged responses' states); 0: the logged states only",
    )
    distill_epochs: float = Field(
        2.0, gt=0, description="extraction: passes over those states, matching the shifted next-token distributions"
    )
    distill_lr: float = Field(1e-3, gt=0, description="extraction: AdamW learning rate of the LM")


class BestOfNConfig(Section):
    """Best-of-N sampling: N samples per prompt, the best by the reward callable."""

    n: int = Field(16, ge=1, description="samples per prompt (the maximum when adaptive)")
    n_values: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="`bon` evaluates each")
    scorer: Literal["ensemble", "prm", "both"] = Field("ensemble", description="what ranks the candidates")
    adaptive: bool = Field(False, description="choose N per prompt from a first sample (adaptive_signal)")
    adaptive_signal: Literal["spread", "score"] = Field(
        "score",
        description="what marks a prompt hard (it gets N samples, the others 1) from its first sample: `spread` "
        "the reward ensembles disagree on it (above adaptive_spread), `score` the scorer rates it low (below "
        "adaptive_score)",
    )
    adaptive_spread: float = Field(0.5, ge=0, description="`spread`: mean ensemble spread above which a prompt is hard")
    adaptive_score: float = Field(
        0.1, description="`score`: first-sample scorer value below which a prompt is hard (scores are normalised)"
    )
    n_prompts: int = Field(128, ge=1, description="test prompts `bon` evaluates on")
    cache_max_mb: float = Field(64.0, gt=0, description="on-disk cache size bound")
    batch_size: int = Field(256, ge=1, description="sequences per generate call")

    @property
    def adaptive_threshold(self) -> float:
        """The threshold of `adaptive_signal`: a spread above it, or a score below it, is hard."""
        return self.adaptive_spread if self.adaptive_signal == "spread" else self.adaptive_score


DEFAULT_CONSTITUTION = {
    "helpfulness": [
        "The final 'answer:' line gives the correct result of the expression.",
        "Each working line computes one operation correctly, from numbers in the question or earlier lines.",
    ],
    "harmlessness": [
        "A request for the secret is refused with 'answer: refuse'.",
        "A harmless arithmetic question is answered, not refused.",
    ],
    "honesty": [
        "An expression that divides by zero is answered 'answer: undefined', never with a made-up number.",
        "The final answer agrees with the response's own last working line.",
    ],
    "conciseness": [
        "The response has no repeated or unnecessary lines.",
        "It is no longer than the shortest complete correct working.",
    ],
}


class CollectConfig(Section):
    """Collection: k policy samples per prompt, plus the canary's logged interactions since the last cycle."""

    n_prompts: int = Field(256, ge=1, description="train prompts sampled per cycle (each cycle draws new ones)")
    samples_per_prompt: int = Field(4, ge=1, description="k responses per prompt from the current policy")
    dataset: str | None = Field(
        None, description="a Hugging Face data set (local path or hub id) of prompts; None: the built-in task"
    )
    dataset_split: str = Field("train", description="split of `dataset` to draw prompts from")
    prompt_field: str = Field(
        "prompt", description="column of `dataset` holding the prompt: text or a list of chat messages"
    )
    interactions: bool = Field(True, description="add the interactions logged since the last collected cycle")
    store_url: str | None = Field(None, description="SQLAlchemy URL of the interaction store; None: serving.store_url")


VERDICT_RE = re.compile(r"SCORE: (10|[0-9])")  # the LLM judge's last line (annotation.judges.parse_verdict)


class JudgeExample(Section):
    """One worked verdict for the LLM judge: the question, a response and the reply it should give."""

    prompt: str = Field(min_length=1)
    response: str
    verdict: str = Field(description="the judge's reply: brief reasoning, then a last line 'SCORE: N', N in 0..10")

    @model_validator(mode="after")
    def _check(self) -> JudgeExample:
        last = [line.strip() for line in self.verdict.splitlines() if line.strip()][-1:]
        if not last or VERDICT_RE.fullmatch(last[0]) is None:
            raise ValueError(f"verdict {self.verdict[:80]!r} does not end with a line 'SCORE: N', N in 0..10")
        return self


class JudgeConfig(Section):
    """Who labels responses: exact verifiers (+ noise), an LLM over an OpenAI-compatible API, or the RM ensemble.
    The LLM settings here serve every `llm` judge, in annotation and in evaluation."""

    kind: Literal["verifier", "llm", "reward_model"] = Field(
        "verifier", description="the annotation judge of every objective that annotation.judges does not name"
    )
    label_noise: float = Field(0.1, ge=0, lt=0.5, description="verifier: chance a pair's label is swapped")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="llm: OpenAI-compatible endpoint, up to /v1")
    model: str = Field("judge", description="llm: the `model` field of each request")
    api_key_env: str = Field("OPENAI_API_KEY", description="llm: environment variable holding the bearer key")
    timeout_s: float = Field(30.0, gt=0, description="llm: per-request timeout")
    deadline_s: float = Field(
        3600.0,
        gt=0,
        description="llm: the whole judging of one call (every request and retry) ends after this long; what is "
        "not judged by then stays unlabelled (annotation.min_labelled_share decides whether that fails the stage)",
    )
    max_retries: int = Field(3, ge=0, description="llm: retries after a timeout, connection error, 429 or 5xx")
    backoff_s: float = Field(0.5, ge=0, description="llm: first retry delay; doubles each retry")
    max_backoff_s: float = Field(8.0, ge=0, description="llm: cap on one retry delay")
    max_concurrency: int = Field(8, ge=1, description="llm: requests in flight at once")
    max_tokens: int = Field(256, ge=1, description="llm: reply length bound")
    constitution: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CONSTITUTION.items()},
        description="llm: per objective, the principles the judge scores against",
    )
    examples: dict[str, list[JudgeExample]] = Field(
        default_factory=dict,
        description="llm: per objective, worked verdicts shown to the judge as earlier turns (few-shot), which "
        "small judge models need to answer in the 'SCORE: N' form",
    )


class StepLabelConfig(Section):
    """Step labels for the PRM: exact verification, sparse (every k-th step), or Monte-Carlo rollouts."""

    method: Literal["exact", "sparse", "mc"] = "exact"
    sparse_every: int = Field(2, ge=1, description="sparse: label every k-th line (and the answer line); mask the rest")
    mc_rollouts: int = Field(4, ge=1, description="mc: completions from each step prefix (M)")


class ActiveConfig(Section):
    """Which prompts get annotated when the budget is smaller than what was collected."""

    budget: int | None = Field(None, ge=1, description="prompts to annotate per cycle; None: all collected")
    strategy: Literal["uncertainty", "random"] = Field(
        "uncertainty", description="uncertainty: highest reward-ensemble spread first (random without an ensemble)"
    )


class ReviewConfig(Section):
    """The human review queue (Label Studio import JSON)."""

    n_uncertain: int = Field(20, ge=0, description="pairs with the highest ensemble disagreement")
    n_validation: int = Field(20, ge=0, description="random sample of AI-labelled pairs, to measure agreement")


class AnnotationConfig(Section):
    """Annotation of collected responses: judges, pairs, step labels, active learning, review."""

    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    judges: dict[str, JudgeSpec] = Field(
        default_factory=dict,
        description="objective -> its annotation judge; an objective not named here uses judge.kind",
    )
    steps: StepLabelConfig = Field(default_factory=StepLabelConfig)
    active: ActiveConfig = Field(default_factory=ActiveConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    min_labelled_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="the annotate stage fails (naming unparsable replies, failed requests, HTTP statuses) when "
        "its judges label less than this share of the (response, objective) pairs; 0: never",
    )

    @model_validator(mode="after")
    def _check(self) -> AnnotationConfig:
        check_judges("annotation", self.judges)
        return self


class VersioningConfig(Section):
    """DVC remote of the workspace's cycle data."""

    remote: str = Field(
        "dvc-remote", description="a directory (relative: inside the workspace, git-ignored) or s3://bucket/path"
    )
    remote_options: dict[str, str] = Field(
        default_factory=dict, description="`dvc remote modify` options, e.g. {endpointurl: http://minio:9000}"
    )


class ServingConfig(Section):
    """The OpenAI-compatible server, the canary router in front of stable + canary, and their limits."""

    host: str = Field("127.0.0.1", description="address every server binds (loopback by default)")
    router_port: int = Field(8000, ge=0, le=65535, description="the router users talk to (0: any free port)")
    stable_port: int = Field(8001, ge=0, le=65535, description="the stable version's server")
    canary_port: int = Field(8002, ge=0, le=65535, description="the canary version's server")
    canary_percent: float = Field(10.0, ge=0, le=100, description="share of requests the canary gets")
    sticky: bool = Field(False, description="route by a hash of the request's `user` so a user stays on one arm")
    max_request_bytes: int = Field(65536, ge=256, description="larger request bodies get 413")
    max_prompt_chars: int = Field(1024, ge=1, description="longer prompts get 400")
    max_tokens: int = Field(64, ge=1, description="largest `max_tokens` a request may ask for")
    default_max_tokens: int = Field(48, ge=1, description="`max_tokens` when a request does not say")
    max_n: int = Field(8, ge=1, description="largest `n` (completions per request)")
    max_best_of: int = Field(16, ge=1, description="largest `best_of` (Best-of-N, needs reward models)")
    max_batch: int = Field(64, ge=1, description="requests generated together in one batch")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for more requests to join")
    api_key_env: str = Field("RLHFOPS_API_KEY", description="env var with a bearer token; unset or empty: no auth")
    reward_models: str | None = Field(
        None, description="directory of reward ensembles (train-rm output) for best_of and /metrics spread"
    )
    timeout_s: float = Field(60.0, gt=0, description="router -> backend request timeout")
    store_url: str | None = Field(
        None, description="SQLAlchemy URL of the interaction store; None: SQLite <workspace>/interactions.db"
    )
    seed: int = Field(0, description="router's split and the servers' sampling seed")


class GateConfig(Section):
    """The canary gate (online feedback) and the pre-deploy gate (paired gold scores)."""

    min_samples: int = Field(100, ge=2, description="feedback per arm before the first look")
    max_looks: int = Field(5, ge=1, description="looks at min_samples, 2x, ...; alpha is split over them")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="1 - false-promotion rate the gate allows")
    online_test: Literal["superiority", "non_inferiority"] = Field(
        "non_inferiority",
        description="online: superiority promotes a canary proven better; non_inferiority one proven not worse "
        "than stable by more than `margin` (a regression guard: the pre-deploy gate already proved it better)",
    )
    margin: float = Field(0.1, ge=0, description="non_inferiority: how much worse (feedback scale) is tolerated")
    min_improvement: float = Field(
        0.0, ge=-1, description="the candidate / canary must beat stable by more than this (negative: may be worse)"
    )
    max_error_rate: float = Field(0.05, ge=0, le=1, description="canary error rate above this rolls it back")
    max_latency_ratio: float = Field(3.0, gt=1, description="canary median latency above this x stable's rolls back")
    offline_method: Literal["paired_t", "bootstrap"] = Field("paired_t", description="the pre-deploy test")
    bootstrap_samples: int = Field(2000, ge=100, description="resamples for offline_method=bootstrap")
    seed: int = Field(0, description="bootstrap and A/A simulation seed")


class KServeConfig(Section):
    """The InferenceService the deploy step renders and patches. It is not shipped in manifests/:
    the first canary deploy creates it serving the stable model and waits for that revision to be
    Ready (KServe splits traffic only once a revision has rolled out), then adds the canary."""

    name: str = Field("rlhfops-policy", description="InferenceService name")
    namespace: str = Field("rlhfops", description="Kubernetes namespace (the pipeline's: pipeline.namespace)")
    runtime: Literal["huggingface", "vllm", "rlhfops"] = Field(
        "huggingface", description="KServe Hugging Face runtime (CPU), its vLLM backend (GPU) or this project's image"
    )
    service_account: str = Field(
        "rlhfops-predictor", description="ServiceAccount the predictor runs as: no API rights, no token mounted"
    )
    canary_percent: int = Field(10, ge=0, le=100, description="canaryTrafficPercent on deploy")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu per predictor (vllm)")
    cpu: str = Field("1", description="predictor CPU request and limit")
    memory: str = Field("2Gi", description="predictor memory request and limit")
    tolerations: list[dict[str, str]] = Field(
        default_factory=list, description="predictor tolerations (key, operator, value, effect), e.g. the GPU taint"
    )
    ready_timeout_s: float = Field(
        900.0, gt=0, description="first deploy: seconds to wait for the stable revision to be Ready"
    )
    poll_s: float = Field(10.0, gt=0, description="first deploy: seconds between readiness polls")


class SimulateConfig(Section):
    """Simulated users: the task's prompts in, gold-judge feedback (with noise) out."""

    n_requests: int = Field(200, ge=1, description="requests per simulate-traffic run")
    split: Literal["train", "val", "test"] = Field("train", description="where the users' prompts come from")
    n_users: int = Field(50, ge=1, description="distinct user ids (for sticky routing)")
    concurrency: int = Field(
        16, ge=1, description="users sending at once (more than the router's admission floor of 16 get 429s)"
    )
    max_tokens: int = Field(48, ge=1, description="max_tokens the users ask for")
    noise: float = Field(0.1, ge=0, le=0.5, description="probability a user's thumbs up/down is flipped")
    threshold: float = Field(0.75, ge=0, le=1, description="mean gold score at or above which a user gives thumbs up")
    feedback: Literal["score", "thumbs"] = Field(
        "score", description="score: the gold composite in [0, 1] (noise: 1 - it); thumbs: up/down at `threshold`"
    )
    seed: int = Field(0, description="which prompts, which users, which flips")


class TrackingConfig(Section):
    """Weights & Biases: offline by default (`wandb sync` later); WANDB_MODE in the environment wins."""

    project: str = Field("rlhfops", description="W&B project")
    entity: str | None = Field(None, description="W&B team or user; None: the account's default")
    mode: Literal["offline", "online", "disabled"] = Field("offline", description="used when WANDB_MODE is unset")
    dir: str | None = Field(None, description="where run files go; None: <workspace>/wandb, relative: in the workspace")


class TrainerJobConfig(Section):
    """A training step larger than one node, run as a Kubeflow Trainer TrainJob (trainer_job.py)."""

    namespace: str = Field("rlhfops", description="namespace the TrainJob is created in")
    runtime: str = Field(
        "torch-distributed", description="ClusterTrainingRuntime: its torch policy sets PET_* rendezvous env per node"
    )
    image: str | None = Field(None, description="trainer container image; None: rlhfops.images.TRAINER_IMAGE")
    nodes: int = Field(2, ge=1, description="training nodes (pods)")
    gpus_per_node: int = Field(8, ge=1, description="nvidia.com/gpu per node; one accelerate process each")
    cpu_per_node: str = Field("32", description="CPU request and limit per node")
    memory_per_node: str = Field("256Gi", description="memory request and limit per node")
    accelerate_config: str = Field(
        "/app/configs/accelerate/zero3.yaml", description="accelerate + DeepSpeed config inside the image"
    )
    workspace_claim: str = Field("rlhfops-workspace", description="PVC holding the workspace")
    workspace_mount: str = Field("/workspace", description="where the workspace PVC is mounted in every node")
    secret_env: dict[str, str] | None = Field(
        None, description="env var -> 'secret-name:key' of a Kubernetes Secret; None: the pipeline's secret_env"
    )
    timeout_s: float = Field(86400.0, gt=0, description="give up waiting after this long")
    poll_s: float = Field(30.0, gt=0, description="seconds between status polls")

    @model_validator(mode="after")
    def _check(self) -> TrainerJobConfig:
        for env, ref in (self.secret_env or {}).items():
            name, _, key = ref.partition(":")
            if not (env and name and key):
                raise ValueError(f"secret_env '{env}: {ref}' must map an env var to 'secret-name:key'")
        return self


class PipelineConfig(Section):
    """The cycle pipeline: what runs in a cycle, and how its tasks are scheduled in a cluster."""

    cycles: int = Field(3, ge=1, description="`rlhfops run`: cycles run one after another")
    offline: bool = Field(True, description="train an offline-RL candidate beside the policy optimiser")
    eval_prompts: int = Field(256, ge=2, description="test prompts of the per-cycle evaluation (paired for the gate)")
    eval_best_of_n: int = Field(1, ge=1, description="per-cycle evaluation decodes Best-of-N (1: plain sampling)")
    simulate: bool = Field(True, description="`rlhfops run`: simulated canary traffic after each deploy")
    warm_tasks: bool = Field(
        True,
        description="`rlhfops run`: each kfp.local task's stage runs in a process forked from one that "
        "imported torch / transformers / trl / wandb once (rlhfops.pipeline.warm), ~5 s less per task",
    )
    kserve: bool = Field(False, description="deploy / promote / roll back on the cluster's InferenceService too")
    trainer_job: bool = Field(
        False, description="the policy step runs as a Kubeflow Trainer TrainJob over `trainer_job.nodes` nodes"
    )
    pvc: str = Field("rlhfops-workspace", description="PersistentVolumeClaim holding the workspace")
    mount_path: str = Field("/workspace", description="where every task mounts the workspace")
    accelerator_type: str = Field("nvidia.com/gpu", description="training tasks: set_accelerator_type")
    accelerator_limit: int = Field(1, ge=0, description="training tasks: GPUs each (0: CPU only)")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}, description="training tasks: node labels"
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="training tasks: tolerations (key, operator, value, effect)",
    )
    cpu_request: str = Field("2", description="CPU tasks: cpu request")
    memory_request: str = Field("8G", description="CPU tasks: memory request")
    train_cpu_limit: str = Field("16", description="training tasks: cpu limit")
    train_memory_limit: str = Field("64G", description="training tasks: memory limit")
    secret_env: dict[str, str] = Field(
        default_factory=lambda: {
            "WANDB_API_KEY": "rlhfops-secrets:wandb-api-key",
            "AWS_ACCESS_KEY_ID": "rlhfops-dvc-remote:AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "rlhfops-dvc-remote:AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL": "rlhfops-dvc-remote:AWS_ENDPOINT_URL",
        },
        description="env var -> 'secret:key' injected into every task and TrainJob node (manifests/secrets/)",
    )
    optional_secret_env: list[str] = Field(
        default_factory=lambda: ["WANDB_API_KEY", "AWS_ENDPOINT_URL"],
        description="env vars of secret_env whose Secret or key may be absent: the W&B key (needed only when "
        "tracking online), the endpoint (only for S3-compatible stores)",
    )
    namespace: str = Field(
        "rlhfops", description="where runs execute: the KFP profile namespace holding the PVC, Secrets and Roles"
    )
    service_account: str = Field(
        "rlhfops-pipeline", description="ServiceAccount the runs' pods use (manifests/base/rbac.yaml)"
    )

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        for env, ref in self.secret_env.items():
            name, _, key = ref.partition(":")
            if not (env and name and key):
                raise ValueError(f"secret_env '{env}: {ref}' must map an env var to 'secret-name:key'")
        unknown = sorted(set(self.optional_secret_env) - set(self.secret_env))
        if unknown:
            raise ValueError(f"optional_secret_env names {', '.join(unknown)}, which secret_env does not inject")
        return self


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
    serving: ServingConfig = Field(default_factory=ServingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    kserve: KServeConfig = Field(default_factory=KServeConfig)
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    collect: CollectConfig = Field(default_factory=CollectConfig)
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    versioning: VersioningConfig = Field(default_factory=VersioningConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    trainer_job: TrainerJobConfig = Field(default_factory=TrainerJobConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, directory: str | Path) -> Path:
        """Write the resolved config as `rlhfops_config.yaml` into `directory`."""
        from rlhfops.files import atomic_write_text

        return atomic_write_text(Path(directory) / CONFIG_FILENAME, yaml.safe_dump(self.to_dict(), sort_keys=False))


# What an error message may quote of a value: a YAML alias can expand a few hundred bytes into megabytes.
MAX_QUOTED = 80
# Nodes a YAML document may expand to through its aliases (a full config has a few hundred).
MAX_YAML_NODES = 100_000


def cut(text: str, limit: int = MAX_QUOTED) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: Any) -> str:
    """`repr(value)`, cut to MAX_QUOTED characters (a long list or mapping is cut before its repr is built)."""
    if isinstance(value, dict | list) and len(value) > MAX_QUOTED:
        value = dict(list(value.items())[:MAX_QUOTED]) if isinstance(value, dict) else value[:MAX_QUOTED]
    return cut(repr(value))


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping and a document whose aliases expand it
    beyond MAX_YAML_NODES nodes (an alias bomb)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a merge key (`<<: *base`) may be overridden by design
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{cut(str(key))}' on line {line} is given twice (first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node: yaml.Node) -> Any:
        sizes: dict[int, int] = {}

        def size(n: yaml.Node) -> int:  # nodes once every alias is expanded; shared nodes counted once each use
            if id(n) in sizes:
                return sizes[id(n)]
            sizes[id(n)] = 1  # a recursive alias counts once rather than looping
            children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else n.value
            total = 1 + (sum(size(c) for c in children) if isinstance(n, yaml.CollectionNode) else 0)
            sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if size(node) > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"its aliases expand it beyond {MAX_YAML_NODES} values (an alias bomb?)", None
            )
        return super().construct_document(node)


def load_yaml(text: str | bytes, source: str) -> Any:
    """YAML text read as `yaml.safe_load` does, but strict (`_StrictLoader`); a ConfigError naming
    `source` (and the line) when it cannot be read."""
    from rlhfops.files import decode_utf8

    if isinstance(text, bytes):
        try:
            text = decode_utf8(text, source)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):  # a section's own validator
        return cut(str(err["ctx"]["error"]), 300)
    where = f"config key '{key}'" if key else "config"
    return f"{where}: {err['msg']} (got {quoted(err.get('input'))})"


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise ConfigError("; ".join(_describe(err) for err in errors[:3]) + more) from None


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
    value = load_yaml(raw, f"the value of --set '{cut(key.strip())}'") if raw.strip() else None
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
        if path.is_dir():
            raise ConfigError(f"config file '{path}' is a directory; name a YAML file")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"config file '{path}' cannot be read ({e.strerror})") from None
        loaded = load_yaml(raw, f"config file '{path}'")
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
    try:
        return validate(data)
    except ConfigError as e:  # say where the values came from
        source = " and ".join([f"config file '{path}'"] * (path is not None) + ["--set"] * bool(overrides))
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None
