"""Atomic writes: a reader never sees half a file or half a model directory.

What they leave is readable by every user (a file 0644, a directory's contents a+r and its
directories a+rx, whatever the umask): the workspace volume is shared by pods running as other
UIDs (KServe's Hugging Face server reads the models as UID 1000), and `mkstemp` / `mkdtemp` alone
would leave 0600 / 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # an atomically written file: the owner writes, everyone reads


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        readable_by_all(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def readable_by_all(root: Path) -> None:
    """Add read permission (and search permission on directories) for group and others under `root`."""
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        os.chmod(p, p.stat().st_mode | (0o555 if p.is_dir() else 0o444))


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """One JSON object per line, atomically. Strict JSON: a record holding NaN or an infinity (which
    `json.dumps` would write as the non-JSON `NaN` / `Infinity`) is a ValueError naming it."""
    lines = []
    for n, record in enumerate(records, start=1):
        try:
            lines.append(json.dumps(record, allow_nan=False) + "\n")
        except ValueError:
            raise ValueError(f"{path}: record {n} holds NaN or an infinite number, which JSON cannot hold") from None
    return atomic_write_text(path, "".join(lines))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_strict(text: str | bytes) -> Any:
    """`json.loads` that refuses the non-JSON constants NaN, Infinity and -Infinity (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def decode_utf8(raw: bytes, source: str) -> str:
    """`raw` as UTF-8 text; otherwise a ValueError "<source> is not valid UTF-8 (line N)"."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{source} is not valid UTF-8 (line {line})") from None


def read_json_file(path: str | Path, what: str) -> Any:
    """A JSON file `what` (e.g. "model registry") as strict JSON; a missing, unreadable, non-UTF-8 or
    malformed file is one sentence naming it (FileNotFoundError or ValueError)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise ValueError(f"{what} '{path}' is a directory, not a JSON file")
    text = decode_utf8(path.read_bytes(), f"{what} '{path}'")
    try:
        return loads_strict(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} '{path}' is not valid JSON (line {e.lineno}: {e.msg})") from None
    except ValueError as e:
        raise ValueError(f"{what} '{path}' is not valid JSON ({e})") from None


def read_jsonl(path: str | Path, check: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """Every line a JSON object that `check` accepts (it returns None, or what is wrong with the
    record); otherwise a ValueError naming the file and line. Nothing is dropped silently."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise ValueError(f"data file '{path}' is a directory, not a JSONL file")
    records = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start + 1} of the line)") from None
        if not line.strip():
            continue
        try:
            record = loads_strict(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
        problem = "not a JSON object" if not isinstance(record, dict) else check(record)
        if problem:
            raise ValueError(f"{path}:{lineno}: {problem}")
        records.append(record)
    return records
