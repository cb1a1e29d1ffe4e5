"""PDQ matching: case hashes against hash-set hashes, and visual duplicate groups.

Hashes are packed as ``uint8[N, 32]``. Matching is exact: FAISS's flat binary index (a SIMD
popcount scan, in query chunks so memory stays bounded) finds nearest references and all pairs
within the radius. An image also stands for its 7 rotations and mirrors (PDQ's dihedral hashes),
which multiplies the queries by 8; measured on 10^4 random hashes (2 cores), grouping with
variants takes about 6 s against 72 s for the numpy XOR scan this replaced (1.2 s against 11 s
without them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: the order of PDQ's dihedral hashes (``pdqhash.compute_dihedral``, ``pdq_dihedral`` in the case
#: store), named as the reference names them: the image itself, its rotations counter-clockwise,
#: its mirrors about the x axis (top to bottom) and the y axis (left to right), and about the two
#: diagonals (a transpose and a transverse). A copy's variant that undoes its transform finds the
#: original: a copy mirrored left to right matches through ``flip_y``.
PDQ_DIHEDRAL = (
    "original",
    "rotate_90",
    "rotate_180",
    "rotate_270",
    "flip_x",
    "flip_y",
    "flip_plus_1",
    "flip_minus_1",
)


def quality_hashes(
    pdq: str | None, quality: int | None, video: dict[str, Any] | None, min_quality: int
) -> Iterator[tuple[float | None, str]]:
    """An item's PDQ hashes good enough to match on (quality at least ``min_quality``): its own
    as (None, hash), then each video keyframe's as (frame time, hash)."""
    if pdq and (quality or 0) >= min_quality:
        yield None, pdq
    for kf in (video or {}).get("keyframes", []):
        if kf.get("pdq") and (kf.get("quality") or 0) >= min_quality:
            yield kf.get("time"), kf["pdq"]


def hamming(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int32]:
    """All pairwise Hamming distances between rows of ``a`` [N, 32] and ``b`` [M, 32]."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.bitwise_count(x).sum(axis=2, dtype=np.int32)


def nearest_within(
    queries: NDArray[np.uint8], refs: NDArray[np.uint8], max_distance: int
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """For each query, its nearest reference's index (-1 if none is within ``max_distance``)
    and the distance."""
    n = len(queries)
    best = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, 257, dtype=np.int32)
    if n == 0 or len(refs) == 0:
        return best, dist
    import faiss

    # exact nearest neighbour by FAISS's binary scan (SIMD popcount); on equal distances the
    # first reference wins, as with an argmin
    index = faiss.IndexBinaryFlat(refs.shape[1] * 8)
    index.add(np.ascontiguousarray(refs))
    step = 8192
    for a in range(0, n, step):
        d, j = index.search(np.ascontiguousarray(queries[a : a + step]), 1)
        dj, jj = d[:, 0].astype(np.int32), j[:, 0].astype(np.int64)
        best[a : a + len(jj)] = np.where(dj <= max_distance, jj, -1)
        dist[a : a + len(jj)] = dj
    return best, dist


def nearest_within_variants(
    queries: NDArray[np.uint8],
    refs: NDArray[np.uint8],
    max_distance: int,
    variants: NDArray[np.uint8] | None = None,
    variant_of: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64]]:
    """:func:`nearest_within` where a query may also stand for other hashes of the same picture.

    ``variants[v]`` is another hash of query ``variant_of[v]`` (PDQ's rotations and mirrors of an
    image), so a flipped or rotated copy of a reference still finds it. Returns, per query, the
    best reference over the query and its variants (-1 if none is within ``max_distance``), the
    distance, and which hash found it: -1 for the query itself, else the row in ``variants``. The
    query itself wins ties, so an unchanged copy never reads as a mirrored one.
    """
    best, dist = nearest_within(queries, refs, max_distance)
    found_by = np.full(len(queries), -1, dtype=np.int64)
    if variants is None or variant_of is None or len(variants) == 0:
        return best, dist, found_by
    v_best, v_dist = nearest_within(variants, refs, max_distance)
    # visit variants from the worst to the best distance, so the best one is written last
    for v in np.argsort(-v_dist, kind="stable").tolist():
        if v_best[v] < 0:
            continue
        q = int(variant_of[v])
        if v_dist[v] < dist[q]:
            best[q], dist[q], found_by[q] = v_best[v], v_dist[v], v
    return best, dist, found_by


def pairs_within(
    queries: NDArray[np.uint8], refs: NDArray[np.uint8], max_distance: int
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Every (query row, reference row) pair within ``max_distance`` bits, in chunks.

    An exact FAISS binary range search (popcount in SIMD): about 7x faster than the numpy
    XOR scan on 10^4 hashes, which matters once each image brings its 7 rotations and mirrors.
    """
    if len(queries) == 0 or len(refs) == 0:
        return
    import faiss

    index = faiss.IndexBinaryFlat(refs.shape[1] * 8)
    index.add(np.ascontiguousarray(refs))
    step = 8192
    for a in range(0, len(queries), step):
        lims, _dists, rows = index.range_search(
            np.ascontiguousarray(queries[a : a + step]), max_distance + 1
        )
        counts = np.diff(lims).astype(np.int64)
        ii = np.repeat(np.arange(a, a + len(counts), dtype=np.int64), counts)
        yield ii, rows.astype(np.int64)


