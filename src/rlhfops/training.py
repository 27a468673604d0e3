"""What every TRL trainer here (SFT, reward models, GRPO / RLOO) is run with, decided once:
no checkpoints of its own (we save atomically when it ends), no reporting integrations (W&B is
`tracking.py`), seeded data order, the CPU when there is no GPU, bf16 mixed precision only on a GPU
that has it, no activation checkpointing, and one progress display."""

from __future__ import annotations

from typing import Any

import torch


def trl_run_args(seed: int) -> dict[str, Any]:
    """The keyword arguments of a TRL `*Config` that are the same for every trainer."""
    return {
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "use_cpu": not torch.cuda.is_available(),
        # TRL defaults to bf16 autocast and gradient checkpointing. On a CPU without bf16 units the
        # autocast is emulated: a tiny reward member trained 3.2x slower with both than in fp32
        # without (20 steps, quiet 2-core machine: 6.8 s vs 2.1 s, `python benchmarks/trl_precision.py`);
        # the weights stay fp32 either way (modeling.load_weights), so on a GPU bf16 is mixed precision.
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": False,  # transformers' name; `gradient_checkpointing` is its deprecated alias
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def one_progress_display(trainer, progress: bool) -> None:
    """Rich's progress bar or none (`--json`, pipeline tasks); never tqdm bars or printed log dicts."""
    from transformers import PrinterCallback, ProgressCallback
    from trl.trainer.callbacks import RichProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(RichProgressCallback())
