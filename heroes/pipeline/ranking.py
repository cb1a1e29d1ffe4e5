"""The review queue's order: priority, reasons and rank of every item of a case.

Streamed: the case's rows are read in pages of ids (:meth:`CaseStore.pages`) twice, once to
score and sort and once to write what changed, so memory holds four numbers per item, not every
row (a case of 10 million items sorts in about 320 MB)."""

from __future__ import annotations

from typing import Any

import numpy as np

from heroes.config import Settings
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow

_SCORED = (
    ItemRow.status,
    ItemRow.known_match,
    ItemRow.faces,
    ItemRow.nudity,
    ItemRow.error,
    ItemRow.duplicate_of,
)


def rank_items(store: CaseStore, settings: Settings) -> None:
    """Priority, why and rank of every item of the case (see :mod:`heroes.pipeline.scoring`)."""
    from heroes.pipeline.scoring import score_item

    def score(r: Any) -> tuple[float, list[Any]]:
        _id, status, km, faces, nudity, error, _dup = r[:7]
        return score_item(
            status, km, faces, nudity, settings.scoring, settings.pdq.match_distance, error
        )

    ids: list[np.ndarray] = []
    last: list[np.ndarray] = []  # known-good files go last
    prio: list[np.ndarray] = []
    after: list[np.ndarray] = []  # a copy sorts right after its original
    for rows in store.pages(ItemRow.id, *_SCORED):
        n = len(rows)
        ids.append(np.fromiter((r[0] for r in rows), np.int64, n))
        last.append(np.fromiter((r[1] == "known_good" for r in rows), np.bool_, n))
        prio.append(np.fromiter((score(r)[0] for r in rows), np.float64, n))
        after.append(np.fromiter((r[6] or r[0] for r in rows), np.int64, n))
    if not ids:
        return
    item_ids = np.concatenate(ids)
    # known-good last, then by priority, a copy right after its original, then by id
    order = np.lexsort(
        (item_ids, np.concatenate(after), -np.concatenate(prio), np.concatenate(last))
    )
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    del ids, last, prio, after, order

    for rows in store.pages(ItemRow.id, *_SCORED, ItemRow.priority, ItemRow.rank, ItemRow.why):
        at = np.searchsorted(item_ids, [r[0] for r in rows])
        updates = []
        for r, k in zip(rows, at.tolist(), strict=True):
            if k >= len(item_ids) or item_ids[k] != r[0]:
                continue  # an item added since the first read (none: the case is locked)
            p, why = score(r)
            p = round(p, 6)
            new_rank = int(rank[k])
            if (p, new_rank, why) != (r[7], r[8], r[9]):
                updates.append({"id": r[0], "priority": p, "why": why, "rank": new_rank})
        store.update_items(updates)
