"""SQLAlchemy tables. One ``items`` row per discovered file or archive member: the stable record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evidence: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="running")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("evidence", "path", name="uq_items_evidence_path"),
        Index("ix_items_sha256", "sha256"),
        Index("ix_items_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evidence: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    container: Mapped[str | None] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime: Mapped[float | None] = mapped_column(Float)
    md5: Mapped[str | None] = mapped_column(String(32), index=True)
    sha1: Mapped[str | None] = mapped_column(String(40))
    sha256: Mapped[str | None] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(16), default="other")
    mime: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(Integer)
    pdq: Mapped[str | None] = mapped_column(String(64))
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    visual_group: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    exif: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    video: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    known_match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    archive_kind: Mapped[str | None] = mapped_column(String(8))
    members: Mapped[int | None] = mapped_column(Integer)
    archive_complete: Mapped[bool] = mapped_column(Boolean, default=False)
    faces: Mapped[list[Any]] = mapped_column(JSON, default=list)
    nudity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    priority: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)
    why: Mapped[list[Any]] = mapped_column(JSON, default=list)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class HashSetRow(Base):
    __tablename__ = "hashsets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    scheme: Mapped[str] = mapped_column(String(64))
    categories: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    known_good: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class HashEntryRow(Base):
    __tablename__ = "hash_entries"
    __table_args__ = (
        Index("ix_hash_entries_md5", "md5"),
        Index("ix_hash_entries_sha1", "sha1"),
        Index("ix_hash_entries_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hashset_id: Mapped[int] = mapped_column(
        ForeignKey("hashsets.id", ondelete="CASCADE"), index=True
    )
    md5: Mapped[str | None] = mapped_column(String(32))
    sha1: Mapped[str | None] = mapped_column(String(40))
    sha256: Mapped[str | None] = mapped_column(String(64))
    pdq: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class VectorRow(Base):
    """An embedding of an item (a face or a whole scene), for the search indexes to build from."""

    __tablename__ = "vectors"
    __table_args__ = (Index("ix_vectors_item_kind", "item_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # face | scene
    model: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(64))  # face_id for faces
    frame_time: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[Any] | None] = mapped_column(JSON)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian


class LabelRow(Base):
    """A human's label of an item, append-only: the current label of an item is its latest row."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_item", "item_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    scheme: Mapped[str] = mapped_column(String(32), default="VICS-US")
    category: Mapped[int | None] = mapped_column(Integer)
    victim_identified: Mapped[bool] = mapped_column(Boolean, default=False)
    offender_identified: Mapped[bool] = mapped_column(Boolean, default=False)
    series: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class CaseInfoRow(Base):
    """Facts about the case itself, by key (e.g. ``case_id``, the GUID its exports carry)."""

    __tablename__ = "case_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
