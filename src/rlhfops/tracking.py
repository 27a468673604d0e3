"""Weights & Biases tracking: one W&B run per stage, one group per pipeline run.

Offline by default: runs are written under `<workspace>/wandb/` and uploaded later with
`wandb sync <workspace>/wandb/offline-run-*`. `WANDB_MODE` in the environment wins over
`tracking.mode` (the tests set it to `disabled`).

    with start_run(cfg, "evaluate", group=group, cycle=3, workspace=ws.root) as run:
        run.log_metrics({"gold/composite": 0.71})
        run.log_samples([{"prompt": p, "response": r, "score": s} for p, r, s in rows])

In W&B, filter or group by `group` to see one cycle's stages together, by `job_type` to compare
one stage across cycles, and by `config.cycle` to order them.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhfops.config import Config

MODES = ("offline", "online", "disabled")


def resolve_mode(cfg: Config) -> str:
    """`WANDB_MODE` if set, else `tracking.mode`."""
    mode = os.environ.get("WANDB_MODE") or cfg.tracking.mode
    if mode not in MODES:
        raise ValueError(f"WANDB_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def run_dir(cfg: Config, workspace: str | Path) -> Path:
    """The directory W&B writes into (its files land in `<dir>/wandb/`): the workspace by default."""
    if cfg.tracking.dir is None:
        return Path(workspace)
    directory = Path(cfg.tracking.dir)
    return directory if directory.is_absolute() else Path(workspace) / directory


def new_group(prefix: str = "rlhfops") -> str:
    """A group name for one pipeline run when the orchestrator does not give one (UTC time + random suffix)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def samples_table(rows: Sequence[Mapping[str, Any]]):
    """A `wandb.Table` with one row per sample; every row must have the same columns."""
    import wandb

    if not rows:
        raise ValueError("log_samples needs at least one row")
    columns = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != columns:
            raise ValueError(f"sample row {i} has columns {list(row)}, expected {columns}")
    return wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])


class Tracker:
    """One stage's W&B run: metrics and sample tables."""

    def __init__(self, run: Any, mode: str):
        self.run = run
        self.mode = mode
        self._finished = False

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars under their own names (use namespaces: `gold/composite`, `losses/policy`)."""
        self.run.log(dict(metrics), step=step)

    def log_samples(self, rows: Sequence[Mapping[str, Any]], key: str = "samples") -> None:
        """Log sample responses (e.g. prompt, response, scores) as a table under `key`."""
        self.run.log({key: samples_table(rows)})

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (idempotent); a non-zero exit code marks it failed in W&B."""
        if not self._finished:
            self._finished = True
            self.run.finish(exit_code=exit_code)


@contextmanager
def start_run(
    cfg: Config,
    stage: str,
    *,
    group: str,
    cycle: int | None = None,
    workspace: str | Path,
    name: str | None = None,
) -> Iterator[Tracker]:
    """A W&B run for one stage of one pipeline run: `job_type=stage`, `group=group`, the full config
    plus `cycle` and `stage` in its config. Finished on exit, as failed if the block raised."""
    import wandb

    mode = resolve_mode(cfg)
    directory = None
    if mode != "disabled":  # a disabled run writes nothing, not even its directory
        directory = run_dir(cfg, workspace)
        directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        group=group,
        job_type=stage,
        name=name or (f"{stage}-cycle{cycle}" if cycle is not None else stage),
        config={**cfg.to_dict(), "cycle": cycle, "stage": stage},
        dir=str(directory) if directory else None,
        mode=mode,
        reinit="create_new",
        # No console capture and no system-metrics thread: stages print their own progress, and the
        # default machine has two cores.
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
    )
    tracker = Tracker(run, mode)
    try:
        yield tracker
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
