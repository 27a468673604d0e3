"""What pods in a cluster meet at run time: other UIDs reading the workspace volume, the images'
user, and `rlhfops serve` on a read-only root file system with only /tmp writable."""

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rlhfops.config import load_config
from rlhfops.files import atomic_directory, atomic_write_json, atomic_write_text
from rlhfops.images import RUN_AS_USER
from rlhfops.modeling import init_policy, save_policy

ROOT = Path(__file__).resolve().parents[1]


def unreadable_by_others(root: Path) -> list[str]:
    """Paths under `root` another UID cannot read (a file without o+r, a directory without o+rx)."""
    bad = []
    for p in [root, *root.rglob("*")]:
        need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
        if p.stat().st_mode & need != need:
            bad.append(str(p.relative_to(root)))
    return bad


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)  # the worst case: everything a process creates is private
    yield
    os.umask(old)


def test_what_rlhfops_files_writes_is_readable_by_other_uids(tmp_path, strict_umask):
    ws = tmp_path / "ws"
    atomic_write_text(ws / "registry.json", "{}")
    atomic_write_json(ws / "eval" / "cycle-0001.json", {"x": 1})
    with atomic_directory(ws / "models" / "cycle-0001" / "ppo") as d:
        (d / "config.json").write_text("{}")
        (d / "sub").mkdir()
        (d / "sub" / "model.safetensors").write_bytes(b"0")
    models = ws / "models"
    models.chmod(0o755)  # made by mkdir(parents=True) under the umask; the volume root's modes are the driver's
    (models / "cycle-0001").chmod(0o755)
    (ws / "eval").chmod(0o755)
    ws.chmod(0o755)
    assert unreadable_by_others(ws) == []
    assert stat.S_IMODE((ws / "registry.json").stat().st_mode) == 0o644


def test_the_check_finds_a_private_file(tmp_path, strict_umask):
    (tmp_path / "secret.json").write_text("{}")  # a plain write under umask 077: 0600
    tmp_path.chmod(0o755)
    assert unreadable_by_others(tmp_path) == ["secret.json"]


def test_a_saved_policy_is_readable_by_the_serving_uid(tmp_path, strict_umask):
    """save_policy writes through atomic_directory: KServe's Hugging Face server (UID 1000) reads it."""
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path / "policy")
    assert unreadable_by_others(Path(path)) == []


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "images").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_images_run_as_the_uid_pods_set(dockerfile):
    text = dockerfile.read_text()
    assert re.findall(r"^USER (\S+)$", text, flags=re.M)[-1] == str(RUN_AS_USER)
    for uid in re.findall(r"useradd [^\n]*--uid (\d+)", text):
        assert uid == str(RUN_AS_USER)


# ---- rlhfops serve on a read-only root file system ------------------------------------------------

# Inside a user + mount namespace: KServe's model mount at /mnt/models, every mount remounted
# read-only, then a fresh tmpfs on /tmp (the ServingRuntime's emptyDir).
SANDBOX = r"""
set -e
mount -t tmpfs tmpfs /mnt
mkdir /mnt/models
mount --bind "$MODEL" /mnt/models
# a checkout under /tmp (a CI clone) stays visible, read-only, under a fresh /tmp (below)
if [ -n "$KEEP" ]; then mkdir /mnt/keep && mount --bind "$KEEP" /mnt/keep; fi
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
if [ "$WRITABLE_TMP" = 1 ]; then
  mount -t tmpfs tmpfs /tmp
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" && mount --bind /mnt/keep "$KEEP" && mount -o remount,bind,ro "$KEEP"
  fi
fi
cd /
exec "$@"
"""


def _sandbox_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_sandbox = pytest.mark.skipif(not _sandbox_works(), reason="no unprivileged user + mount namespaces here")


def _runtime_container() -> dict:
    doc = yaml.safe_load((ROOT / "manifests" / "base" / "servingruntime.yaml").read_text())
    (container,) = doc["spec"]["containers"]
    return container


def _sandboxed(model: Path, writable_tmp: bool, env: dict[str, str], *cmd: str, **kwargs):
    keep = str(ROOT) if ROOT.is_relative_to("/tmp") else ""  # the repository, when it lives under /tmp
    env = {**env, "MODEL": str(model), "WRITABLE_TMP": "1" if writable_tmp else "0", "KEEP": keep}
    argv = ["unshare", "-r", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox", *cmd]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@needs_sandbox
def test_the_sandbox_is_read_only_but_for_tmp(tmp_path):
    probe = f"touch /tmp/ok && ! touch {ROOT}/.probe 2>/dev/null && ! touch $HOME/.probe 2>/dev/null"
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home())}
    for writable, expected in ((True, 0), (False, 1)):
        proc = _sandboxed(tmp_path, writable, env, "sh", "-c", probe)
        assert proc.wait(timeout=30) == expected, proc.stdout.read()


@needs_sandbox
def test_serve_starts_with_the_runtime_args_and_env_on_a_read_only_root(tmp_path):
    """The ServingRuntime container exactly (args and env from manifests/base/servingruntime.yaml;
    only the port moves to a free one): read-only root, /tmp a fresh tmpfs, HOME and every cache
    as the manifest sets them."""
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    model_dir = save_policy(model, tokenizer, cfg, tmp_path / "policy")
    container = _runtime_container()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [str(port) if a == "8080" else a for a in container["args"]]
    args = [a.replace("serving.host=0.0.0.0", "serving.host=127.0.0.1") for a in args]
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}  # Secret refs: unset (optional)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **plain}
    assert env["HOME"].startswith("/tmp") and env["TMPDIR"] == "/tmp"
    rlhfops = str(Path(sys.executable).parent / "rlhfops")
    proc = _sandboxed(model_dir, True, env, rlhfops, *args)
    try:
        deadline = time.monotonic() + 300  # a loaded CI machine starts it slowly
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/completions",
                    json={"model": "model", "prompt": "q: 1+2?", "max_tokens": 4},
                    timeout=10,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "rlhfops serve did not answer within 120 s"
                time.sleep(1)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] is not None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@needs_sandbox
def test_without_the_tmp_volume_serve_dies_at_start(tmp_path):
    """The failure the emptyDir prevents: no usable temporary directory on a read-only root."""
    container = _runtime_container()
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}  # Secret refs: unset (optional)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **plain}
    proc = _sandboxed(tmp_path, False, env, str(Path(sys.executable).parent / "rlhfops"), *container["args"])
    assert proc.wait(timeout=120) != 0
    assert "No usable temporary directory" in proc.stdout.read()
