"""The interaction store: every request the canary router serves, and the feedback users give later.

SQLite file `<workspace>/interactions.db` by default (WAL journal, a busy timeout, so threads and
processes can write at once); any SQLAlchemy URL in a cluster (Postgres, MySQL).
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DatabaseError

from rlhfops.workspace import INTERACTIONS

metadata = MetaData()

interactions = Table(
    "interactions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("time", Float, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("response", Text, nullable=False),
    Column("version", String(128), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("user", String(128), nullable=True),
    Column("feedback", Float, nullable=True),
    Index("ix_interactions_version_time", "version", "time"),
)

COLUMNS = ("id", "time", "prompt", "response", "version", "latency_ms", "status", "user", "feedback")


class FeedbackExists(ValueError):
    """A second feedback for one interaction (the first one stands)."""


class InteractionStore:
    """Log interactions and feedback; read them back by time and version."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        connect_args = {"timeout": 30.0, "check_same_thread": False} if sqlite else {}
        self.engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not sqlite)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
        except DatabaseError as e:  # a damaged file, not a database, or a schema we did not write
            where = self.engine.url.render_as_string(hide_password=True)
            reason = str(e.orig).splitlines()[0] if e.orig is not None else type(e).__name__
            raise ValueError(f"the interaction store '{where}' cannot be opened: {reason}") from None

    @classmethod
    def for_workspace(cls, ws_root: str | Path) -> InteractionStore:
        root = Path(ws_root)
        root.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{(root / INTERACTIONS).resolve()}")

    @classmethod
    def for_config(cls, store_url: str | None, ws_root: str | Path) -> InteractionStore:
        """`serving.store_url` when set (a database in a cluster), else the workspace's SQLite file."""
        return cls(store_url) if store_url else cls.for_workspace(ws_root)

    def log(
        self,
        prompt: str,
        response: str,
        version: str,
        latency_ms: float,
        status: str,
        user: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Record one served request; returns its id (`request_id` when given, else a new uuid)."""
        rid = request_id or uuid.uuid4().hex
        row = dict(
            id=rid,
            time=time.time(),
            prompt=prompt,
            response=response,
            version=version,
            latency_ms=float(latency_ms),
            status=status,
            user=user,
            feedback=None,
        )
        with self.engine.begin() as conn:
            conn.execute(insert(interactions).values(**row))
        return rid

    def add_feedback(self, id: str, score: float) -> None:
        """Attach a user's score to a logged interaction: one per interaction (FeedbackExists for a
        second), finite (ValueError otherwise), KeyError for an unknown id."""
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"feedback for '{id}' is {score}; it must be a finite number")
        pending = (interactions.c.id == id) & interactions.c.feedback.is_(None)
        with self.engine.begin() as conn:
            result = conn.execute(update(interactions).where(pending).values(feedback=score))
            if result.rowcount == 1:
                return
            exists = conn.execute(select(interactions.c.id).where(interactions.c.id == id)).first()
        if exists:
            raise FeedbackExists(f"interaction '{id}' already has feedback")
        raise KeyError(f"no interaction with id '{id}' in the interaction store")

    def interactions(self, since: float | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """Interactions in time order, optionally only from `since` (unix time) and of one version."""
        query = select(*[interactions.c[c] for c in COLUMNS]).order_by(interactions.c.time, interactions.c.id)
        if since is not None:
            query = query.where(interactions.c.time >= since)
        if version is not None:
            query = query.where(interactions.c.version == version)
        try:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(query)]
        except DatabaseError as e:  # a table of another shape, a file damaged since it was opened
            where = self.engine.url.render_as_string(hide_password=True)
            reason = str(e.orig).splitlines()[0] if e.orig is not None else type(e).__name__
            raise ValueError(f"the interaction store '{where}' cannot be read: {reason}") from None

    def count(self, version: str | None = None) -> int:
        query = select(func.count()).select_from(interactions)
        if version is not None:
            query = query.where(interactions.c.version == version)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
