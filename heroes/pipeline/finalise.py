"""After the pass: the case-wide work that needs every row. PDQ matches against hash sets (with
rotations and mirrors), visual groups, and copies taking their original's fields; then the ranking.
All of it is idempotent: running it twice changes nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select, update

from heroes.config import Settings
from heroes.index import hashes_from_hex
from heroes.pipeline.hashsets import category_text, known_match
from heroes.pipeline.matching import PDQ_DIHEDRAL, nearest_within_variants, visual_groups
from heroes.pipeline.ranking import item_pages, rank_items
from heroes.pipeline.summary import TriageSummary
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow


class _CaseHashes:
    """The PDQ hashes finalize works on, read page by page into numpy arrays: each image's hash
    and each video keyframe's (with quality at least ``min_quality``; duplicates left out: they
    take their original's), the rotations and mirrors standing for them, and what the rest of
    finalize needs of every item."""

    def __init__(self, store: CaseStore, min_quality: int) -> None:
        hashes: list[NDArray[np.uint8]] = []
        owners: list[NDArray[np.int64]] = []
        times: list[NDArray[np.float64]] = []
        flips: list[NDArray[np.uint8]] = []
        flip_of: list[NDArray[np.int64]] = []
        flip_kind: list[NDArray[np.int64]] = []
        unmatched: list[NDArray[np.int64]] = []
        ids: list[NDArray[np.int64]] = []
        old_groups: list[NDArray[np.int64]] = []
        #: items that a hash set names exactly (not known-good, not by PDQ): (id, pdq, match)
        self.case_bad: list[tuple[int, str, dict[str, Any]]] = []
        rows_so_far = 0
        cols = (
            ItemRow.pdq,
            ItemRow.pdq_quality,
            ItemRow.video,
            ItemRow.known_match,
            ItemRow.status,
            ItemRow.visual_group,
            ItemRow.pdq_dihedral,
        )
        for page in item_pages(store, *cols):
            hexes: list[str] = []
            own: list[int] = []
            at: list[float] = []
            variants: list[str] = []
            page_flip_of: list[int] = []
            page_flip_kind: list[int] = []
            page_unmatched: list[int] = []
            page_ids: list[int] = []
            page_groups: list[int] = []
            for item_id, pdq, quality, video, km, status, group, dihedral in page:
                if km is None:
                    page_unmatched.append(item_id)
                if status == "duplicate":
                    continue
                page_ids.append(item_id)
                page_groups.append(-1 if group is None else group)
                if km and not km.get("known_good") and km.get("method") != "pdq" and pdq:
                    if (quality or 0) >= min_quality:
                        self.case_bad.append((item_id, pdq, km))
                # this item's hash rows by frame time (None: the image itself)
                row_of: dict[float | None, int] = {}
                if pdq and (quality or 0) >= min_quality:
                    row_of[None] = rows_so_far + len(hexes)
                    hexes.append(pdq)
                    own.append(item_id)
                    at.append(np.nan)
                frames = (video or {}).get("keyframes", [])
                for kf in frames:
                    if kf.get("pdq") and (kf.get("quality") or 0) >= min_quality:
                        row_of[kf.get("time")] = rows_so_far + len(hexes)
                        hexes.append(kf["pdq"])
                        own.append(item_id)
                        at.append(np.nan if kf.get("time") is None else float(kf["time"]))
                if not isinstance(dihedral, list) or not dihedral:
                    continue
                if isinstance(dihedral[0], str):  # an image: its 8 hashes
                    pairs: list[tuple[float | None, Any]] = [(None, dihedral)]
                else:  # a video: 8 hashes per keyframe, in the order of video.keyframes
                    pairs = [(kf.get("time"), d) for kf, d in zip(frames, dihedral, strict=False)]
                for key, hs in pairs:
                    k = row_of.get(key)
                    if k is None or not isinstance(hs, list) or len(hs) != len(PDQ_DIHEDRAL):
                        continue
                    for kind, h in enumerate(hs[1:], start=1):
                        variants.append(h)
                        page_flip_of.append(k)
                        page_flip_kind.append(kind)
            unmatched.append(np.asarray(page_unmatched, np.int64))
            ids.append(np.asarray(page_ids, np.int64))
            old_groups.append(np.asarray(page_groups, np.int64))
            hashes.append(hashes_from_hex(hexes))
            owners.append(np.asarray(own, np.int64))
            times.append(np.asarray(at, np.float64))
            flips.append(hashes_from_hex(variants))
            flip_of.append(np.asarray(page_flip_of, np.int64))
            flip_kind.append(np.asarray(page_flip_kind, np.int64))
            rows_so_far += len(hexes)

        def cat(parts: list[Any], dtype: Any, shape: tuple[int, ...] = (0,)) -> Any:
            return np.concatenate(parts) if parts else np.zeros(shape, dtype)

        self.mat: NDArray[np.uint8] = cat(hashes, np.uint8, (0, 32))
        self.own: NDArray[np.int64] = cat(owners, np.int64)
        #: frame time of each hash row; NaN for an image's own hash
        self.times: NDArray[np.float64] = cat(times, np.float64)
        self.flips: NDArray[np.uint8] = cat(flips, np.uint8, (0, 32))
        self.flip_of: NDArray[np.int64] = cat(flip_of, np.int64)
        self.flip_kind: NDArray[np.int64] = cat(flip_kind, np.int64)
        self.unmatched: NDArray[np.int64] = cat(unmatched, np.int64)  # ascending
        #: every item that is not a copy, and its visual group before this run (-1: none)
        self.ids: NDArray[np.int64] = cat(ids, np.int64)
        self.old_groups: NDArray[np.int64] = cat(old_groups, np.int64)

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
    for dups in item_pages(store, ItemRow.duplicate_of, where=ItemRow.status == "duplicate"):
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
