"""The service database: users, API keys, case grants, exposure counts, jobs and the audit chain.

One database for the whole service (SQLite under the cases folder by default, PostgreSQL by URL),
separate from the case stores: revoking a key or reading the audit log never touches evidence
records.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ROLES = ("admin", "lab", "investigator")


def utcnow() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    return utcnow().date()


class ServiceBase(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class UserRow(ServiceBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    blur: Mapped[bool] = mapped_column(default=True)
    greyscale: Mapped[bool] = mapped_column(default=False)
    daily_reveal_cap: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeyRow(ServiceBase):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GrantRow(ServiceBase):
    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("key_id", "case", name="uq_grants_key_case"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    case: Mapped[str] = mapped_column(String(128))


class ExposureRow(ServiceBase):
    """Per user and day: clear thumbnails seen and minutes of continuous review."""

    __tablename__ = "exposure"
    __table_args__ = (UniqueConstraint("user_id", "day", name="uq_exposure_user_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    reveals: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobRow(ServiceBase):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case: Mapped[str] = mapped_column(String(128), index=True)
    evidence: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class AuditRow(ServiceBase):
    """One audited action. Rows are only ever appended; ``hash`` covers the row's content and the
    previous row's hash, so an edited, inserted or deleted row breaks the chain."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    user: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    case: Mapped[str | None] = mapped_column(String(128))
    target: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    source: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(ServiceBase):
    """The last row of the chain (one row): the lock appends serialise on, and the anchor that
    shows a deleted tail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


def _sqlite_setup(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event start the transaction (below), so it can take the write lock
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # every transaction takes the write lock up front: workers appending to the audit chain
    # queue instead of failing on a stale snapshot
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class ServiceDB:
    """Engine and sessions of the service database; tables are created on first open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_setup)
            event.listen(self.engine, "begin", _sqlite_begin)
        try:
            ServiceBase.metadata.create_all(self.engine)
        except OperationalError:
            raise
        except DBAPIError:  # another worker created the tables at the same moment
            time.sleep(0.5)
            ServiceBase.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = self._sessions
        if self.engine.dialect.name == "sqlite":
            # reads need no write lock: a second engine begins them deferred
            self.read_engine: Engine = create_engine(url, future=True)
            event.listen(self.read_engine, "connect", _sqlite_setup)
            self._readers = sessionmaker(self.read_engine, expire_on_commit=False)

    def session(self) -> Session:
        """A session for writes (on SQLite its transactions take the write lock at once)."""
        return self._sessions()

    def reader(self) -> Session:
        """A session that only reads."""
        return self._readers()

    def close(self) -> None:
        self.engine.dispose()
        if self._readers is not self._sessions:
            self.read_engine.dispose()
