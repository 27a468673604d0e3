"""The model registry: every policy version the loop produced, and which one serves.

`<workspace>/registry.json`:

    versions   [{id, name, path, parent, metrics, config, stage, created, decisions}]
    decisions  [{time, version, decision, stats}]      every gate decision, in order
    failures   [{time, cycle, message}]                 cycles the pipeline's exit handler saw fail

A version's stage is `candidate` (trained, not deployed), `canary`, `stable` or `archived`; at
most one version is stable and one is canary. Every update is read-modify-write under an
exclusive file lock and written atomically, so concurrent writers lose nothing and a reader
never sees half a file.
"""

from __future__ import annotations

import copy
import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhfops.files import atomic_write_json, read_json_file
from rlhfops.workspace import REGISTRY

STAGES = ("candidate", "canary", "stable", "archived")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message is one sentence for a person."""


class Registry:
    def __init__(self, ws_root: str | Path) -> None:
        self.root = Path(ws_root)
        self.path = self.root / REGISTRY
        self.lock_path = self.root / ".registry.lock"

    # ---- reading ------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The registry, checked (`check_registry`): a damaged file is a RegistryError naming it."""
        if not self.path.exists():
            return {"versions": [], "decisions": [], "failures": []}
        try:
            data = read_json_file(self.path, "model registry")
        except ValueError as e:
            raise RegistryError(str(e)) from None
        problem = check_registry(data)
        if problem:
            raise RegistryError(f"model registry '{self.path}' is damaged: {problem}")
        return data

    def list(self) -> list[dict[str, Any]]:
        return self.load()["versions"]

    def get(self, version: str) -> dict[str, Any]:
        return _find(self.load(), version)

    def stable(self) -> dict[str, Any] | None:
        return self._in_stage("stable")

    def canary(self) -> dict[str, Any] | None:
        return self._in_stage("canary")

    def decisions(self) -> list[dict[str, Any]]:
        return self.load()["decisions"]

    def failures(self) -> list[dict[str, Any]]:
        return self.load()["failures"]

    def _in_stage(self, stage: str) -> dict[str, Any] | None:
        return next((v for v in self.list() if v["stage"] == stage), None)

    # ---- writing ------------------------------------------------------------------------------

    def register(
        self,
        path: str | Path,
        parent: str | None = None,
        metrics: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        stage: str = "candidate",
        name: str | None = None,
    ) -> str:
        """Add a model directory as a new version (`v1`, `v2`, ...); returns its id. Registering it
        as `stable` or `canary` archives the version that held that stage."""
        _check_stage(stage)

        def add(data: dict[str, Any]) -> str:
            if parent is not None:
                _find(data, parent)
            vid = f"v{len(data['versions']) + 1}"
            data["versions"].append(
                {
                    "id": vid,
                    "name": name or Path(path).name,
                    "path": str(path),
                    "parent": parent,
                    "metrics": metrics or {},
                    "config": config or {},
                    "stage": "candidate",
                    "created": time.time(),
                    "decisions": [],
                }
            )
            _move(data, vid, stage)
            return vid

        return self._update(add)

    def set_stage(self, version: str, stage: str) -> None:
        _check_stage(stage)
        self._update(lambda data: _move(data, version, stage))

    def record_decision(self, version: str, decision: str, stats: dict[str, Any]) -> None:
        """Append a gate decision (promote / rollback / wait / deploy / reject) with its statistics."""

        def record(data: dict[str, Any]) -> None:
            entry = {"time": time.time(), "version": version, "decision": decision, "stats": stats}
            _find(data, version)["decisions"].append({k: v for k, v in entry.items() if k != "version"})
            data["decisions"].append(entry)

        self._update(record)

    def record_failure(self, cycle: str | int, message: str) -> None:
        self._update(lambda data: data["failures"].append({"time": time.time(), "cycle": cycle, "message": message}))

    def promote_canary(self) -> str:
        """The canary becomes stable, the old stable is archived; returns the new stable's id."""

        def promote(data: dict[str, Any]) -> str:
            canary = next((v for v in data["versions"] if v["stage"] == "canary"), None)
            if canary is None:
                raise RegistryError("there is no canary version to promote")
            _move(data, canary["id"], "stable")
            return canary["id"]

        return self._update(promote)

    def rollback_canary(self) -> str:
        """The canary is archived, stable keeps serving; returns the rolled-back version's id."""

        def rollback(data: dict[str, Any]) -> str:
            canary = next((v for v in data["versions"] if v["stage"] == "canary"), None)
            if canary is None:
                raise RegistryError("there is no canary version to roll back")
            _move(data, canary["id"], "archived")
            return canary["id"]

        return self._update(rollback)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Apply `change` to a copy of the registry and write it; on any error nothing is written."""
        with self._locked():
            data = copy.deepcopy(self.load())
            result = change(data)
            atomic_write_json(self.path, data)
        return result


def check_registry(data: Any) -> str | None:
    """What is wrong with a loaded registry, or None: an object with the lists `versions`, `decisions`
    and `failures`, each version an object with a string `id` and `path`, a known `stage`, a
    `decisions` list, and at most one stable and one canary version."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    for key in ("versions", "decisions", "failures"):
        if not isinstance(data.get(key), list):
            return f"it has no '{key}' list"
    for n, v in enumerate(data["versions"], start=1):
        if not isinstance(v, dict):
            return f"version {n} is not an object"
        name = v.get("id", n)
        for key in ("id", "path"):
            if not isinstance(v.get(key), str):
                return f"version {name} has no string '{key}'"
        if v.get("stage") not in STAGES:
            return f"version {name} has stage {v.get('stage')!r}, not one of {', '.join(STAGES)}"
        if not isinstance(v.get("decisions"), list):
            return f"version {name} has no 'decisions' list"
    for stage in ("stable", "canary"):
        holders = [v["id"] for v in data["versions"] if v["stage"] == stage]
        if len(holders) > 1:
            return f"{len(holders)} versions are {stage} ({', '.join(holders)}); at most one may be"
    return None


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise RegistryError(f"unknown stage '{stage}'; expected one of {', '.join(STAGES)}")


def _find(data: dict[str, Any], version: str) -> dict[str, Any]:
    for v in data["versions"]:
        if v["id"] == version:
            return v
    known = ", ".join(v["id"] for v in data["versions"]) or "none"
    raise RegistryError(f"no model version '{version}' in the registry (known: {known})")


def _move(data: dict[str, Any], version: str, stage: str) -> None:
    """Set a version's stage; stable and canary are held by one version each, so the previous
    holder is archived."""
    target = _find(data, version)
    if stage in ("stable", "canary"):
        for v in data["versions"]:
            if v["stage"] == stage and v["id"] != version:
                v["stage"] = "archived"
    target["stage"] = stage
