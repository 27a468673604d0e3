"""A content-addressed on-disk cache of Best-of-N results.

    key   = sha256 of (prompt, policy version, reward version, N)     64 hex characters
    file  = <directory>/<key[:2]>/<key>.json                           one JSON object per key

Versions are strings the caller passes; `directory_version` makes one from a model directory's
weight files, so a retrained policy or reward model never reads an old entry. Files are written
atomically (temp file + `os.replace`), so a concurrent reader sees a whole entry or none. A file
that does not parse is a miss and is removed. The cache is bounded: after every `put`, while the
total size exceeds `max_bytes`, the least recently used entry is deleted, where "used" is the
file's mtime and `get` touches it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rlhfops.files import atomic_write_json

WEIGHT_SUFFIXES = (".safetensors",)
CHUNK_BYTES = 1 << 20
# (resolved directory, ((relative path, mtime_ns, size), ...)) -> version: a file rewritten in
# place changes its mtime and misses the memo.
_VERSIONS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def directory_version(path: str | Path) -> str:
    """sha256 (hex) of the names and bytes of every weight file (`*.safetensors`) under `path`,
    at any depth (an ensemble keeps one per member), memoised in-process by the files' mtimes."""
    root = Path(path).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weight files under '{path}' to take a version from")
    stamp = tuple((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    memo_key = (str(root), stamp)
    if memo_key not in _VERSIONS:
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(root)).encode() + b"\0")
            with p.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
        _VERSIONS[memo_key] = digest.hexdigest()
    return _VERSIONS[memo_key]


def cache_key(prompt: str, policy_version: str, reward_version: str, n: int) -> str:
    """sha256 hex of the four fields, JSON-encoded so no two field lists share an encoding."""
    return hashlib.sha256(json.dumps([prompt, policy_version, reward_version, n]).encode()).hexdigest()


class BoNCache:
    """Best-of-N results on disk, one JSON object per key; see the module docstring."""

    def __init__(self, directory: str | Path, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"the cache size bound must be positive, got {max_bytes} bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored object, or None when absent or corrupt (a corrupt file is removed)."""
        path = self.path(key)
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            path.unlink(missing_ok=True)
            return None
        if not isinstance(value, dict):
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # mark as recently used
        except FileNotFoundError:  # evicted by another process since we read it
            pass
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_write_json(self.path(key), value)
        self.evict()

    def entries(self) -> list[tuple[Path, os.stat_result]]:
        """Every complete entry with its stat; temp files of writes in progress are not entries."""
        out = []
        for path in self.directory.glob("??/*.json"):
            try:
                out.append((path, path.stat()))
            except FileNotFoundError:  # removed by a concurrent eviction
                pass
        return out

    def size_bytes(self) -> int:
        return sum(st.st_size for _, st in self.entries())

    def evict(self) -> None:
        """Delete least recently used entries until the total is at most `max_bytes`."""
        entries = sorted(self.entries(), key=lambda e: e[1].st_mtime_ns)
        total = sum(st.st_size for _, st in entries)
        for path, st in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= st.st_size
