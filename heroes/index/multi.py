"""Searching several indexes (one per case) as one.

Each case keeps its own index so it can be sealed, copied and deleted on its own terms; a search
across cases merges per-case answers by score. Scores of one kind are comparable across indexes
(cosine for float, ``1 - hamming/bits`` for binary), which is what makes the merge meaningful, so
mixing kinds or dimensions is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import Any

from heroes.index.base import Hit, VectorIndex, read_manifest
from heroes.index.binary_index import BinaryIndex
from heroes.index.float_index import FloatIndex


def load_index(directory: str | PathLike[str], mmap: bool = True) -> VectorIndex:
    """Load whichever kind of index ``directory`` holds."""
    kind = read_manifest(directory)["kind"]
    if kind == FloatIndex.kind:
        return FloatIndex.load(directory, mmap=mmap)
    if kind == BinaryIndex.kind:
        return BinaryIndex.load(directory, mmap=mmap)
    raise ValueError(f"{directory}: unknown index kind {kind!r}")


def _check_compatible(indexes: Sequence[VectorIndex]) -> None:
    shapes = {(ix.kind, ix.dim) for ix in indexes}
    if len(shapes) > 1:
        raise ValueError(f"cannot merge hits from indexes of different kind/dim: {sorted(shapes)}")


def _key(h: Hit) -> tuple[float, str, int]:
    return (-h.score, h.meta.case, h.row)


def _merge(
    indexes: Sequence[VectorIndex],
    run: Callable[[VectorIndex], list[list[Hit]]],
    limit: int | None,
) -> list[list[Hit]]:
    _check_compatible(indexes)
    per_index = [run(ix) for ix in indexes]
    if not per_index:
        return []
    out = []
    for per_query in zip(*per_index, strict=True):
        merged = sorted((h for hits in per_query for h in hits), key=_key)
        out.append(merged if limit is None else merged[:limit])
    return out


def search_many(indexes: Sequence[VectorIndex], queries: Any, k: int) -> list[list[Hit]]:
    """Top ``k`` per query over all ``indexes``; ``hit.meta.case`` says which case it came from.

    Ties are ordered by case name then row, so the answer does not depend on index order.
    """
    if not indexes:
        raise ValueError("search_many needs at least one index")
    return _merge(indexes, lambda ix: ix.search(queries, k), k)


def range_search_many(
    indexes: Sequence[VectorIndex], queries: Any, radius: float
) -> list[list[Hit]]:
    """Every hit within ``radius`` over all ``indexes``, best first."""
    if not indexes:
        raise ValueError("range_search_many needs at least one index")
    return _merge(indexes, lambda ix: ix.range_search(queries, radius), None)


class ShardedSearcher:
    """A fixed set of per-case indexes searched as one (load once, e.g. at server start)."""

    def __init__(self, indexes: Iterable[VectorIndex]) -> None:
        self.indexes = list(indexes)
        if not self.indexes:
            raise ValueError("ShardedSearcher needs at least one index")
        _check_compatible(self.indexes)

    @classmethod
    def load(cls, directories: Iterable[str | PathLike[str]], mmap: bool = True) -> ShardedSearcher:
        return cls(load_index(d, mmap=mmap) for d in directories)

    def __len__(self) -> int:
        return sum(len(ix) for ix in self.indexes)

    def search(self, queries: Any, k: int) -> list[list[Hit]]:
        return search_many(self.indexes, queries, k)

    def range_search(self, queries: Any, radius: float) -> list[list[Hit]]:
        return range_search_many(self.indexes, queries, radius)


__all__ = ["ShardedSearcher", "load_index", "range_search_many", "search_many"]
