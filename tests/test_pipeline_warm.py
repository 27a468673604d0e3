"""The local run's warm task server (rlhfops.pipeline.warm): a task's call runs in a child forked from
the server with the task's stdio, environment and working directory; results and errors come back;
a child whose task dies stops; the server ends with the run that started it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rlhfops.pipeline import warm


@pytest.fixture
def server():
    with warm.WarmServer(preload=("json",)) as s:
        assert s.start().ready() == s.path, s.failure
        yield s


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def importable(directory, monkeypatch) -> None:
    """Modules written into `directory` importable by the server and the tasks (they inherit PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")])))


def task(server, body: str, **env) -> subprocess.CompletedProcess:
    """A task process (as kfp.local starts one) that calls the server."""
    script = "from rlhfops.pipeline import warm\n" + textwrap.dedent(body)
    environ = {**os.environ, warm.SOCKET_ENV: server.path, **env}
    return subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=60)


def test_the_child_has_the_tasks_environment_directory_and_stdout(server, tmp_path):
    out = task(
        server,
        f"""
        import os
        os.chdir({str(tmp_path)!r})
        path = warm.active()
        print("cwd", warm.call(path, "os:getcwd"))
        print("env", warm.call(path, "os:getenv", "TASK_ONLY"))
        print("socket", warm.call(path, "os:getenv", warm.SOCKET_ENV))
        print("pid", warm.call(path, "os:getpid") != os.getpid())
        warm.call(path, "builtins:print", "from the child")
        """,
        TASK_ONLY="set-by-the-task",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"cwd {tmp_path}" in lines and "env set-by-the-task" in lines
    assert "socket None" in lines  # the child runs its stage itself, it never calls the server again
    assert "pid True" in lines and "from the child" in lines  # written to the task's own stdout


def test_an_error_in_the_child_is_raised_in_the_task_with_its_traceback_in_the_tasks_log(server):
    out = task(
        server,
        """
        import json
        try:
            warm.call(warm.active(), "json:loads", "{not json")
        except json.JSONDecodeError as e:
            print("raised", type(e).__name__, e.pos)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "raised JSONDecodeError 1"
    assert "Traceback" in out.stderr and "json/decoder.py" in out.stderr  # the child's own stack


def test_results_of_any_size_come_back(server):
    out = task(server, 'print(len(warm.call(warm.active(), "os:urandom", 5_000_000)))')
    assert out.returncode == 0 and out.stdout.strip() == "5000000", out.stderr


def test_a_child_stops_when_its_task_process_is_killed(server):
    script = "from rlhfops.pipeline import warm\nwarm.call(warm.active(), 'time:sleep', 120)"
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, warm.SOCKET_ENV: server.path})
    deadline = time.monotonic() + 30
    while not children(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    (child,) = children(server.process.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while child in children(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child not in children(server.process.pid)


def test_the_server_ends_when_the_run_that_started_it_is_killed(tmp_path):
    """kill -9 of `rlhfops run`: nothing of it stays behind (the server reads its stdin, which closes)."""
    pid_file = tmp_path / "server.pid"
    script = f"""
from rlhfops.pipeline import warm
import pathlib, time
s = warm.WarmServer(preload=("json",))
assert s.start().ready()
pathlib.Path({str(pid_file)!r}).write_text(str(s.process.pid))
time.sleep(120)
"""
    run = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    server_pid = int(pid_file.read_text())
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{server_pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{server_pid}")


def test_a_server_that_cannot_fork_safely_says_why_and_the_run_goes_on_cold(tmp_path, monkeypatch):
    """A Python thread running after the imports would be lost in every child: no fork then."""
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    importable(tmp_path, monkeypatch)
    with warm.WarmServer(preload=("json", "starts_a_thread")) as s:
        assert s.start().ready() is None
        assert "not forking" in s.failure and "Thread" in s.failure


def test_run_stage_hands_a_task_to_the_server_and_returns_its_result(server, tmp_path):
    """rlhfops.cycle.run_stage in a task of the local run: the stage runs in the child (here `gate`'s
    error for a cycle that was never evaluated, raised in the task as the stage raised it)."""
    out = task(
        server,
        f"""
        from rlhfops.cycle import run_stage
        try:
            run_stage("gate", {str(tmp_path)!r}, "smoke", [], 1, "g")
        except Exception as e:
            print("raised", type(e).__name__)
        """,
        WANDB_MODE="disabled",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("raised"), out.stdout
    assert "rlhfops/pipeline/warm.py" in out.stderr  # the stage ran in the server's child


def test_a_childs_exit_leaves_what_the_server_made_at_import(tmp_path, monkeypatch):
    """W&B makes a temporary directory at import and cleans it at exit: a child's exit must not
    delete it from under the server and the next child (the evaluate stage's sample table did)."""
    (tmp_path / "makes_a_tempdir.py").write_text(
        "import atexit, shutil, tempfile\n"
        "TMP = tempfile.TemporaryDirectory()\n"  # cleaned by a finalizer at exit
        "MEDIA = tempfile.mkdtemp()\n"
        "atexit.register(shutil.rmtree, MEDIA)\n"  # as wandb.sdk.data_types._private does
        "def where():\n    return [TMP.name, MEDIA]\n"
    )
    importable(tmp_path, monkeypatch)
    with warm.WarmServer(preload=("makes_a_tempdir",)) as s:
        assert s.start().ready(), s.failure
        body = "import os\nprint(*map(os.path.isdir, warm.call(warm.active(), 'makes_a_tempdir:where')))"
        first, second = task(s, body), task(s, body)
        assert first.stdout.split() == second.stdout.split() == ["True", "True"], (first.stderr, second.stderr)


def test_w_and_b_offline_runs_with_tables_in_one_child_after_another(tmp_path, monkeypatch):
    """The evaluate stage logs a sample table: every child's W&B offline run can, not just the first."""
    (tmp_path / "logs_a_table.py").write_text(
        textwrap.dedent(
            """
            from rlhfops.config import load_config
            from rlhfops.tracking import start_run

            def evaluate(workspace, cycle):
                cfg = load_config("smoke")
                with start_run(cfg, "evaluate", group="g", cycle=cycle, workspace=workspace) as run:
                    run.log_samples([{"prompt": "1+1?", "response": "answer: 2", "score": 1.0}])
                return cycle
            """
        )
    )
    importable(tmp_path, monkeypatch)
    with warm.WarmServer(preload=("wandb", "rlhfops.tracking", "logs_a_table")) as s:
        assert s.start().ready(), s.failure
        for cycle in (1, 2):
            body = f"print(warm.call(warm.active(), 'logs_a_table:evaluate', {str(tmp_path / 'ws')!r}, {cycle}))"
            out = task(s, body, WANDB_MODE="offline")
            assert out.returncode == 0 and out.stdout.split()[-1] == str(cycle), out.stderr
    assert len(list((tmp_path / "ws" / "wandb").glob("offline-run-*"))) == 2


def test_a_task_whose_server_is_gone_runs_its_stage_itself(tmp_path):
    """The server killed (out of memory, say) mid-run: run_stage says so and runs the stage cold,
    rather than failing the task."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
            from rlhfops.cycle import run_stage
            try:
                run_stage("gate", {str(tmp_path)!r}, "smoke", [], 1, "g")
            except Exception as e:
                print("raised", type(e).__name__)
            """
            ),
        ],
        env={**os.environ, warm.SOCKET_ENV: str(tmp_path / "no-server"), "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no warm task server" in out.stderr and "running stage gate in this process" in out.stderr
    assert out.stdout.strip().startswith("raised")  # the stage's own error, from this process


def test_pipeline_warm_tasks_decides_whether_a_run_has_a_server():
    import contextlib

    from rlhfops.config import load_config
    from rlhfops.pipeline.local import start_warm_server

    with contextlib.ExitStack() as stack:
        assert start_warm_server(load_config("smoke", ["pipeline.warm_tasks=false"]), stack) is None
        server = start_warm_server(load_config("smoke"), stack)
        assert server.ready() == server.path and os.path.exists(server.path)
    assert server.process is None and not os.path.exists(server.dir)  # stopped with the stack
