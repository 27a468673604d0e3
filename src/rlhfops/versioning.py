"""The workspace as a git + DVC repository: every cycle's data added to DVC, committed, tagged
`cycle-NNNN` and pushed to the DVC remote; any cycle read back by tag through `dvc.api`.

What git tracks (`.gitignore` is a whitelist, so models, evaluations, caches, the interaction
database and the default remote stay out of git whatever else lands in the workspace):

    .gitignore  .dvcignore  .dvc/config   the repository and its remote (`versioning.remote`)
    cycles/NNNN.dvc                        DVC pointers to each cycle's data directory
    .rlhfops/files.json                    per versioned file: md5, record count, bytes; per cycle: its paths

`files.json` is how `read_cycle` detects a corrupted remote (DVC does not re-hash what it
downloads from a local remote) and how `history` gives record counts without fetching data.
The remote is a directory by default (relative: inside the workspace) or any DVC URL such as
`s3://bucket/path`, with `versioning.remote_options` set through `dvc remote modify` and
credentials from the standard environment variables (AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from rlhfops.config import VersioningConfig
from rlhfops.files import atomic_write_text
from rlhfops.workspace import VERSIONING_LOCK, Workspace

REMOTE = "storage"
FILES = ".rlhfops/files.json"
GITIGNORE = """# rlhfops workspace: git tracks only the repository, the DVC pointers and the version manifest.
/*
!/.gitignore
!/.dvcignore
!/.dvc/
!/cycles/
!/.rlhfops/
"""
IDENTITY = {"user.name": "rlhfops", "user.email": "rlhfops@localhost"}
# held (flock, so released when its process dies, kill -9 included) while rlhfops changes the workspace's
# git + DVC repository; at the root, which the whitelist keeps out of git
# what a git process killed mid-operation leaves behind; each blocks every later git command
GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")


class VersioningError(RuntimeError):
    """A git or DVC step failed; the message says which and what is still safe locally."""


def tag_name(cycle: int) -> str:
    return f"cycle-{cycle:04d}"


def _run(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    argv = [sys.executable, "-m", "dvc", *cmd[1:]] if cmd[0] == "dvc" else list(cmd)
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "error" in ln or "fatal" in ln]
        raise VersioningError(f"`{' '.join(cmd)}` failed in '{root}': {(errors or lines or ['no output'])[0].strip()}")
    return done


@contextmanager
def repository_lock(ws: Workspace) -> Iterator[list[str]]:
    """Hold the workspace's versioning lock; inside it no other rlhfops process works on the repository,
    so a git lock file found there was left by a git killed mid-operation: it is removed, and the
    yielded list names what was removed (a note for the caller)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    with open(ws.root / VERSIONING_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            git = ws.root / ".git"
            stale = [git / name for name in GIT_LOCKS] + (list((git / "refs").rglob("*.lock")) if git.is_dir() else [])
            removed = []
            for path in stale:
                if path.exists():
                    path.unlink()
                    removed.append(path.relative_to(ws.root).as_posix())
            yield removed
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remote_url(ws: Workspace, versioning: VersioningConfig) -> str:
    url = versioning.remote
    if "://" in url:
        return url
    path = Path(url)
    return str(path if path.is_absolute() else (ws.root / path).resolve())


def init_repo(ws: Workspace, versioning: VersioningConfig | None = None) -> None:
    """Make the workspace a git + DVC repository with the configured remote; idempotent."""
    versioning = versioning or VersioningConfig()
    root = ws.root
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        _run(root, "git", "init", "-q")
    for key, value in IDENTITY.items():  # CI has no global identity; a local one never overrides a user's
        if _run(root, "git", "config", "--get", key, check=False).returncode != 0:
            _run(root, "git", "config", "--local", key, value)
    if not (root / ".dvc").exists():
        _run(root, "dvc", "init", "-q")
        _run(root, "dvc", "config", "core.analytics", "false")
    if not (root / ".gitignore").exists() or (root / ".gitignore").read_text() != GITIGNORE:
        atomic_write_text(root / ".gitignore", GITIGNORE)
    url = remote_url(ws, versioning)
    current = _run(root, "dvc", "remote", "list", check=False).stdout.split()
    if current[:2] != [REMOTE, url]:
        _run(root, "dvc", "remote", "add", "--default", "--force", REMOTE, url)
    for key, value in versioning.remote_options.items():
        _run(root, "dvc", "remote", "modify", REMOTE, key, value)
    _run(root, "git", "add", ".gitignore", ".dvc/config", ".dvcignore")
    if _run(root, "git", "diff", "--cached", "--quiet", check=False).returncode != 0 or not _has_head(root):
        _run(root, "git", "commit", "-q", "--allow-empty", "-m", "rlhfops workspace: git + DVC")


def _has_head(root: Path) -> bool:
    return _run(root, "git", "rev-parse", "-q", "--verify", "HEAD", check=False).returncode == 0


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _records(name: str, data: bytes) -> int | None:
    """JSONL: non-empty lines; JSON list: its length; anything else: None."""
    if name.endswith(".jsonl"):
        return sum(1 for line in data.split(b"\n") if line.strip())
    if name.endswith(".json"):
        try:
            loaded = json.loads(data)
        except ValueError:
            return None
        return len(loaded) if isinstance(loaded, list) else None
    return None


def _relative(ws: Workspace, path: str | Path) -> str:
    path = Path(path)
    full = (path if path.is_absolute() else ws.root / path).resolve()
    try:
        rel = full.relative_to(ws.root.resolve())
    except ValueError:
        raise ValueError(f"'{path}' is outside the workspace '{ws.root}', so it cannot be versioned there") from None
    if not full.exists():
        raise FileNotFoundError(f"'{full}' does not exist, so it cannot be versioned")
    return rel.as_posix()


def _describe(ws: Workspace, rel: str) -> dict[str, dict[str, Any]]:
    full = ws.root / rel
    files = sorted(p for p in full.rglob("*") if p.is_file()) if full.is_dir() else [full]
    out = {}
    for f in files:
        data = f.read_bytes()
        rel = f.relative_to(ws.root).as_posix()
        out[rel] = {"md5": _md5(data), "records": _records(f.name, data), "bytes": len(data)}
    return out


def commit_cycle(
    ws: Workspace, cycle: int, paths: list[str | Path], *, versioning: VersioningConfig | None = None
) -> str:
    """`dvc add` the paths (files or directories inside the workspace), git-commit the pointers and
    the manifest, tag `cycle-NNNN` (moved if the cycle is re-committed), `dvc push`. Returns the commit.

    A failed push raises VersioningError after the commit and tag exist: the data stays in the
    working copy and the local DVC cache, and a later `commit_cycle` or `dvc push` sends it.

    Re-entrant: every step is redone from the working copy, so a run killed at any point (inside
    `dvc add`, `git commit` or `dvc push` included) is finished by calling it again; the git lock
    files a killed git leaves are removed under `repository_lock`."""
    versioning = versioning or VersioningConfig()
    rels = [_relative(ws, p) for p in paths]
    if not rels:
        raise ValueError(f"commit_cycle({cycle}) was given no paths to version")
    with repository_lock(ws):
        init_repo(ws, versioning)
        return _commit(ws, cycle, rels, versioning)


def _commit(ws: Workspace, cycle: int, rels: list[str], versioning: VersioningConfig) -> str:
    for rel in rels:  # a pointer half-written by a killed `dvc add` is rewritten from the data
        pointer = ws.root / f"{rel}.dvc"
        if pointer.exists() and not _pointer_ok(pointer):
            pointer.unlink()
    _run(ws.root, "dvc", "add", "-q", *rels)
    manifest_path = ws.root / FILES
    manifest = _read_manifest(manifest_path)
    for rel in rels:
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not (k == rel or k.startswith(rel + "/"))}
        manifest["files"].update(_describe(ws, rel))
    manifest["cycles"][str(cycle)] = sorted(set(manifest["cycles"].get(str(cycle), [])) | set(rels))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    pointers = [f"{rel}.dvc" for rel in rels]
    ignores = sorted({str(Path(rel).parent / ".gitignore") for rel in rels})
    _run(ws.root, "git", "add", FILES, *pointers, *[i for i in ignores if (ws.root / i).exists()])
    if _run(ws.root, "git", "diff", "--cached", "--quiet", check=False).returncode != 0:
        counts = sum(v["records"] or 0 for k, v in manifest["files"].items() if any(k.startswith(r) for r in rels))
        _run(ws.root, "git", "commit", "-q", "-m", f"{tag_name(cycle)}: {', '.join(rels)} ({counts} records)")
    _run(ws.root, "git", "tag", "-f", tag_name(cycle))
    commit = _run(ws.root, "git", "rev-parse", "HEAD").stdout.strip()
    try:
        _run(ws.root, "dvc", "push", "-q")
    except VersioningError as e:
        raise VersioningError(
            f"cycle {cycle} is committed and tagged {tag_name(cycle)} locally (commit {commit[:10]}), but pushing "
            f"its data to the DVC remote '{remote_url(ws, versioning)}' failed: {e}. Nothing is lost: the data is "
            "in the workspace and its DVC cache; fix the remote and run `dvc push` in the workspace."
        ) from None
    return commit


def _pointer_ok(path: Path) -> bool:
    try:
        pointer = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(pointer, dict) and bool(pointer.get("outs"))


def _read_manifest(path: Path) -> dict[str, Any]:
    """`.rlhfops/files.json`, or an empty one; a damaged one is a one-sentence error (git has every
    committed version of it: `git checkout HEAD -- .rlhfops/files.json` restores the last)."""
    if not path.exists():
        return {"files": {}, "cycles": {}}
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)) or not isinstance(
        manifest.get("cycles"), dict
    ):
        raise VersioningError(
            f"the version manifest '{path}' is damaged (not the JSON rlhfops writes); restore it with "
            f"`git checkout HEAD -- {FILES}` in the workspace"
        )
    return manifest


def _show(ws: Workspace, rev: str, rel: str) -> str | None:
    done = _run(ws.root, "git", "show", f"{rev}:{rel}", check=False)
    return done.stdout if done.returncode == 0 else None


def _tag_exists(ws: Workspace, tag: str) -> bool:
    if not (ws.root / ".git").exists():
        return False
    return _run(ws.root, "git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode == 0


def read_cycle(ws: Workspace, cycle: int, relpath: str) -> bytes:
    """The bytes of `relpath` as versioned at tag `cycle-NNNN` (through `dvc.api`, from the local
    cache or the remote), checked against the md5 recorded at that tag."""
    import dvc.api
    from dvc.exceptions import DvcException

    tag = tag_name(cycle)
    if not _tag_exists(ws, tag):
        raise VersioningError(f"the workspace '{ws.root}' has no tag {tag}: cycle {cycle} was never versioned")
    manifest = json.loads(_show(ws, tag, FILES) or '{"files": {}}')
    expected = manifest["files"].get(relpath)
    if expected is None:
        raise VersioningError(f"'{relpath}' is not part of the data versioned at {tag}")
    try:
        data = dvc.api.read(relpath, repo=str(ws.root), rev=tag, mode="rb")
    except DvcException as e:
        raise VersioningError(
            f"cannot read '{relpath}' of {tag}: it is not in the local DVC cache and the DVC remote could not "
            f"supply it ({e})"
        ) from None
    if _md5(data) != expected["md5"]:
        raise VersioningError(
            f"'{relpath}' of {tag} is corrupted: md5 {_md5(data)} but {expected['md5']} was versioned "
            "(the DVC remote or cache holds damaged data)"
        )
    return data


def history(ws: Workspace) -> list[dict[str, Any]]:
    """One row per tagged cycle: cycle, tag, commit, date, and per versioned path its DVC hash and
    its files' record counts and md5s, as committed at that tag."""
    if not (ws.root / ".git").exists():
        return []
    tags = _run(ws.root, "git", "tag", "--list", "cycle-*").stdout.split()
    rows = []
    for tag in sorted(tags):
        commit, date = _run(ws.root, "git", "log", "-1", "--format=%H %cI", tag).stdout.split()
        manifest = json.loads(_show(ws, tag, FILES) or '{"files": {}, "cycles": {}}')
        cycle = int(tag.split("-")[1])
        paths = {}
        for rel in manifest["cycles"].get(str(cycle), []):
            pointer = yaml.safe_load(_show(ws, tag, f"{rel}.dvc") or "{}") or {}
            out = (pointer.get("outs") or [{}])[0]
            files = {k: v for k, v in manifest["files"].items() if k == rel or k.startswith(rel + "/")}
            paths[rel] = {
                "dvc_md5": out.get("md5"),
                "nfiles": out.get("nfiles"),
                "records": sum(v["records"] or 0 for v in files.values()),
                "files": files,
            }
        rows.append({"cycle": cycle, "tag": tag, "commit": commit, "date": date, "paths": paths})
    return rows
