"""What every TRL trainer here (SFT, reward models, GRPO / RLOO) is run with, decided once:
no checkpoints of its own (we save atomically when it ends), no reporting integrations (W&B is
`tracking.py`), seeded data order, the CPU when there is no GPU, and one progress display."""

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
