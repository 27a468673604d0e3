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

TRL tokenizes the `prompt` column as text, so the column holds the prompt as the model reads it
(`chat.render`: an instruct model's chat template); the task's own prompt string rides along in
the `task_prompt` column, which TRL passes to every reward callable, and `TaskPromptReward` scores
with it, so judges and reward models see the prompt exactly as in every other stage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datasets import Dataset

from rlhfops.chat import render_all
from rlhfops.config import Config
from rlhfops.modeling import load_policy, save_policy
from rlhfops.reward.build import build_reward
from rlhfops.tasks import make_task
from rlhfops.training import one_progress_display, trl_run_args
from rlhfops.workspace import TRAIN_LOG


def prompt_dataset(cfg: Config, tokenizer) -> Dataset:
    """`steps x prompts_per_step` train prompts, cycling if the split is smaller: `prompt` rendered for
    the model, `task_prompt` the task's prompt string (module docstring)."""
    n = cfg.policy.steps * cfg.policy.prompts_per_step
    task = make_task(cfg.task, seed=cfg.seed)
    prompts = [ex.prompt for ex in task.examples("train", min(n, cfg.task.n_train))]
    cycled = [prompts[i % len(prompts)] for i in range(n)]
    return Dataset.from_dict({"prompt": render_all(tokenizer, cycled), "task_prompt": cycled})


class TaskPromptReward:
    """A reward callable (`reward(prompts, completions, **columns)`) as TRL calls it on rendered
    prompts: it scores with the task's prompt strings from the `task_prompt` column. Keeps the
    wrapped callable's `__name__`, which TRL logs the reward under."""

    def __init__(self, reward) -> None:
        self.reward = reward
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)

    def __call__(self, prompts: list, completions: list, task_prompt: list[str], **columns) -> list[float | None]:
        return self.reward(task_prompt, completions, **columns)


def trainer_args(cfg: Config, config_cls, output_dir: str, reward_weights: list[float]):
    """The `GRPOConfig` / `RLOOConfig` for `policy.*`: the one place our config becomes TRL's (the
    settings every TRL trainer here shares are `training.trl_run_args`)."""
    pc = cfg.policy
    return config_cls(
        output_dir=output_dir,
        # Batches count completions: one generation batch = one optimiser step (module docstring).
        per_device_train_batch_size=pc.prompts_per_step * pc.group_size,
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
        **trl_run_args(cfg.seed),
    )


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
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    pc = cfg.policy
    if pc.algorithm == "grpo":
        config_cls, trainer_cls = GRPOConfig, GRPOTrainer
    elif pc.algorithm == "rloo":
        config_cls, trainer_cls = RLOOConfig, RLOOTrainer
    else:
        raise ValueError(
            f"policy.algorithm is '{pc.algorithm}'; TRL online training does 'grpo' or 'rloo' (PPO is rl/ppo.py)"
        )
    reward_funcs, reward_weights = build_reward(cfg, pc.reward, rm_dir, prm_dir)
    tokenizer, model = load_policy(policy_dir)
    dataset = prompt_dataset(cfg, tokenizer)
    tokenizer.padding_side = "left"
    with tempfile.TemporaryDirectory(prefix=f"rlhfops-{pc.algorithm}-") as scratch:
        args = trainer_args(cfg, config_cls, scratch, reward_weights)
        trainer = trainer_cls(
            model=model,
            reward_funcs=[TaskPromptReward(f) for f in reward_funcs],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        one_progress_display(trainer, progress)
        trainer.train()
    return save_policy(trainer.model, tokenizer, cfg, out_dir, extras={TRAIN_LOG: trainer.state.log_history})
