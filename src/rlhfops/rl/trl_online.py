"""Online policy optimisation with TRL's GRPOTrainer or RLOOTrainer, from the SFT policy.

Both sample `group_size` completions per prompt, score them with our reward callables and use
the group as the baseline (GRPO: the group mean and std; RLOO: the mean of the other members).
One trainer step is one generation batch: `prompts_per_step` prompts x `group_size`
completions, generated, scored and used for exactly one optimiser update (on-policy).

TRL counts batches in completions, not prompts: `per_device_train_batch_size` is the number of
completions per micro-batch and the generation batch is `per_device_train_batch_size x
steps_per_generation` completions. With `steps_per_generation = gradient_accumulation_steps = 1`
and `per_device_train_batch_size = prompts_per_step x group_size`, the sampler draws
`prompts_per_step` distinct prompts, repeats each `group_size` times, and the optimiser steps once
per generation batch, so `max_steps = policy.steps` updates see `steps x prompts_per_step` prompts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset

from rlhfops.config import Config
from rlhfops.modeling import load_policy, save_policy
from rlhfops.reward.functions import CompositeReward, EnsembleReward, GoldReward, load_ensembles
from rlhfops.tasks import make_task

TRAIN_LOG = "train_log.json"


def needs_composite(cfg: Config) -> bool:
    """True when the reward is more than a weighted sum of per-objective rewards."""
    return (
        cfg.scalarisation.method == "hierarchical"
        or cfg.reward.uncertainty_penalty > 0
        or cfg.reward.prm_weight > 0
        or cfg.shaping.enabled
    )


def reward_functions(
    cfg: Config, rm_dir: str | Path | None, prm_dir: str | Path | None = None
) -> tuple[list[Callable], list[float]]:
    """The reward callables and their weights for TRL's `reward_funcs` / `reward_weights`.

    `policy.reward == "gold"`: one `GoldReward` per objective in `reward.objectives`;
    `"composite"`: one `EnsembleReward` per objective from the ensembles in `rm_dir`, aggregated by
    `reward.aggregation` (`reward.uwo_lambda`). Weights come from `scalarisation.weights`, in the
    order of `reward.objectives`. TRL then logs each objective's reward on its own
    (`rewards/<name>/mean`) and sums them with these weights, which is the weighted scalarisation.

    Hierarchical scalarisation, the uncertainty penalty (it needs all objectives' spreads at
    once), the PRM term and shaping cannot be written as a weighted sum of per-objective
    callables; then the single `CompositeReward` is returned with weight 1.0 (the PRM is loaded
    from `prm_dir` when `reward.prm_weight > 0`). With gold rewards the composite pieces have no
    reward models to work on, so gold always gives the per-objective weighted sum.
    """
    objectives = list(cfg.reward.objectives)
    missing = [o for o in objectives if o not in cfg.scalarisation.weights]
    if missing:
        raise ValueError(f"scalarisation.weights has no weight for {', '.join(missing)}")
    weights = [float(cfg.scalarisation.weights[o]) for o in objectives]
    if cfg.policy.reward == "gold":
        return [GoldReward(o) for o in objectives], weights
    if rm_dir is None:
        raise ValueError("policy.reward is 'composite' but no reward-model directory was given")
    ensembles = load_ensembles(rm_dir, objectives)
    if needs_composite(cfg):
        prm = None
        if cfg.reward.prm_weight > 0:
            if prm_dir is None:
                raise ValueError("reward.prm_weight is above 0 but no process reward model directory was given")
            from rlhfops.reward.prm import ProcessRewardModel

            prm = ProcessRewardModel.load(prm_dir)
        return [CompositeReward(ensembles, cfg, prm)], [1.0]
    how, lam = cfg.reward.aggregation, cfg.reward.uwo_lambda
    return [EnsembleReward(ensembles[o], how, lam) for o in objectives], weights


def prompt_dataset(cfg: Config) -> Dataset:
    """`steps x prompts_per_step` train prompts (a `prompt` column), cycling if the split is smaller."""
    n = cfg.policy.steps * cfg.policy.prompts_per_step
    task = make_task(cfg.task, seed=cfg.seed)
    prompts = [ex.prompt for ex in task.examples("train", min(n, cfg.task.n_train))]
    return Dataset.from_dict({"prompt": [prompts[i % len(prompts)] for i in range(n)]})


def train_trl_online(
    cfg: Config,
    policy_dir: str | Path,
    rm_dir: str | Path | None,
    out_dir: str | Path,
    progress: bool = True,
    prm_dir: str | Path | None = None,
) -> Path:
    """Optimise the policy in `policy_dir` with GRPO or RLOO (`policy.algorithm`); write it to `out_dir`.

    The model directory gets the weights, the tokenizer, the resolved config and TRL's log
    history (`train_log.json`: loss, KL, per-objective and total rewards, completion lengths).
    """
    import torch
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
    from trl.trainer.callbacks import RichProgressCallback

    pc = cfg.policy
    if pc.algorithm == "grpo":
        config_cls, trainer_cls = GRPOConfig, GRPOTrainer
    elif pc.algorithm == "rloo":
        config_cls, trainer_cls = RLOOConfig, RLOOTrainer
    else:
        raise ValueError(
            f"policy.algorithm is '{pc.algorithm}'; TRL online training does 'grpo' or 'rloo' (PPO is rl/ppo.py)"
        )
    reward_funcs, reward_weights = reward_functions(cfg, rm_dir, prm_dir)
    dataset = prompt_dataset(cfg)
    tokenizer, model = load_policy(policy_dir)
    tokenizer.padding_side = "left"
    completions_per_step = pc.prompts_per_step * pc.group_size
    with tempfile.TemporaryDirectory(prefix=f"rlhfops-{pc.algorithm}-") as scratch:
        args = config_cls(
            output_dir=scratch,
            # Batches count completions: one generation batch = one optimiser step (module docstring).
            per_device_train_batch_size=completions_per_step,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_iterations=1,
            num_generations=pc.group_size,
            max_completion_length=pc.max_new_tokens,
            temperature=pc.temperature,
            learning_rate=pc.lr,
            beta=pc.kl_coef,
            epsilon=pc.clip_range,
            max_grad_norm=pc.max_grad_norm,
            reward_weights=reward_weights,
            max_steps=pc.steps,
            logging_steps=max(1, min(10, pc.steps // 10)),
            use_vllm=False,
            # A tiny model on CPU: full precision, no activation checkpointing.
            bf16=False,
            activation_checkpointing=False,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = trainer_cls(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        # One progress display: rich's, or none; never tqdm bars or printed log dicts.
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        if progress:
            trainer.add_callback(RichProgressCallback())
        trainer.train()
    return save_policy(trainer.model, tokenizer, cfg, out_dir, extras={TRAIN_LOG: trainer.state.log_history})
