"""Warm task processes for the local run: each kfp.local task's stage runs in a process forked from one
that imported torch, transformers, trl, datasets, wandb and the stage modules once.

kfp.local starts a fresh interpreter per task, and a stage that trains or samples spends ~4-5 s of it
importing those libraries and ~1 s tearing them down at exit: about 60 s of every cycle of
`rlhfops run`. The run starts one `WarmServer` before its SFT step (the imports overlap it) and
`run_local` puts its socket in every cycle's tasks' environment (`SOCKET_ENV`);
`rlhfops.cycle.run_stage` in a task then hands its call to the server, which forks a child for it:

    task process (kfp executor)                 warm server (imports done once)
      run_stage(name, ...)  --- request + fds 0/1/2 --->  fork
                                                          child: the task's stdout/stderr, environment
                                                          and working directory; run_stage(name, ...)
      returns the result / raises the error  <--- result --- child exits (no interpreter teardown)

Every task is still its own process with its own inputs, outputs and log in kfp.local; only the
imports are shared (copy-on-write). On a cluster nothing changes: each task is a pod and imports.

Fork safety: the server imports and never computes, so torch's OpenMP pool does not exist yet when it
forks, and no Python thread runs (`serve` checks; otherwise it exits and every task starts cold). The
native threads some imports start (numpy's OpenBLAS pool, pyarrow's jemalloc) register at-fork
handlers, as they must for torch's DataLoader, which forks its workers the same way. A child whose
task process dies (its socket closes) exits at once.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

SOCKET_ENV = "RLHFOPS_WARM_SOCKET"
READY = "ready"
# What the stages import (rlhfops.cycle's lazy imports): heavy libraries first.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "datasets",
    "trl",
    "wandb",
    "rlhfops.cycle",
    "rlhfops.tracking",
    "rlhfops.modeling",
    "rlhfops.generation",
    "rlhfops.evaluation",
    "rlhfops.annotation.collect",
    "rlhfops.annotation.annotate",
    "rlhfops.annotation.judges",
    "rlhfops.reward.train",
    "rlhfops.reward.prm",
    "rlhfops.reward.build",
    "rlhfops.reward.functions",
    "rlhfops.rl.train",
    "rlhfops.rl.ilql",
    "rlhfops.inference.best_of_n",
    "rlhfops.serving.gate",
    "rlhfops.serving.store",
    "rlhfops.versioning",
)
HEADER = struct.Struct("!Q")
STDIO = (0, 1, 2)


def active() -> str | None:
    """The warm server's socket when this process should hand its stage to it (a task of a local run)."""
    return os.environ.get(SOCKET_ENV) or None


# ---- the task side ---------------------------------------------------------------------------------


class Unavailable(ConnectionError):
    """The warm server is not there (it exited, or was never started): run the call here instead."""


