"""Run the cycle pipeline on this machine through `kfp.local` (the subprocess runner, no containers).

kfp.local prints every task's executor logs; `run_local` sends them to `<workspace>/logs/` and
shows one progress line per finished stage instead:

    [cycle 2] collect                      ok     14.2 s

Each task's stage runs in a process forked from the run's warm server (`pipeline.warm`), whose
socket this module puts in the tasks' environment for the run.
"""

import contextlib
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rlhfops.config import Config
from rlhfops.cycle import PARALLEL_THREADS_ENV
from rlhfops.pipeline.warm import SOCKET_ENV, WarmServer
from rlhfops.workspace import Workspace

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXECUTING = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
PIPELINE_DONE = re.compile(r"Pipeline '([^']+)' finished with status (\w+)(.*)")


class ProgressStream(io.TextIOBase):
    """A text stream that keeps kfp.local's full log in a file and reports stage ends to `emit`."""

    def __init__(self, log_file: io.TextIOBase, emit: Callable[[str, str, float], None]):
        self.log_file, self.emit = log_file, emit
        self.started: dict[str, list[float]] = {}  # ParallelFor runs two iterations of a task at once
        self.buffer = ""
        self.status, self.failure = "", ""
        self.lock = threading.Lock()  # kfp.local writes from one thread per ParallelFor iteration

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.log_file.write(text)
            self.buffer += text
            *lines, self.buffer = self.buffer.split("\n")
            for line in lines:
                self._line(ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        if m := EXECUTING.search(line):
            self.started.setdefault(m.group(1), []).append(time.perf_counter())
        elif (m := FINISHED.search(line)) and self.started.get(m.group(1)):
            # first started, first finished: exact when one runs at a time, close when two overlap
            name, state = m.groups()
            self.emit(name, state, time.perf_counter() - self.started[name].pop(0))
        elif m := PIPELINE_DONE.search(line):
            self.status, self.failure = m.group(2), m.group(3).strip(" .")

    def flush(self) -> None:
        self.log_file.flush()


def start_warm_server(cfg: Config, stack: contextlib.ExitStack) -> WarmServer | None:
    """The warm task server when `pipeline.warm_tasks` (started, stopped with `stack`), else None."""
    return stack.enter_context(WarmServer()).start() if cfg.pipeline.warm_tasks else None


@contextlib.contextmanager
def _environ(name: str, value: str):
    """`name=value` in this process's environment (which kfp.local's task processes inherit) for a while."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_local(
    cfg: Config,
    ws: Workspace,
    config: str,
    overrides: list[str],
    emit: Callable[[str, str, float], None],
    warm: WarmServer | None = None,
) -> tuple[bool, str, Path]:
    """One pipeline run (one cycle) through kfp.local; returns (succeeded, failure message, log file).
    The tasks fork from `warm` (`start_warm_server` here when None; see `pipeline.warm`)."""
    from kfp import local

    from rlhfops.pipeline.graph import build_pipeline

    root = ws.root.resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.log"
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline-root"), raise_on_error=False
    )
    pipeline = build_pipeline(cfg)
    # kfp.local runs two ParallelFor iterations at once: each gets half the cores for torch
    os.environ.setdefault(PARALLEL_THREADS_ENV, str(max(1, (os.cpu_count() or 2) // 2)))
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    with log_path.open("w") as log_file, contextlib.ExitStack() as stack:
        stream = ProgressStream(log_file, emit)
        if warm is None:
            warm = start_warm_server(cfg, stack)
        if warm is not None:
            if path := warm.ready():
                stack.enter_context(_environ(SOCKET_ENV, path))
            else:
                log_file.write(f"the warm task server did not start ({warm.failure}): every task imports cold\n")
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                pipeline(workspace=str(root), config=config, overrides=list(overrides))
        finally:
            # kfp.local leaves its own handler (writing to the stream) on the root logger
            root_logger.handlers[:] = handlers
            root_logger.setLevel(level)
        stream.flush()
    succeeded = stream.status == "SUCCESS"
    return succeeded, stream.failure or ("" if succeeded else "the pipeline did not finish"), log_path
