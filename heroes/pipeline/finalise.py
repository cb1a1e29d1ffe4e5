"""After the pass: the case-wide work that needs every row. PDQ matches against hash sets (with
rotations and mirrors), visual groups, and copies taking their original's fields; then the ranking.
All of it is idempotent: running it twice changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select, update

from heroes.config import Settings
from heroes.index import hashes_from_hex
from heroes.pipeline.hashsets import category_text, known_match
from heroes.pipeline.matching import (
    PDQ_DIHEDRAL,
    nearest_within_variants,
    quality_hashes,
    visual_groups,
)
from heroes.pipeline.ranking import rank_items
from heroes.pipeline.summary import TriageSummary
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow


class _Columns:
    """Columns filled value by value and turned into numpy arrays a page at a time (a column
    of dtype None holds PDQ hex strings and becomes ``uint8[n, 32]``)."""

    def __init__(self, **dtypes: Any) -> None:
        self.dtypes = dtypes
        self.page: dict[str, list[Any]] = {k: [] for k in dtypes}
        self.parts: dict[str, list[Any]] = {k: [] for k in dtypes}

    def end_page(self) -> None:
        for k, values in self.page.items():
            dtype = self.dtypes[k]
            self.parts[k].append(
                hashes_from_hex(values) if dtype is None else np.asarray(values, dtype)
            )
            values.clear()

    def array(self, k: str) -> Any:
        dtype = self.dtypes[k]
        if self.parts[k]:
            return np.concatenate(self.parts[k])
        return np.zeros((0, 32), np.uint8) if dtype is None else np.zeros(0, dtype)


def _variants(
    dihedral: Any, frames: list[dict[str, Any]], row_of: dict[float | None, int]
) -> Iterator[tuple[str, int, int]]:
    """(hash, hash row it stands for, :data:`PDQ_DIHEDRAL` index) of an item's rotations and
    mirrors: an image's 8 hashes, or a video's 8 per keyframe in the order of its keyframes;
    ``row_of`` is the item's hash rows by frame time (None: the image itself)."""
    if not isinstance(dihedral, list) or not dihedral:
        return
    if isinstance(dihedral[0], str):
        pairs: list[tuple[float | None, Any]] = [(None, dihedral)]
    else:
        pairs = [(kf.get("time"), d) for kf, d in zip(frames, dihedral, strict=False)]
    for key, hashes in pairs:
        k = row_of.get(key)
        if k is not None and isinstance(hashes, list) and len(hashes) == len(PDQ_DIHEDRAL):
            for kind, h in enumerate(hashes[1:], start=1):
                yield h, k, kind


class _CaseHashes:
    """The PDQ hashes finalize works on, read page by page into numpy arrays: each image's hash
    and each video keyframe's (with quality at least ``min_quality``; duplicates left out: they
    take their original's), the rotations and mirrors standing for them, and what the rest of
    finalize needs of every item."""

    def __init__(self, store: CaseStore, min_quality: int) -> None:
        #: one row per hash: the hash, its item, its frame time (NaN: an image's own hash)
        rows = _Columns(mat=None, own=np.int64, times=np.float64)
        #: one row per rotation or mirror: the hash, the hash row it stands for, which one
        flips = _Columns(flips=None, flip_of=np.int64, flip_kind=np.int64)
        #: every item not a copy, with its group before this run (-1: none); items no hash matched
        items = _Columns(ids=np.int64, old_groups=np.int64)
        unmatched = _Columns(ids=np.int64)
        #: items that a hash set names exactly (not known-good, not by PDQ): (id, pdq, match)
        self.case_bad: list[tuple[int, str, dict[str, Any]]] = []
        n_rows = 0

        def add_row(item_id: int, pdq: str, time: float | None) -> int:
            nonlocal n_rows
            rows.page["mat"].append(pdq)
            rows.page["own"].append(item_id)
            rows.page["times"].append(np.nan if time is None else float(time))
            n_rows += 1
            return n_rows - 1

        cols = (
            ItemRow.pdq,
            ItemRow.pdq_quality,
            ItemRow.video,
            ItemRow.known_match,
            ItemRow.status,
            ItemRow.visual_group,
            ItemRow.pdq_dihedral,
        )
        for page in store.pages(ItemRow.id, *cols):
            for item_id, pdq, quality, video, km, status, group, dihedral in page:
                if km is None:
                    unmatched.page["ids"].append(item_id)
                if status == "duplicate":
                    continue
                items.page["ids"].append(item_id)
                items.page["old_groups"].append(-1 if group is None else group)
                good = pdq and (quality or 0) >= min_quality
                if good and km and not km.get("known_good") and km.get("method") != "pdq":
                    self.case_bad.append((item_id, pdq, km))
                row_of = {
                    time: add_row(item_id, h, time)
                    for time, h in quality_hashes(pdq, quality, video, min_quality)
                }
                frames = (video or {}).get("keyframes", [])
                for h, k, kind in _variants(dihedral, frames, row_of):
                    flips.page["flips"].append(h)
                    flips.page["flip_of"].append(k)
                    flips.page["flip_kind"].append(kind)
            for columns in (rows, flips, items, unmatched):
                columns.end_page()

        self.mat: NDArray[np.uint8] = rows.array("mat")
        self.own: NDArray[np.int64] = rows.array("own")
        self.times: NDArray[np.float64] = rows.array("times")
        self.flips: NDArray[np.uint8] = flips.array("flips")
        self.flip_of: NDArray[np.int64] = flips.array("flip_of")
        self.flip_kind: NDArray[np.int64] = flips.array("flip_kind")
        self.ids: NDArray[np.int64] = items.array("ids")
        self.old_groups: NDArray[np.int64] = items.array("old_groups")
        self.unmatched: NDArray[np.int64] = unmatched.array("ids")  # ascending

    def is_unmatched(self, item_id: int) -> bool:
        k = int(np.searchsorted(self.unmatched, item_id))
        return k < len(self.unmatched) and int(self.unmatched[k]) == item_id


