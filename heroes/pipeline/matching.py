"""PDQ matching, vectorised: case hashes against hash-set hashes, and visual duplicate groups.

Hashes are packed as ``uint8[N, 32]``; distances come from XOR + ``np.bitwise_count`` in blocks, so
memory stays bounded (block x M x 32 bytes). Exact and brute force, which is right up to about 10^5
hashes per side; the FAISS binary index takes over for larger cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

_BLOCK_BYTES = 64 * 1024 * 1024


def hamming(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int32]:
    """All pairwise Hamming distances between rows of ``a`` [N, 32] and ``b`` [M, 32]."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.bitwise_count(x).sum(axis=2, dtype=np.int32)


def _blocks(n: int, m: int) -> Iterator[slice]:
    step = max(1, _BLOCK_BYTES // max(1, m * 32))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


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
    for sl in _blocks(n, len(refs)):
        d = hamming(queries[sl], refs)
        j = d.argmin(axis=1)
        dj = d[np.arange(len(j)), j]
        ok = dj <= max_distance
        best[sl] = np.where(ok, j, -1)
        dist[sl] = dj
    return best, dist


def visual_groups(
    hashes: NDArray[np.uint8], owners: NDArray[np.int64], max_distance: int
) -> dict[int, int]:
    """Group owners (item ids) whose hashes are within ``max_distance``, transitively.

    ``owners[i]`` is the item that hash ``i`` belongs to (a video owns one hash per kept frame).
    Returns ``{item_id: group_id}`` for items in a group of two or more, where the group id is the
    smallest item id of the group, so ids stay stable when a case grows.
    """
    n = len(hashes)
    if n < 2:
        return {}
    parent = {int(o): int(o) for o in np.unique(owners)}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for sl in _blocks(n, n):
        d = hamming(hashes[sl], hashes)
        ii, jj = np.nonzero(d <= max_distance)
        ii = ii + sl.start
        keep = ii < jj
        for a, b in zip(owners[ii[keep]].tolist(), owners[jj[keep]].tolist(), strict=True):
            if a == b:
                continue
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for item in parent:
        groups.setdefault(find(item), []).append(item)
    return {item: root for root, members in groups.items() if len(members) > 1 for item in members}
