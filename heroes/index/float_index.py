"""Cosine-similarity index for face and scene embeddings.

Vectors are L2-normalised on add and on query, so FAISS inner product is cosine similarity.

Size rule (:func:`choose_float_index_type`), decided when the FAISS structure is built:

* ``n <= flat_max`` (default 50,000): exact ``IndexFlatIP``. Brute force over 50k x 512 floats
  takes a few milliseconds a query, and exact answers need no tuning.
* above it, ``approximate="ivf"`` (default): ``IVF{nlist}_HNSW32,Flat``, nlist = the power of two
  at or above ``4 * sqrt(n)`` (within the FAISS guideline of 4..16 sqrt(n); capped so k-means has
  ``train_per_list`` points per list), trained on a seeded sample, HNSW coarse quantiser. When
  the raw vectors (``n * dim * 4`` bytes) exceed ``memory_budget_bytes`` the lists hold product
  codes instead (``PQ{dim/4}x8``: 16x smaller, recall lower, see the benchmark).
* ``approximate="hnsw"``: ``IndexHNSWFlat`` M=32. Kept as an option rather than the default: on
  1M clustered 128-d vectors with two cores it took 150 s to build (efConstruction 40) and reached
  recall@10 0.94 at efSearch 256, while IVF4096_HNSW32 built in 16-21 s and reached 0.96-0.99 at
  nprobe 4-16. IVF also memory-maps, and its build cost grows with the training sample, not n.

Search knobs: ``nprobe`` (IVF, default 16) and ``ef_search`` (HNSW, default 128) are attributes,
saved with the index. ``benchmarks/bench_index.py`` measured recall@10 at nprobe 16 of 0.988
(128-d) and 0.966 (512-d) at 1M rows, p50 0.26 / 0.55 ms per single query on two cores.

Growth: FAISS flat, HNSW and IVF all accept ``add`` without a rebuild. The one exception is the
flat index: the ``add`` that takes it past ``flat_max`` migrates it once to the approximate type
chosen for the size at that moment (IVF lists trained then keep serving later adds; rebuild from
the source vectors if the index later grows by orders of magnitude).

Zero vectors (a failed embedding) are stored, so rows stay aligned with the caller's data, but
never returned as hits: their cosine with anything is undefined. A zero query returns no hits.

GPU: when ``faiss.get_num_gpus() > 0`` and ``use_gpu`` is set, k-NN searches of flat and IVF
indexes run on a replica made by ``faiss.index_cpu_to_all_gpus`` (rebuilt after adds); the CPU
index stays the master for adds, range search and saving. HNSW has no GPU form in FAISS.
"""

from __future__ import annotations

import json
import math
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

FloatIndexType = Literal["flat", "hnsw", "ivf", "ivfpq"]
ZERO_ROWS_FILE = "zero_rows.npy"
_GPU_MAX_K = 2048


@dataclass(frozen=True, slots=True)
class FloatIndexParams:
    """How a :class:`FloatIndex` picks and tunes its FAISS structure; saved with the index.

    The defaults meet recall@10 >= 0.95 on the project benchmark (1M clustered vectors); on a new
    kind of embedding measure recall again with ``benchmarks/bench_index.py`` before trusting it.
    """

    flat_max: int = 50_000
    approximate: Literal["ivf", "hnsw"] = "ivf"
    memory_budget_bytes: int = 4 << 30
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    nlist_per_sqrt_n: float = 4.0
    train_per_list: int = 48
    nprobe: int = 16
    quantizer_ef_search: int = 128
    pq_dims_per_code: int = 4
    use_gpu: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.approximate not in ("ivf", "hnsw"):
            raise ValueError(f"approximate must be 'ivf' or 'hnsw', got {self.approximate!r}")
        if self.flat_max < 0 or self.nprobe < 1 or self.ef_search < 1:
            raise ValueError("flat_max must be >= 0, nprobe and ef_search >= 1")
        if self.train_per_list < 39:
            raise ValueError("train_per_list below 39 makes FAISS k-means warn and degrade")