def finalize(store: CaseStore, settings: Settings, summary: TriageSummary | None = None) -> None:
    """PDQ matches against hash sets, duplicate fields, visual groups; all case-wide, idempotent.
    The case is read in pages; the hashes are held as numpy arrays, not rows."""
    max_d, min_q = settings.pdq.match_distance, settings.pdq.min_quality
    case = _CaseHashes(store, min_q)
    mat, own, times = case.mat, case.own, case.times
    flips, flip_of, flip_kind = case.flips, case.flip_of, case.flip_kind

    # Known-bad PDQ matches, for items that no hash matched. The references are the PDQ hashes of
    # the hash sets and of this case's own files that a hash set names exactly (its MD5 list may
    # carry no PDQ): a recompressed, resized or filmed copy of a known file is found either way.
    ref_rows = store.pdq_entries()
    refs_hs = hashes_from_hex([e.pdq for e in ref_rows])
    sets = store.hashsets()
    case_bad = case.case_bad
    refs = np.concatenate([refs_hs, hashes_from_hex([p for _, p, _ in case_bad])])
    ref_match: list[dict[str, Any]] = [
        known_match(sets[e.hashset_id], e.category, e.label, "pdq", 0) for e in ref_rows
    ] + [{**km, "via_item": i} for i, _p, km in case_bad]
    updates: dict[int, dict[str, Any]] = {}
    if len(refs) and len(mat):
        best, dist, found_by = nearest_within_variants(mat, refs, max_d, flips, flip_of)
        for k in np.nonzero(best >= 0)[0].tolist():
            item_id = int(own[k])
            if not case.is_unmatched(item_id):
                continue
            prev = updates.get(item_id, {}).get("known_match")
            if prev is not None and prev["distance"] <= int(dist[k]):
                continue
            km = {**ref_match[int(best[k])], "method": "pdq", "distance": int(dist[k])}
            if not np.isnan(times[k]):
                km["frame_time"] = float(times[k])
            if found_by[k] >= 0:
                km["transform"] = PDQ_DIHEDRAL[int(flip_kind[found_by[k]])]
            updates.setdefault(item_id, {"id": item_id})["known_match"] = km
        if summary is not None:
            sets_by_name = {m.name: m for m in sets.values()}
            for u in updates.values():
                km = u["known_match"]
                summary.matches[
                    (
                        km["hashset"],
                        category_text(sets_by_name[km["hashset"]], km["category"]),
                        "pdq",
                    )
                ] += 1

    # Groups join images only: a video holds many scenes, and joining through its frames would
    # chain unrelated photos into one group. Video frames are matched against hash sets above.
    still = np.isnan(times)
    still_flips = still[flip_of] if len(flip_of) else np.zeros(0, dtype=bool)
    groups = (
        visual_groups(mat[still], own[still], max_d, flips[still_flips], own[flip_of[still_flips]])
        if len(mat)
        else {}
    )
    for item_id, old in zip(case.ids.tolist(), case.old_groups.tolist(), strict=True):
        group = groups.get(item_id)
        if group != (None if old < 0 else old):
            updates.setdefault(item_id, {"id": item_id})["visual_group"] = group
    store.update_items(list(updates.values()))

    _copy_to_duplicates(store)
    rank_items(store, settings)


def _copy_to_duplicates(store: CaseStore) -> None:
    """Duplicates carry their original's decoded and inferred fields (a page of copies at a
    time)."""
    for dups in store.pages(ItemRow.id, ItemRow.duplicate_of, where=ItemRow.status == "duplicate"):
        with store.session() as s, s.begin():
            orig_ids = sorted({o for _, o in dups if o is not None})
            originals = {}
            for i in range(0, len(orig_ids), 500):
                chunk = orig_ids[i : i + 500]
                for r in s.execute(select(ItemRow).where(ItemRow.id.in_(chunk))).scalars():
                    originals[r.id] = r
            rows = []
            for dup_id, orig in dups:
                o = originals.get(orig)
                if o is None:
                    continue
                rows.append(
                    {
                        "id": dup_id,
                        "pdq": o.pdq,
                        "pdq_quality": o.pdq_quality,
                        "exif": o.exif,
                        "video": o.video,
                        "width": o.width,
                        "height": o.height,
                        "visual_group": o.visual_group,
                        "media_type": o.media_type,
                        "mime": o.mime,
                        "known_match": o.known_match,
                        "faces": o.faces,
                        "nudity": o.nudity,
                    }
                )
            if rows:
                s.execute(update(ItemRow), rows)
