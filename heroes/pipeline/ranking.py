"""The review queue's order: priority, reasons and rank of every item of a case."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from heroes.config import Settings
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow


def rank_items(store: CaseStore, settings: Settings) -> None:
    """Priority, why and rank of every item of the case (see :mod:`heroes.pipeline.scoring`)."""
    from heroes.pipeline.scoring import score_item

    with store.session() as s:
        rows = s.execute(
            select(
                ItemRow.id,
                ItemRow.status,
                ItemRow.known_match,
                ItemRow.faces,
                ItemRow.nudity,
                ItemRow.priority,
                ItemRow.rank,
                ItemRow.why,
                ItemRow.error,
                ItemRow.duplicate_of,
            )
        ).all()
    scored: dict[int, tuple[float, list[Any]]] = {}
    for item_id, status, km, faces, nudity, _p, _r, _w, error, _d in rows:
        scored[item_id] = score_item(
            status, km, faces, nudity, settings.scoring, settings.pdq.match_distance, error
        )

    # known-good last, then by priority; a copy sorts right after its original
    def key(r: Any) -> tuple[int, float, int, int]:
        item_id, status, *_rest, dup = r
        return (status == "known_good", -scored[item_id][0], dup or item_id, item_id)

    updates = []
    for rank, r in enumerate(sorted(rows, key=key), start=1):
        item_id, _st, _km, _f, _n, old_p, old_rank, old_why, _err, _dup = r
        p, why = scored[item_id]
        p = round(p, 6)
        if (p, rank, why) != (old_p, old_rank, old_why):
            updates.append({"id": item_id, "priority": p, "why": why, "rank": rank})
    store.update_items(updates)
