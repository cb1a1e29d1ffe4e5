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
from heroes.pipeline.ranking import rank_items
from heroes.pipeline.summary import TriageSummary
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow


def finalize(store: CaseStore, settings: Settings, summary: TriageSummary | None = None) -> None:
    """PDQ matches against hash sets, duplicate fields, visual groups; all case-wide, idempotent."""
    max_d, min_q = settings.pdq.match_distance, settings.pdq.min_quality
    with store.session() as s:
        items = s.execute(
            select(
                ItemRow.id,
                ItemRow.pdq,
                ItemRow.pdq_quality,
                ItemRow.video,
                ItemRow.known_match,
                ItemRow.status,
                ItemRow.visual_group,
            )
        ).all()
    hashes: list[str] = []
    owners: list[int] = []
    times: list[float | None] = []
    for item_id, pdq, quality, video, _km, status, _vg in items:
        if status == "duplicate":
            continue
        if pdq and (quality or 0) >= min_q:
            hashes.append(pdq)
            owners.append(item_id)
            times.append(None)
        for kf in (video or {}).get("keyframes", []):
            if kf.get("pdq") and (kf.get("quality") or 0) >= min_q:
                hashes.append(kf["pdq"])
                owners.append(item_id)
                times.append(kf.get("time"))
    mat = hashes_from_hex(hashes)
    own = np.asarray(owners, dtype=np.int64)
    # rotations and mirrors of each image and keyframe stand for it in the matching, and those
    # of images in the grouping
    flips, flip_of, flip_kind = _dihedral_variants(
        store, {(owners[k], t): k for k, t in enumerate(times)}
    )

    # Known-bad PDQ matches, for items that no hash matched. The references are the PDQ hashes of
    # the hash sets and of this case's own files that a hash set names exactly (its MD5 list may
    # carry no PDQ): a recompressed, resized or filmed copy of a known file is found either way.
    ref_rows = store.pdq_entries()
    refs_hs = hashes_from_hex([e.pdq for e in ref_rows])
    sets = store.hashsets()
    case_bad = [
        (i, p, km)
        for i, p, q, _v, km, st, _vg in items
        if km
        and not km.get("known_good")
        and km.get("method") != "pdq"
        and p
        and (q or 0) >= min_q
        and st != "duplicate"
    ]
    refs = np.concatenate([refs_hs, hashes_from_hex([p for _, p, _ in case_bad])])
    ref_match: list[dict[str, Any]] = [
        known_match(sets[e.hashset_id], e.category, e.label, "pdq", 0) for e in ref_rows
    ] + [{**km, "via_item": i} for i, _p, km in case_bad]
    unmatched = {i for i, _p, _q, _v, km, _st, _vg in items if km is None}
    updates: dict[int, dict[str, Any]] = {}
    if len(refs) and len(mat):
        best, dist, found_by = nearest_within_variants(mat, refs, max_d, flips, flip_of)
        for k in np.nonzero(best >= 0)[0].tolist():
            item_id = owners[k]
            if item_id not in unmatched:
                continue
            prev = updates.get(item_id, {}).get("known_match")
            if prev is not None and prev["distance"] <= int(dist[k]):
                continue
            km = {**ref_match[int(best[k])], "method": "pdq", "distance": int(dist[k])}
            if times[k] is not None:
                km["frame_time"] = times[k]
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
    still = np.asarray([t is None for t in times], dtype=bool)
    still_flips = still[flip_of] if len(flip_of) else np.zeros(0, dtype=bool)
    groups = (
        visual_groups(mat[still], own[still], max_d, flips[still_flips], own[flip_of[still_flips]])
        if len(mat)
        else {}
    )
    for item_id, _p, _q, _v, _km, status, old_group in items:
        if status != "duplicate" and groups.get(item_id) != old_group:
            updates.setdefault(item_id, {"id": item_id})["visual_group"] = groups.get(item_id)
    store.update_items(list(updates.values()))

    _copy_to_duplicates(store)
    rank_items(store, settings)


def _dihedral_variants(
    store: CaseStore, row_of: dict[tuple[int, float | None], int]
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """The rotated and mirrored PDQ hashes of the images and video keyframes whose own hash is
    row ``row_of[(item, frame time)]`` of the matching matrix (time None for an image): the
    hashes, the row each stands for, and its :data:`PDQ_DIHEDRAL` index."""
    hexes: list[str] = []
    rows: list[int] = []
    kinds: list[int] = []
    with store.session() as s:
        found = s.execute(
            select(ItemRow.id, ItemRow.pdq_dihedral, ItemRow.video).where(
                ItemRow.pdq_dihedral.is_not(None), ItemRow.status != "duplicate"
            )
        ).all()
    for item_id, dihedral, video in found:
        if not isinstance(dihedral, list) or not dihedral:
            continue
        if isinstance(dihedral[0], str):  # an image: its 8 hashes
            pairs = [((item_id, None), dihedral)]
        else:  # a video: 8 hashes per keyframe, in the order of video.keyframes
            frames = (video or {}).get("keyframes") or []
            pairs = [
                ((item_id, kf.get("time")), d) for kf, d in zip(frames, dihedral, strict=False)
            ]
        for key, variants in pairs:
            k = row_of.get(key)
            if k is None or not isinstance(variants, list) or len(variants) != len(PDQ_DIHEDRAL):
                continue
            for kind, h in enumerate(variants[1:], start=1):
                hexes.append(h)
                rows.append(k)
                kinds.append(kind)
    return (
        hashes_from_hex(hexes),
        np.asarray(rows, dtype=np.int64),
        np.asarray(kinds, dtype=np.int64),
    )


def _copy_to_duplicates(store: CaseStore) -> None:
    """Duplicates carry their original's decoded and inferred fields."""
    with store.session() as s, s.begin():
        dups = s.execute(
            select(ItemRow.id, ItemRow.duplicate_of).where(ItemRow.status == "duplicate")
        ).all()
        if dups:
            orig_ids = sorted({o for _, o in dups})
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
