"""Human labels of items: a VICS-US category and the flags an examiner sets.

Categorising is a human act: models never set a category, and a known-hash match only
pre-categorises (VICS ``IsPrecategorized``). Labels are an append-only history in the case store's
``labels`` table; the current label of an item is its latest row. Labelling a file labels its exact
copies (same SHA-256) with it, and a copy found by a later run takes the label of its content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from heroes.store import CaseStore, LabelRow

SCHEME = "VICS-US"

#: VICS-US categories (Project VIC), the scheme every label is stored in.
CATEGORIES: dict[int, str] = {
    0: "Non-pertinent",
    1: "Child abuse material",
    2: "Child exploitive / age difficult",
    3: "CGI/animation",
    4: "Comparison",
}


def _optional_text(value: object, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be text or None, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Label:
    """What an examiner says about a file. ``category`` is a VICS-US code 0-4, or None for
    "not categorised" (flags, a series or a note without a category)."""

    category: int | None
    victim_identified: bool = False
    offender_identified: bool = False
    series: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        c = self.category
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c not in CATEGORIES):
            raise ValueError(f"category must be a VICS-US code 0-4 or None, not {c!r}")
        for name in ("victim_identified", "offender_identified"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")
        _optional_text(self.series, "series")
        _optional_text(self.note, "note")

    @property
    def category_name(self) -> str | None:
        return None if self.category is None else CATEGORIES[self.category]


def _iso(at: datetime) -> str:
    """ISO-8601 in UTC; SQLite hands back naive datetimes that were written in UTC."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def label_object(row: LabelRow) -> dict[str, Any]:
    """A stored label as the record, the queue, the API and the exports show it."""
    return {
        "category": row.category,
        "category_name": None if row.category is None else CATEGORIES.get(row.category),
        "scheme": row.scheme,
        "victim_identified": bool(row.victim_identified),
        "offender_identified": bool(row.offender_identified),
        "series": row.series,
        "note": row.note,
        "by": row.by,
        "at": _iso(row.at),
    }


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return text.strip() or None


def apply_label(store: CaseStore, item_ids: Sequence[int], label: Label, by: str) -> list[int]:
    """Label these items and their exact copies, recording who and when; returns every item id
    labelled, sorted. Unknown ids raise KeyError and nothing is written."""
    if not isinstance(by, str) or not by.strip():
        raise ValueError("a label needs the name of who set it")
    wanted = {int(i) for i in item_ids}
    hashes = store.item_sha256(wanted)
    missing = sorted(wanted - hashes.keys())
    if missing:
        raise KeyError(f"no item {', '.join(map(str, missing))} in this case")
    targets: dict[int, str | None] = dict(hashes)
    shas = {sha for sha in hashes.values() if sha}
    targets.update(store.items_with_sha256(shas))
    at = datetime.now(UTC)
    store.add_labels(
        [
            {
                "item_id": item_id,
                "sha256": sha,
                "scheme": SCHEME,
                "category": label.category,
                "victim_identified": label.victim_identified,
                "offender_identified": label.offender_identified,
                "series": _clean(label.series),
                "note": _clean(label.note),
                "by": by.strip(),
                "at": at,
            }
            for item_id, sha in sorted(targets.items())
        ]
    )
    return sorted(targets)


def current_labels(
    store: CaseStore, item_ids: Iterable[int] | None = None
) -> dict[int, dict[str, Any]]:
    """The current label of each item that has one: its latest row, or, for a copy that came
    after the labelling, the latest row of its content (same SHA-256)."""
    if item_ids is None:
        rows = store.label_rows()
        shas = {r.sha256 for r in rows if r.sha256}
        hashes: dict[int, str | None] = dict(store.items_with_sha256(shas))
        hashes.update({r.item_id: r.sha256 for r in rows})
    else:
        hashes = store.item_sha256(item_ids)
        rows = store.label_rows(hashes, {sha for sha in hashes.values() if sha})
    by_item: dict[int, LabelRow] = {}
    by_sha: dict[str, LabelRow] = {}
    for r in rows:  # oldest first: later rows win
        by_item[r.item_id] = r
        if r.sha256:
            by_sha[r.sha256] = r
    out: dict[int, dict[str, Any]] = {}
    for item_id in sorted(hashes):
        sha = hashes[item_id]
        mine, same = by_item.get(item_id), by_sha.get(sha) if sha else None
        latest = max((r for r in (mine, same) if r is not None), key=lambda r: r.id, default=None)
        if latest is not None:
            out[item_id] = label_object(latest)
    return out
