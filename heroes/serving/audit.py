"""The audit log: an append-only table whose rows chain SHA-256 hashes.

Each row's hash covers its own content and the previous row's hash; ids are consecutive and a
one-row head names the last id and hash. An edited row no longer matches its hash, an inserted or
deleted row breaks the ids or the link to its neighbour, and a deleted tail no longer matches the
head. Appends serialise on the head row (``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock
taken at ``BEGIN IMMEDIATE`` on SQLite), so several workers extend one chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from heroes.serving.db import AuditHeadRow, AuditRow, ServiceDB, utcnow

GENESIS = "0" * 64


def row_hash(
    *,
    id: int,
    at: str,
    user: str | None,
    key_id: str | None,
    action: str,
    case: str | None,
    target: str | None,
    detail: str,
    source: str | None,
    prev_hash: str,
) -> str:
    content = json.dumps(
        [id, at, user, key_id, action, case, target, detail, source, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def ensure_head(db: ServiceDB) -> None:
    with db.session() as s:
        if s.get(AuditHeadRow, 1) is not None:
            return
    try:
        with db.session() as s, s.begin():
            if s.get(AuditHeadRow, 1) is None:
                s.add(AuditHeadRow(id=1, last_id=0, hash=GENESIS))
    except IntegrityError:  # another worker made it first
        pass


def append(
    db: ServiceDB,
    action: str,
    *,
    user: str | None = None,
    key_id: str | None = None,
    case: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    source: str | None = None,
) -> int:
    """Append one row (who, what, on which case and target, from where); returns its id."""
    ensure_head(db)
    text = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False, default=str)
    with db.session() as s, s.begin():
        head = s.execute(
            select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()
        ).scalar_one()
        new_id = head.last_id + 1
        fields: dict[str, Any] = {
            "id": new_id,
            "at": utcnow().isoformat(timespec="microseconds"),
            "user": user,
            "key_id": key_id,
            "action": action,
            "case": case,
            "target": target,
            "detail": text,
            "source": source,
            "prev_hash": head.hash,
        }
        digest = row_hash(**fields)
        s.add(AuditRow(**fields, hash=digest))
        head.last_id, head.hash = new_id, digest
        return new_id


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    head: str
    bad_id: int | None = None
    reason: str | None = None
    row: dict[str, Any] | None = None


def _as_dict(r: AuditRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": r.at,
        "user": r.user,
        "key_id": r.key_id,
        "action": r.action,
        "case": r.case,
        "target": r.target,
        "detail": r.detail,
        "source": r.source,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


def verify(db: ServiceDB) -> Verdict:
    """Walk the chain from the start; the first row that does not hold, and why."""
    prev, expected, n = GENESIS, 1, 0
    with db.reader() as s:
        rows = s.execute(select(AuditRow).order_by(AuditRow.id).execution_options(yield_per=5000))
        for r in rows.scalars():
            d = _as_dict(r)
            if r.id != expected:
                why = "row(s) missing before this one" if r.id > expected else "inserted row"
                return Verdict(False, n, prev, r.id, why, d)
            if r.prev_hash != prev:
                return Verdict(False, n, prev, r.id, "previous hash does not match", d)
            fields = {k: v for k, v in d.items() if k != "hash"}
            if row_hash(**fields) != r.hash:
                return Verdict(False, n, prev, r.id, "row content does not match its hash", d)
            prev, expected, n = r.hash, expected + 1, n + 1
        head = s.get(AuditHeadRow, 1)
    if head is None:
        if n:
            return Verdict(False, n, prev, None, "the chain head is missing")
        return Verdict(True, 0, prev)
    if head.last_id != n or head.hash != prev:
        return Verdict(
            False,
            n,
            prev,
            head.last_id if head.last_id > n else None,
            f"the chain ends at row {n} but its head names row {head.last_id}",
        )
    return Verdict(True, n, prev)
