"""Hamming index for PDQ hashes (256 bits), with its id map.

PDQ matches are decided by a Hamming radius (31 by convention), so range search is the main
operation and it must not miss a planted near-duplicate. The index is exact
(``faiss.IndexBinaryFlat``) at every size by default, with queries processed in chunks to bound
the memory of the results. Measured by ``benchmarks/bench_index.py`` (2 cores; uniformly random
hashes, 500 queries each with one stored copy at distance 0..31; one query at a time):

=====  ================  ==================  ===================  ============
rows   flat (exact)      MultiHash 16x16     IVF1024, nprobe 64   numpy XOR
=====  ================  ==================  ===================  ============
1M     0.92 ms, 1.000    1.33 ms, 1.000      0.16 ms, 0.990       28 ms
10M    11.2 ms, 1.000    15.8 ms, 1.000      0.78 ms, 0.984       304 ms
=====  ================  ==================  ===================  ============

(p50 latency, recall of the planted copies.) ``IndexBinaryIVF`` is fast but misses planted
duplicates (0.88 when all are planted at exactly 31), so it is not offered. ``IndexBinaryMultiHash``
with 16 tables of 16 bits and one flip is exact up to radius 31 by the pigeonhole principle (a
pair within 31 bits differs by at most one bit in some 16-bit slice), but it was slower than the
flat scan and took about 8x the memory (2.6 GB for 10M hashes against 0.3 GB); real PDQ hashes
are less uniform than random ones, which only fills its buckets more unevenly. It stays available
through ``BinaryIndexParams(multihash_min=...)``.

Dihedral variants (rotations and mirrors of an image) are computed from pixels by the hashing
stage, not here: :meth:`BinaryIndex.range_search_variants` takes each query's variant hashes and
keeps, per indexed row, the best distance over the variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Self

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heroes.index.base import (
    INDEX_FILE,
    Hit,
    VectorIndex,
    atomic_write,
    check_k,
    load_id_map,
    mmap_flag,
    read_manifest,
)
from heroes.index.idmap import IdMap, Meta, as_id_map

PDQ_BITS = 256
PDQ_MATCH_RADIUS = 31

BinaryIndexType = Literal["flat", "multihash"]
HashesLike = str | Sequence[str] | ArrayLike
_RowsDists = tuple[NDArray[np.int64], NDArray[np.int32]]


@dataclass(frozen=True, slots=True)
class BinaryIndexParams:
    """How a :class:`BinaryIndex` is built; saved with the index.

    ``multihash_min``: row count above which the add that crosses it moves the index to
    ``IndexBinaryMultiHash``; ``None`` (default) stays exact, which measured faster (module doc).
    With ``multihash_tables`` slices of ``bits / tables`` bits and ``multihash_flips`` flips the
    hash lookup is exact up to radius ``tables * (flips + 1) - 1``; wider radii scan the storage.
    """

    multihash_min: int | None = None
    multihash_tables: int = 16
    multihash_flips: int = 1
    query_chunk: int = 4096

    def __post_init__(self) -> None:
        if self.query_chunk < 1 or self.multihash_tables < 1 or self.multihash_flips < 0:
            raise ValueError("query_chunk and multihash_tables must be >= 1, flips >= 0")


def hashes_from_hex(hexes: str | Sequence[str], bits: int = PDQ_BITS) -> NDArray[np.uint8]:
    """Hex strings -> ``uint8[n, bits/8]``; ``ValueError`` naming the first malformed one."""
    if isinstance(hexes, str):
        hexes = [hexes]
    nbytes = bits // 8
    out = np.empty((len(hexes), nbytes), np.uint8)
    for i, h in enumerate(hexes):
        try:
            raw = bytes.fromhex(h)
        except (ValueError, TypeError):
            raise ValueError(f"hash {i} is not hexadecimal: {h!r}") from None
        if len(raw) != nbytes:
            raise ValueError(f"hash {i} has {len(raw) * 8} bits, expected {bits}: {h!r}")
        out[i] = np.frombuffer(raw, np.uint8)
    return out


def hashes_to_hex(codes: NDArray[np.uint8]) -> list[str]:
    return [bytes(row).hex() for row in np.atleast_2d(np.asarray(codes, np.uint8))]


def as_codes(hashes: HashesLike, bits: int = PDQ_BITS) -> NDArray[np.uint8]:
    """Accept hex strings or packed ``uint8[n, bits/8]``; anything else is a ``ValueError``."""
    if isinstance(hashes, str) or (
        isinstance(hashes, Sequence) and len(hashes) > 0 and isinstance(hashes[0], str)
    ):
        return hashes_from_hex(hashes, bits)  # type: ignore[arg-type]
    a = np.asarray(hashes)
    if a.size == 0:
        return np.empty((0, bits // 8), np.uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"binary codes must be uint8 (packed bits), got {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != bits // 8:
        raise ValueError(f"binary codes must have shape (n, {bits // 8}), got {a.shape}")
    return np.ascontiguousarray(a)


def _best_per_row(parts: Sequence[_RowsDists]) -> _RowsDists:
    rows = np.concatenate([p[0] for p in parts])
    dists = np.concatenate([p[1] for p in parts])
    order = np.lexsort((rows, dists))
    rows, dists = rows[order], dists[order]
    _, first = np.unique(rows, return_index=True)
    keep = np.sort(first)
    return rows[keep], dists[keep]


class BinaryIndex(VectorIndex):
    """Hamming index over packed binary hashes (PDQ: 256 bits).

    ``distance`` is the Hamming distance in bits, ``score`` is ``1 - distance / bits``;
    ``range_search(q, r)`` returns rows with distance <= r (inclusive, unlike FAISS's ``<``).
    """

    kind = "binary"

    def __init__(self, bits: int = PDQ_BITS, params: BinaryIndexParams | None = None) -> None:
        if bits % 8:
            raise ValueError(f"bits must be a multiple of 8, got {bits}")
        super().__init__(bits)
        self.params = params or BinaryIndexParams()
        self._type: BinaryIndexType = "flat"
        self._index: Any = faiss.IndexBinaryFlat(bits)
        self._mapped = False

    @property
    def index_type(self) -> str:
        return self._type

    @property
    def faiss_index(self) -> Any:
        return self._index

    @property
    def exact_radius(self) -> int | None:
        """Largest radius the hash tables answer exactly (``None`` for a flat index)."""
        if self._type == "flat":
            return None
        return self.params.multihash_tables * (self.params.multihash_flips + 1) - 1

    def _flat(self) -> Any:
        return self._index if self._type == "flat" else self._index.storage

    def _multihash(self, codes: NDArray[np.uint8]) -> Any:
        p = self.params
        if self._dim % p.multihash_tables:
            raise ValueError(f"{self._dim} bits do not split into {p.multihash_tables} tables")
        index = faiss.IndexBinaryMultiHash(
            self._dim, p.multihash_tables, self._dim // p.multihash_tables
        )
        index.nflip = p.multihash_flips
        index.add(codes)
        return index

    def add(self, vectors: HashesLike, metas: Sequence[Meta] | IdMap) -> range:
        """Append hashes (hex strings or ``uint8[n, bits/8]``) with one :class:`Meta` each."""
        codes = as_codes(vectors, self._dim)
        ids = as_id_map(metas)
        if len(ids) != len(codes):
            raise ValueError(f"{len(codes)} hashes but {len(ids)} metas")
        start = len(self)
        if len(codes) == 0:
            return range(start, start)
        if self._mapped:
            self._index = faiss.deserialize_index_binary(faiss.serialize_index_binary(self._index))
            self._mapped = False
        total = start + len(codes)
        limit = self.params.multihash_min
        if self._type == "flat" and limit is not None and total > limit:
            old = self._index.reconstruct_n(0, start) if start else codes[:0]
            self._index = self._multihash(np.concatenate([old, codes]))
            self._type = "multihash"
        else:
            self._index.add(codes)
        self._ids.extend(ids)
        return range(start, total)

    def _knn(self, codes: NDArray[np.uint8], k: int) -> list[_RowsDists]:
        out: list[_RowsDists] = []
        flat = self._flat()
        step = self.params.query_chunk
        for a in range(0, len(codes), step):
            dists, rows = flat.search(codes[a : a + step], k)
            for d, r in zip(dists, rows, strict=True):
                keep = r >= 0
                order = np.lexsort((r[keep], d[keep]))
                out.append((r[keep][order], d[keep][order]))
        return out

    def _range(self, codes: NDArray[np.uint8], radius: int) -> list[_RowsDists]:
        use_hash = self.exact_radius is not None and radius <= self.exact_radius
        index = self._index if use_hash else self._flat()
        out: list[_RowsDists] = []
        step = self.params.query_chunk
        for a in range(0, len(codes), step):
            lims, dists, rows = index.range_search(codes[a : a + step], radius + 1)
            for i in range(len(lims) - 1):
                r, d = rows[lims[i] : lims[i + 1]], dists[lims[i] : lims[i + 1]]
                order = np.lexsort((r, d))
                out.append((r[order], d[order].astype(np.int32)))
        return out

    def _to_hits(self, rd: _RowsDists) -> list[Hit]:
        rows, dists = rd
        d = dists.astype(np.float64)
        return self._hits(rows, 1.0 - d / self._dim, d)

    def search(self, queries: HashesLike, k: int) -> list[list[Hit]]:
        """The ``k`` nearest rows per query by Hamming distance, exact."""
        k = check_k(k)
        codes = as_codes(queries, self._dim)
        if len(self) == 0:
            return [[] for _ in range(len(codes))]
        return [self._to_hits(rd) for rd in self._knn(codes, min(k, len(self)))]

    def range_search(self, queries: HashesLike, radius: float) -> list[list[Hit]]:
        """Every row within ``radius`` bits (inclusive) per query, nearest first."""
        codes = as_codes(queries, self._dim)
        if len(self) == 0 or radius < 0:
            return [[] for _ in range(len(codes))]
        return [self._to_hits(rd) for rd in self._range(codes, int(radius))]

    def _variants(
        self, variant_sets: Sequence[HashesLike] | NDArray[np.uint8]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        sets = [as_codes(s, self._dim) for s in variant_sets]
        counts = np.array([len(s) for s in sets], np.int64)
        if (counts == 0).any():
            raise ValueError("every query needs at least one variant hash")
        codes = np.concatenate(sets) if sets else np.empty((0, self._dim // 8), np.uint8)
        return codes, np.concatenate([[0], np.cumsum(counts)])

    def search_variants(
        self, variant_sets: Sequence[HashesLike] | NDArray[np.uint8], k: int
    ) -> list[list[Hit]]:
        """k-NN for queries given as sets of variant hashes (e.g. PDQ's 8 dihedral hashes).

        Per query, each row's distance is its best over the variants.
        """
        k = check_k(k)
        codes, bounds = self._variants(variant_sets)
        if len(self) == 0:
            return [[] for _ in range(len(bounds) - 1)]
        parts = self._knn(codes, min(k, len(self)))
        out = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rows, dists = _best_per_row(parts[a:b])
            out.append(self._to_hits((rows[:k], dists[:k])))
        return out

    def range_search_variants(
        self, variant_sets: Sequence[HashesLike] | NDArray[np.uint8], radius: int
    ) -> list[list[Hit]]:
        """Range search for queries given as sets of variant hashes, best distance per row."""
        codes, bounds = self._variants(variant_sets)
        if len(self) == 0 or radius < 0:
            return [[] for _ in range(len(bounds) - 1)]
        parts = self._range(codes, int(radius))
        return [
            self._to_hits(_best_per_row(parts[a:b]))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def search_dihedral(
        self,
        variant_sets: Sequence[HashesLike] | NDArray[np.uint8],
        *,
        k: int | None = None,
        radius: int | None = None,
    ) -> list[list[Hit]]:
        """Match images in any rotation or mirror: pass each query's 8 dihedral hashes (from
        ``pdqhash.compute_dihedral``) and exactly one of ``k`` or ``radius``."""
        if (k is None) == (radius is None):
            raise ValueError("give exactly one of k or radius")
        if k is not None:
            return self.search_variants(variant_sets, k)
        return self.range_search_variants(variant_sets, int(radius))  # type: ignore[arg-type]

    def save(self, directory: str | PathLike[str]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / INDEX_FILE, lambda p: faiss.write_index_binary(self._index, p))
        return self._write_common(out, {"params": asdict(self.params)})

    @classmethod
    def load(cls, directory: str | PathLike[str], mmap: bool = True) -> Self:
        """Read a saved index; with ``mmap`` a flat index's codes stay on disk until touched."""
        manifest = read_manifest(directory, cls.kind)
        self = cls(manifest["dim"], BinaryIndexParams(**manifest["params"]))
        path = str(Path(directory) / INDEX_FILE)
        self._index = faiss.read_index_binary(path, mmap_flag() if mmap else 0)
        self._mapped = mmap
        self._type = manifest["index_type"]
        if self._type == "multihash":
            self._index.nflip = self.params.multihash_flips
        if self._index.d != self._dim:
            raise ValueError(f"{path}: FAISS dimension {self._index.d}, manifest {self._dim}")
        self._ids = load_id_map(directory, manifest, self._index.ntotal)
        return self


__all__ = [
    "PDQ_BITS",
    "PDQ_MATCH_RADIUS",
    "BinaryIndex",
    "BinaryIndexParams",
    "as_codes",
    "hashes_from_hex",
    "hashes_to_hex",
]