def call(path: str, target: str, *args: Any, **kwargs: Any) -> Any:
    """`target(*args, **kwargs)` ("module:function") in a child of the server at `path`, with this
    process's stdout / stderr, environment and working directory: its result, or its exception
    raised here (the child printed the traceback to this process's stderr). `Unavailable` when
    nothing listens at `path`: nothing ran."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    request = {"target": target, "args": args, "kwargs": kwargs}
    request |= {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as e:
            raise Unavailable(f"no warm task server at {path} ({e.strerror or type(e).__name__})") from None
        payload = pickle.dumps(request)
        socket.send_fds(sock, [HEADER.pack(len(payload)) + payload], list(STDIO))
        reply = _receive(sock)
    if reply is None:
        raise RuntimeError(f"the warm task process for {target} died without a result")
    status, value = pickle.loads(reply)
    if status == "ok":
        return value
    raise value


def _receive(sock: socket.socket, first: bytes = b"") -> bytes | None:
    """One length-prefixed message (None if the peer closed first)."""
    data = first
    while len(data) < HEADER.size:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    (size,) = HEADER.unpack(data[: HEADER.size])
    data = data[HEADER.size :]
    while len(data) < size:
        chunk = sock.recv(min(1 << 20, size - len(data)))
        if not chunk:
            return None
        data += chunk
    return data


# ---- the server side -------------------------------------------------------------------------------


def serve(path: str, preload: tuple[str, ...] = PRELOAD) -> int:
    """Import `preload`, listen on `path`, print READY, fork a child per request until stdin closes
    (the run that started this server ended, however it ended)."""
    for module in preload:
        importlib.import_module(module)
    if (threads := threading.enumerate()) != [threading.main_thread()]:
        print(f"not forking: Python threads {[t.name for t in threads]} run after the imports", flush=True)
        return 1
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C ends the run, whose exit closes our stdin
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print(READY, flush=True)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    while True:
        for key, _ in events.select():
            if key.fileobj is sys.stdin:
                if not sys.stdin.buffer.read1(4096):
                    return 0
                continue
            conn, _ = listener.accept()
            try:
                message, fds, _, _ = socket.recv_fds(conn, 65536, len(STDIO))
                payload = _receive(conn, message)
            except OSError:
                payload, fds = None, []
            if payload is None or len(fds) != len(STDIO):
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            if os.fork() == 0:
                listener.close()
                _child(conn, fds, pickle.loads(payload))  # never returns
            conn.close()
            for fd in fds:
                os.close(fd)


def _child(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """Become the task: its stdio, environment, working directory; run the stage; send the outcome."""
    code = 0
    try:
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _forget_the_servers_exit_work()
        for fd, target in zip(fds, STDIO, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(SOCKET_ENV, None)  # this process runs the stage itself
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        if threads := os.environ.get("OMP_NUM_THREADS"):  # read at library load, which the server did
            import torch

            torch.set_num_threads(int(threads))
        threading.Thread(target=_exit_with_task, args=(conn,), daemon=True).start()
        module, name = request["target"].split(":")
        print(f"rlhfops: {request['target']} in a process forked from the warm task server", file=sys.stderr)
        try:
            outcome = ("ok", getattr(importlib.import_module(module), name)(*request["args"], **request["kwargs"]))
        except BaseException as e:  # the task process raises it; the traceback goes to the task's log
            traceback.print_exc()
            outcome = ("error", _picklable(e))
            code = 1
        atexit._run_exitfuncs()  # what the child registered (W&B's teardown), without the module teardown
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        reply = pickle.dumps(outcome)
        conn.sendall(HEADER.pack(len(reply)) + reply)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _forget_the_servers_exit_work() -> None:
    """The server's exit handlers and finalizers clean up what the server owns, e.g. the temporary
    directory W&B makes at import (`atexit.register(MEDIA_TMP.cleanup)`), which every child shares:
    a child's exit runs only what the child itself registered."""
    import weakref

    atexit._clear()
    registry = getattr(weakref.finalize, "_registry", None)
    finalizers = (
        list(registry) if registry is not None else [o for o in gc.get_objects() if isinstance(o, weakref.finalize)]
    )
    for finalizer in finalizers:
        finalizer.atexit = False
    weakref.finalize._registered_with_atexit = False  # the child's own finalizers hook atexit again


def _exit_with_task(conn: socket.socket) -> None:
    """The task process sends nothing after its request: end of stream means it died (kill -9, a
    timeout), and the stage it asked for must not go on writing to the workspace."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os._exit(1)


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class WarmServer:
    """The server for one `rlhfops run`: `start` launches it (its imports overlap whatever the run
    does next), `ready` waits for it, `stop` ends it (so does this process's exit, however it
    happens: the server reads its stdin, which closes with this process)."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD):
        self.preload = preload
        self.dir = tempfile.mkdtemp(prefix="rlhfops-warm-")
        self.path = os.path.join(self.dir, "socket")
        self.process: subprocess.Popen | None = None
        self.state: str | None = None  # after `ready`: the socket path, or None with `failure` saying why
        self.failure = ""

    def start(self) -> WarmServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlhfops.pipeline.warm", self.path, *self.preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def ready(self) -> str | None:
        """Wait until the server listens: its socket path, or None if it could not start (its message
        in `failure`; the tasks then start cold)."""
        if self.process is not None and self.state is None and not self.failure:
            line = self.process.stdout.readline().strip()
            if line == READY:
                self.state = self.path
            else:
                self.failure = line or f"exited with status {self.process.wait()}"
                self.stop()
        return self.state

    def stop(self) -> None:
        self.state = None
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None
        if os.path.isdir(self.dir):
            Path(self.path).unlink(missing_ok=True)
            os.rmdir(self.dir)

    def __enter__(self) -> WarmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    from rlhfops.pipeline.warm import serve  # the module run_stage sees, not this copy run as __main__

    sys.exit(serve(sys.argv[1], tuple(sys.argv[2:]) or PRELOAD))