def visual_groups(
    hashes: NDArray[np.uint8],
    owners: NDArray[np.int64],
    max_distance: int,
    variants: NDArray[np.uint8] | None = None,
    variant_owners: NDArray[np.int64] | None = None,
) -> dict[int, int]:
    """Group owners (item ids) whose hashes are within ``max_distance``, transitively.

    ``owners[i]`` is the item that hash ``i`` belongs to (a video owns one hash per kept frame).
    ``variants`` are further hashes of the same items (``variant_owners``), such as PDQ's
    rotations and mirrors of an image: an item joins another when one of its variants is within
    ``max_distance`` of the other's hash, so a mirrored copy joins its original's group.
    Returns ``{item_id: group_id}`` for items in a group of two or more, where the group id is the
    smallest item id of the group, so ids stay stable when a case grows.
    """
    if len(hashes) < 2:
        return {}
    # union-find over the items' places in ``items`` (sorted), in numpy arrays: a root is always
    # the smallest place of its set, so it names the smallest item id
    items = np.unique(owners)
    parent = np.arange(len(items), dtype=np.int64)

    def places(ids: NDArray[np.int64]) -> NDArray[np.int64]:
        at = np.searchsorted(items, ids)
        return np.where(items[np.minimum(at, len(items) - 1)] == ids, at, -1)

    for ii, jj in pairs_within(hashes, hashes, max_distance):
        keep = ii < jj
        _union(parent, places(owners[ii[keep]]), places(owners[jj[keep]]))
    if variants is not None and variant_owners is not None:
        for ii, jj in pairs_within(variants, hashes, max_distance):
            _union(parent, places(variant_owners[ii]), places(owners[jj]))
    roots = _roots(parent, np.arange(len(items)))
    grouped = np.bincount(roots, minlength=len(items))[roots] > 1
    return dict(zip(items[grouped].tolist(), items[roots[grouped]].tolist(), strict=True))


def _roots(parent: NDArray[np.int64], x: NDArray[np.int64]) -> NDArray[np.int64]:
    """The roots of ``x``; the nodes asked about then point straight at them."""
    r = parent[x]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            break
        r = up
    parent[x] = r
    return r


def _union(parent: NDArray[np.int64], a: NDArray[np.int64], b: NDArray[np.int64]) -> None:
    """Join the sets of ``a[k]`` and ``b[k]`` for every k (pairs with a -1 are left out). The
    larger root is hooked under the smaller, so parents only ever point to smaller places and a
    set's root is its smallest member."""
    keep = (a >= 0) & (b >= 0) & (a != b)
    a, b = a[keep], b[keep]
    while len(a):
        ra, rb = _roots(parent, a), _roots(parent, b)
        apart = ra != rb
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        # a root hooked under several smaller roots at once keeps the smallest; the pairs it
        # was not hooked through are looked at again
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