def choose_float_index_type(n: int, dim: int, params: FloatIndexParams) -> FloatIndexType:
    """The FAISS structure for ``n`` vectors of ``dim`` floats under ``params``."""
    if n <= params.flat_max:
        return "flat"
    if params.approximate == "hnsw":
        return "hnsw"
    return "ivfpq" if n * dim * 4 > params.memory_budget_bytes else "ivf"


def choose_nlist(n: int, params: FloatIndexParams) -> int:
    """Power of two at or above ``nlist_per_sqrt_n * sqrt(n)``, at most ``n / train_per_list``."""
    target = max(1.0, params.nlist_per_sqrt_n * math.sqrt(max(n, 1)))
    nlist = 1 << math.ceil(math.log2(target))
    return max(1, min(nlist, n // params.train_per_list))


def _pq_m(dim: int, params: FloatIndexParams) -> int:
    m = max(1, dim // params.pq_dims_per_code)
    while dim % m:
        m -= 1
    return m


def _as_matrix(x: ArrayLike, dim: int, what: str) -> NDArray[np.float32]:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {a.shape}")
    return a


def normalise(
    x: NDArray[np.float32], what: str = "vectors", chunk: int = 65536
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Unit-length copy of ``x`` and the mask of rows that were zero (left as zeros).

    Norms are taken in float64, chunk by chunk so a million 512-d rows need no 4 GB temporary;
    a non-finite norm means a NaN or infinite value, which is refused.
    """
    out = np.empty(x.shape, np.float32)
    zero = np.empty(len(x), bool)
    for a in range(0, len(x), chunk):
        block = x[a : a + chunk]
        norms = np.linalg.norm(block.astype(np.float64), axis=1)
        if not np.isfinite(norms).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        z = norms == 0
        zero[a : a + chunk] = z
        out[a : a + chunk] = block / np.where(z, 1.0, norms)[:, None]
    return out, zero


class FloatIndex(VectorIndex):
    """Cosine index over float32 embeddings (faces 128-d, scenes 512-d) with its id map.

    ``score`` is cosine similarity, ``distance`` is ``1 - cosine``; ``range_search(q, r)`` returns
    rows with cosine >= ``1 - r``. See the module docstring for the size rule.
    """

    kind = "float"

    def __init__(self, dim: int, params: FloatIndexParams | None = None) -> None:
        super().__init__(dim)
        self.params = params or FloatIndexParams()
        self.nprobe = self.params.nprobe
        self.ef_search = self.params.ef_search
        self._type: FloatIndexType = "flat"
        self._index: faiss.Index = faiss.IndexFlatIP(self._dim)
        self._zero_rows: NDArray[np.int64] = np.empty(0, np.int64)
        self._selector: tuple[faiss.IDSelector, faiss.IDSelector] | None = None
        self._mapped = False
        self._gpu: Any = None
        self._gpu_key: tuple[int, int] | None = None
        self._gpu_unsupported = False

    @property
    def index_type(self) -> str:
        return self._type

    @property
    def nlist(self) -> int | None:
        return int(self._ivf().nlist) if self._type in ("ivf", "ivfpq") else None

    @property
    def faiss_index(self) -> faiss.Index:
        """The CPU FAISS index, for inspection and benchmarks; mutate it through :meth:`add`."""
        return self._index

    @property
    def zero_rows(self) -> NDArray[np.int64]:
        """Rows holding zero vectors: stored, never returned."""
        return self._zero_rows

    def _ivf(self) -> faiss.IndexIVF:
        return faiss.extract_index_ivf(self._index)

    def add(self, vectors: ArrayLike, metas: Sequence[Meta] | IdMap) -> range:
        """Append vectors; the add that crosses ``flat_max`` migrates a flat index once."""
        x = _as_matrix(vectors, self._dim, "vectors")
        ids = as_id_map(metas)
        if len(ids) != len(x):
            raise ValueError(f"{len(x)} vectors but {len(ids)} metas")
        start = len(self)
        if len(x) == 0:
            return range(start, start)
        x, zero = normalise(x)
        self._own()
        total = start + len(x)
        target = choose_float_index_type(total, self._dim, self.params)
        if self._type == "flat" and target != "flat":
            allx = np.concatenate([self._index.reconstruct_n(0, start), x]) if start else x
            allzero = np.zeros(total, bool)
            allzero[self._zero_rows] = True
            allzero[start:] = zero
            self._index = self._build(target, allx, allzero)
            self._type = target
        else:
            self._index.add(x)
        self._ids.extend(ids)
        if zero.any():
            self._zero_rows = np.concatenate([self._zero_rows, start + np.flatnonzero(zero)])
            self._selector = None
        self._gpu = None
        return range(start, total)

    def _build(
        self, kind: FloatIndexType, x: NDArray[np.float32], zero: NDArray[np.bool_]
    ) -> faiss.Index:
        p = self.params
        n, d = x.shape
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p.ef_construction
            index.add(x)
            return index
        nlist = choose_nlist(n, p)
        usable = np.flatnonzero(~zero)
        want = max(p.train_per_list * nlist, 256 * 39 if kind == "ivfpq" else 0)
        if len(usable) > want:
            rng = np.random.default_rng(p.seed)
            usable = np.sort(rng.choice(usable, want, replace=False))
        if kind == "ivfpq":
            nbits = int(min(8, max(1, math.floor(math.log2(max(len(usable), 78) / 39)))))
            codes = f"PQ{_pq_m(d, p)}x{nbits}np"
        else:
            codes = "Flat"
        index = faiss.index_factory(d, f"IVF{nlist}_HNSW32,{codes}", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.seed = p.seed
        index.train(x[usable])
        index.add(x)
        return index

    def _own(self) -> None:
        """Swap a memory-mapped index for an owned copy before the first write to it."""
        if self._mapped:
            self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._mapped = False

    def _prepare(self, queries: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        return normalise(_as_matrix(queries, self._dim, "queries"), "queries")

    def _params(self, k: int = 1) -> faiss.SearchParameters | None:
        if len(self._zero_rows) and self._selector is None:
            batch = faiss.IDSelectorBatch(self._zero_rows)
            self._selector = (faiss.IDSelectorNot(batch), batch)
        sel = self._selector[0] if self._selector is not None else None
        if self._type == "flat":
            return None if sel is None else faiss.SearchParameters(sel=sel)
        if self._type == "hnsw":
            prm = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        else:
            quant = faiss.SearchParametersHNSW(
                efSearch=max(self.params.quantizer_ef_search, 2 * self.nprobe)
            )
            prm = faiss.SearchParametersIVF(nprobe=self.nprobe, quantizer_params=quant)
            prm._quant = quant
        if sel is not None:
            prm.sel = sel
        return prm

    def _gpu_index(self, k: int) -> Any:
        """The GPU replica for a k-NN search, or None to search on the CPU.

        Types FAISS cannot clone (HNSW; IVF-PQ layouts the GPU lacks) stay on the CPU.
        """
        use = (
            self.params.use_gpu
            and not self._gpu_unsupported
            and self._type != "hnsw"
            and k + len(self._zero_rows) <= _GPU_MAX_K
            and faiss.get_num_gpus() > 0
        )
        if not use:
            return None
        key = (self._index.ntotal, self.nprobe)
        if self._gpu is None or self._gpu_key != key:
            if self._type != "flat":
                self._ivf().nprobe = self.nprobe
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self._index)
            except RuntimeError:
                self._gpu_unsupported = True
                self._gpu = None
                return None
            self._gpu_key = key
        return self._gpu

    def search_arrays(
        self, queries: ArrayLike, k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Bulk form of :meth:`search`: cosine ``float32[nq, k']`` and rows ``int64[nq, k']``.

        ``k' = min(k, len(self))``; missing results (zero rows skipped, zero queries, an HNSW or
        IVF search that reached fewer rows) are row -1 and cosine -inf. For callers such as
        clustering that need millions of neighbours without a :class:`Hit` object each.
        """
        k = check_k(k)
        q, qzero = self._prepare(queries)
        n = len(self)
        kk = min(k, n)
        if kk == 0 or len(q) == 0:
            return np.empty((len(q), kk), np.float32), np.empty((len(q), kk), np.int64)
        gpu = self._gpu_index(kk)
        if gpu is not None:
            sims, rows = gpu.search(q, min(n, kk + len(self._zero_rows)))
            if len(self._zero_rows):
                bad = np.isin(rows, self._zero_rows)
                order = np.argsort(bad, axis=1, kind="stable")
                rows = np.where(bad, -1, rows)
                sims = np.take_along_axis(sims, order, 1)[:, :kk]
                rows = np.take_along_axis(rows, order, 1)[:, :kk]
        else:
            sims, rows = self._index.search(q, kk, params=self._params(kk))
        rows = np.where(qzero[:, None], -1, rows)
        sims = np.where(rows < 0, -np.inf, sims).astype(np.float32)
        return sims, rows

    def search(self, queries: ArrayLike, k: int) -> list[list[Hit]]:
        """Top ``k`` rows by cosine per query; fewer when the index holds fewer usable rows."""
        sims, rows = self.search_arrays(queries, k)
        out = []
        for r, s in zip(rows, sims, strict=True):
            keep = r >= 0
            r, s = r[keep], s[keep]
            order = np.lexsort((r, -s))
            out.append(self._hits(r[order], s[order], 1.0 - s[order]))
        return out

    def range_search(self, queries: ArrayLike, radius: float) -> list[list[Hit]]:
        """Rows within cosine distance ``radius`` (cosine >= 1 - radius), best first.

        Exact for a flat index; HNSW and IVF return what their graph or probed lists reach.
        """
        q, qzero = self._prepare(queries)
        if len(self) == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        threshold = 1.0 - float(radius) - 1e-6
        lims, sims, rows = self._index.range_search(q, threshold, params=self._params())
        out = []
        for i in range(len(q)):
            a, b = lims[i], lims[i + 1]
            if qzero[i] or a == b:
                out.append([])
                continue
            r, s = rows[a:b], sims[a:b]
            order = np.lexsort((r, -s))
            out.append(self._hits(r[order], s[order], 1.0 - s[order]))
        return out

    def save(self, directory: str | PathLike[str]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / INDEX_FILE, lambda p: faiss.write_index(self._index, p))
        atomic_write(out / ZERO_ROWS_FILE, self._save_zero_rows)
        extra = {
            "params": asdict(self.params),
            "search": {"nprobe": self.nprobe, "ef_search": self.ef_search},
            "nlist": self.nlist,
        }
        return self._write_common(out, extra)

    def _save_zero_rows(self, path: str) -> None:
        with open(path, "wb") as f:
            np.save(f, self._zero_rows)

    @classmethod
    def load(cls, directory: str | PathLike[str], mmap: bool = True) -> Self:
        """Read a saved index; with ``mmap`` its vectors stay on disk until touched."""
        manifest = read_manifest(directory, cls.kind)
        params = FloatIndexParams(**manifest["params"])
        self = cls(manifest["dim"], params)
        path = str(Path(directory) / INDEX_FILE)
        self._index = faiss.read_index(path, mmap_flag() if mmap else 0)
        self._mapped = mmap
        self._type = manifest["index_type"]
        self.nprobe = manifest["search"]["nprobe"]
        self.ef_search = manifest["search"]["ef_search"]
        if self._index.d != self._dim:
            raise ValueError(f"{path}: FAISS dimension {self._index.d}, manifest {self._dim}")
        self._ids = load_id_map(directory, manifest, self._index.ntotal)
        with open(Path(directory) / ZERO_ROWS_FILE, "rb") as f:
            self._zero_rows = np.load(f).astype(np.int64)
        return self

    def __repr__(self) -> str:
        return (
            f"FloatIndex(dim={self._dim}, type={self._type!r}, rows={len(self)}, "
            f"params={json.dumps(asdict(self.params))})"
        )


__all__ = [
    "FloatIndex",
    "FloatIndexParams",
    "FloatIndexType",
    "choose_float_index_type",
    "choose_nlist",
    "normalise",
]
