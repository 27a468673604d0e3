"""Supervised fine-tuning of the starting policy on noisy-teacher data (trl SFTTrainer).

Data is prompt/completion pairs, so the loss is on the completion only and trl appends eos to
every completion; the prompt is what the model will be conditioned on when it samples
(`chat.render`: the chat template of an instruct model's tokenizer). The model directory gets the
weights, the tokenizer, the resolved config, the training log and what the teacher's data held (how
many of each corruption).
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from rlhfops.chat import render
from rlhfops.config import Config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.tasks import Task, TaskError, make_task, teacher_of
from rlhfops.training import one_progress_display, trl_run_args
from rlhfops.workspace import SFT_DATA_STATS as DATA_STATS
from rlhfops.workspace import TRAIN_LOG


def teacher_dataset(task: Task, n: int, seed: int, tokenizer) -> tuple[Dataset, Counter]:
    """n train prompts (rendered for `tokenizer`'s model) with one noisy-teacher completion each, and
    the count of each corruption."""
    teacher = teacher_of(task)
    if teacher is None:
        raise TaskError(
            f"task '{task.name}' has no reference responses (no teacher), so there is no SFT data; give the "
            "prompts a response column (task.response_field) or a teacher, or start the cycle from a model "
            "that needs no SFT"
        )
    rng = random.Random(seed)
    records, corruptions = [], Counter()
    for example in task.examples("train", n):
        completion, corruption = teacher(example, rng)
        records.append({"prompt": render(tokenizer, example.prompt), "completion": completion})
        corruptions[corruption] += 1
    return Dataset.from_list(records), corruptions


def run_sft(cfg: Config, out_dir: str | Path, progress: bool = True) -> Path:
    """Train the policy named by `cfg.model` on teacher data; write it to `out_dir`."""
    task = make_task(cfg.task, seed=cfg.seed)
    tokenizer, model = init_policy(cfg)
    dataset, corruptions = teacher_dataset(task, cfg.task.n_train, cfg.seed, tokenizer)
    with tempfile.TemporaryDirectory(prefix="rlhfops-sft-") as scratch:
        args = TRLSFTConfig(
            output_dir=scratch,
            per_device_train_batch_size=cfg.sft.batch_size,
            learning_rate=cfg.sft.lr,
            weight_decay=cfg.sft.weight_decay,
            warmup_steps=cfg.sft.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
            lr_scheduler_type="cosine",
            num_train_epochs=cfg.sft.epochs,
            max_steps=cfg.sft.max_steps,
            max_length=cfg.sft.max_length,
            completion_only_loss=True,
            logging_steps=cfg.sft.logging_steps,
            **trl_run_args(cfg.seed),
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        one_progress_display(trainer, progress)
        trainer.train()
    extras = {
        TRAIN_LOG: trainer.state.log_history,
        DATA_STATS: {"n": len(dataset), "corruptions": dict(sorted(corruptions.items()))},
    }
    return save_policy(trainer.model, tokenizer, cfg, out_dir, extras)
