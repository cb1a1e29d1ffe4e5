"""Reviewer wellbeing: clear pictures seen and minutes of review per user and day, and the cap.

Review time is the sum of gaps between a user's requests that are shorter than ``active_gap_s``:
a reviewer who leaves for lunch is not counted as looking at material for that hour.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heroes.serving.db import ExposureRow, ServiceDB, UserRow, today, utcnow


class RevealCapError(Exception):
    """The user's daily reveal cap is reached (HTTP 429)."""


def _row(s: Session, user_id: int, day: str) -> ExposureRow:
    """The user's row of the day, locked for this transaction (several workers count at once:
    the first creates it, the others wait for it and add to it)."""
    query = (
        select(ExposureRow)
        .where(ExposureRow.user_id == user_id, ExposureRow.day == day)
        .with_for_update()
    )
    row = s.execute(query).scalar_one_or_none()
    if row is None:
        try:
            with s.begin_nested():
                s.add(ExposureRow(user_id=user_id, day=day, reveals=0, seconds=0.0))
        except IntegrityError:  # another worker made it first
            pass
        row = s.execute(query).scalar_one()
    return row


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=utcnow().tzinfo)


def touch(db: ServiceDB, user_id: int, active_gap_s: float) -> None:
    """Count the time since the user's previous request when it is short enough to be review."""
    now = utcnow()
    with db.session() as s, s.begin():
        row = _row(s, user_id, today().isoformat())
        if row.last_seen is not None:
            gap = (now - _aware(row.last_seen)).total_seconds()
            if 0 < gap <= active_gap_s:
                row.seconds = float(row.seconds or 0.0) + gap
        row.last_seen = now


def count_reveal(db: ServiceDB, user_id: int, cap: int | None) -> int:
    """Count one clear picture; :class:`RevealCapError` (and nothing counted) past the cap."""
    with db.session() as s, s.begin():
        row = _row(s, user_id, today().isoformat())
        if cap is not None and row.reveals >= cap:
            raise RevealCapError(f"daily reveal cap of {cap} reached; it resets at 00:00 UTC")
        row.reveals += 1
        return row.reveals


def exposure_today(db: ServiceDB, user_id: int) -> dict[str, Any]:
    with db.reader() as s:
        row = s.execute(
            select(ExposureRow).where(
                ExposureRow.user_id == user_id, ExposureRow.day == today().isoformat()
            )
        ).scalar_one_or_none()
    reveals, seconds = (row.reveals, row.seconds) if row else (0, 0.0)
    return {"reveals_today": int(reveals), "minutes_today": round(float(seconds) / 60, 2)}


def exposure_all(db: ServiceDB) -> list[dict[str, Any]]:
    with db.reader() as s:
        users = s.execute(select(UserRow).order_by(UserRow.name)).scalars().all()
        rows = {
            r.user_id: r
            for r in s.execute(
                select(ExposureRow).where(ExposureRow.day == today().isoformat())
            ).scalars()
        }
    out = []
    for u in users:
        r = rows.get(u.id)
        out.append(
            {
                "user": u.name,
                "role": u.role,
                "reveals_today": int(r.reveals) if r else 0,
                "minutes_today": round(float(r.seconds) / 60, 2) if r else 0.0,
                "daily_reveal_cap": u.daily_reveal_cap,
            }
        )
    return out
