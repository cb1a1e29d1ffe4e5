"""The one interface every index implements, and the on-disk layout they share.

A saved index is a directory::

    manifest.json   kind, dim, index type, row count, parameters
    index.faiss     the FAISS index (``faiss.write_index`` / ``write_index_binary``)
    meta.npz        the id map (see :mod:`heroes.index.idmap`)

Files are written under a temporary name and renamed into place, so a reader that has the old
``index.faiss`` memory-mapped keeps a valid mapping while a newer version is saved over it. The
manifest is written last and its row count is checked against the other two files on load.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Self

import faiss
import numpy as np
from numpy.typing import NDArray

from heroes.index.idmap import IdMap, Meta

FORMAT = "heroes.index/1"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
META_FILE = "meta.npz"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    ``score`` is higher-is-better and comparable across indexes of the same kind (cosine for float
    indexes, ``1 - hamming/256`` for PDQ); ``distance`` is in the index's native metric (cosine
    distance ``1 - cosine``, or Hamming bits) and is what ``range_search``'s radius bounds.
    """

    score: float
    distance: float
    meta: Meta
    row: int


class VectorIndex(ABC):
    """A FAISS index plus its id map, with one interface for faces, scenes and PDQ hashes.

    Rows are numbered 0..len-1 in the order they were added and never change, so the FAISS id of a
    vector *is* its row in the id map: there are no unknown ids to handle. Searches may run from
    several threads at once (FAISS releases the GIL); ``add`` and ``save`` must not overlap them.
    """

    kind: ClassVar[str]

    def __init__(self, dim: int) -> None:
        if int(dim) <= 0:
            raise ValueError(f"dimension must be positive, got {dim}")
        self._dim = int(dim)
        self._ids = IdMap()

    @property
    def dim(self) -> int:
        """Vector dimension (bits for a binary index)."""
        return self._dim

    @property
    @abstractmethod
    def index_type(self) -> str:
        """The FAISS structure in use now ("flat", "hnsw", "ivf", ...), as saved."""

    @property
    def id_map(self) -> IdMap:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def meta(self, row: int) -> Meta:
        """The metadata of ``row``; ``IndexError`` if no such row exists."""
        return self._ids[row]

    @abstractmethod
    def add(self, vectors: Any, metas: Sequence[Meta] | IdMap) -> range:
        """Append vectors with one :class:`Meta` each; returns the rows they were given."""

    @abstractmethod
    def search(self, queries: Any, k: int) -> list[list[Hit]]:
        """The ``k`` best hits per query, best first."""

    @abstractmethod
    def range_search(self, queries: Any, radius: float) -> list[list[Hit]]:
        """Every hit with ``distance <= radius`` per query, best first."""

    @abstractmethod
    def save(self, directory: str | PathLike[str]) -> Path:
        """Write the index, id map and manifest into ``directory`` (created if needed)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | PathLike[str], mmap: bool = True) -> Self:
        """Read an index saved by :meth:`save`; ``mmap`` maps its vectors instead of copying."""

    def _hits(
        self, rows: NDArray[np.int64], scores: NDArray[np.floating], dists: NDArray[np.floating]
    ) -> list[Hit]:
        return [
            Hit(score=float(s), distance=float(d), meta=self._ids[int(r)], row=int(r))
            for r, s, d in zip(rows, scores, dists, strict=True)
        ]

    def _write_common(self, directory: str | PathLike[str], extra: dict[str, Any]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / META_FILE, self._ids.save)
        manifest = {
            "format": FORMAT,
            "kind": self.kind,
            "dim": self._dim,
            "index_type": self.index_type,
            "count": len(self),
            "faiss_version": faiss.__version__,
            **extra,
        }
        atomic_write(out / MANIFEST, lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))
        return out


def atomic_write(path: Path, writer: Callable[[str], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_manifest(directory: str | PathLike[str], kind: str | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} holds no saved index ({MANIFEST} missing)") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown index format {manifest.get('format')!r}")
    if kind is not None and manifest.get("kind") != kind:
        raise ValueError(f"{directory} holds a {manifest.get('kind')} index, not a {kind} one")
    return manifest


def load_id_map(directory: str | PathLike[str], manifest: dict[str, Any], ntotal: int) -> IdMap:
    ids = IdMap.load(Path(directory) / META_FILE)
    if not len(ids) == ntotal == manifest["count"]:
        raise ValueError(
            f"{directory}: index has {ntotal} vectors, id map {len(ids)} rows, manifest "
            f"{manifest['count']}: the files are from different saves"
        )
    return ids


def mmap_flag() -> int:
    """The ``read_index`` flag that really maps vectors.

    In faiss 1.15 ``IO_FLAG_MMAP`` maps only IVF inverted lists and still copies flat and HNSW
    storage into RAM; ``IO_FLAG_MMAP_IFC`` maps all of flat, HNSW, IVF and binary flat storage
    (measured: a 390 MB flat index costs 0 MB RSS after read). Mapped indexes are read-only: adding
    to one aborts the process, so :class:`VectorIndex` subclasses copy before the first add.
    """
    return int(getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP))


def check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


__all__ = ["Hit", "Meta", "VectorIndex", "atomic_write", "read_manifest"]
