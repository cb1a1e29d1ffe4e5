"""The id map kept beside every FAISS file: row number -> where the vector came from.

FAISS only knows sequential row numbers. Every vector an investigator finds must lead back to the
case, the item, the frame of a video, the box of a face and the caller's own reference, so the map
is stored next to the index and written and read with it. It is columnar (numpy arrays in one
``.npz`` plus one UTF-8 strings table) because a million rows must load in well under a second;
a million JSON objects would not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

BBox = tuple[float, float, float, float]

_NONE = -1


@dataclass(frozen=True, slots=True)
class Meta:
    """Where one indexed vector came from.

    ``frame_time`` is the time in seconds for a video frame, ``bbox`` the (x0, y0, x1, y1) box of
    a face or crop, ``ref`` the caller's own key (a face id, a file path); each may be ``None``.
    """

    case: str
    item_id: int
    frame_time: float | None = None
    bbox: BBox | None = None
    ref: str | None = None


class _Strings:
    """Interned strings, kept as one UTF-8 blob plus offsets on disk.

    Decoding a loaded table is lazy: lookups slice the blob, and the full list and the interning
    dict are only built when new strings are added.
    """

    __slots__ = ("_values", "_codes", "_blob", "_offsets")

    def __init__(self) -> None:
        self._values: list[str] | None = []
        self._codes: dict[str, int] | None = {}
        self._blob = b""
        self._offsets: NDArray[np.int64] = np.zeros(1, np.int64)

    def __len__(self) -> int:
        if self._values is not None:
            return len(self._values)
        return len(self._offsets) - 1

    def get(self, code: int) -> str:
        if self._values is not None:
            return self._values[code]
        return self._blob[self._offsets[code] : self._offsets[code + 1]].decode("utf-8")

    def _materialise(self) -> tuple[list[str], dict[str, int]]:
        if self._values is None:
            offs = self._offsets.tolist()
            blob = self._blob
            self._values = [
                blob[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:], strict=True)
            ]
            self._codes = None
        if self._codes is None:
            self._codes = {s: i for i, s in enumerate(self._values)}
        return self._values, self._codes

    def encode(self, values: Iterable[str | None]) -> NDArray[np.int32]:
        table, codes = self._materialise()
        out = []
        for s in values:
            if s is None:
                out.append(_NONE)
                continue
            if not isinstance(s, str):
                raise TypeError(f"expected a string or None, got {type(s).__name__}")
            c = codes.get(s)
            if c is None:
                c = codes[s] = len(table)
                table.append(s)
            out.append(c)
        return np.asarray(out, dtype=np.int32)

    def to_arrays(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        if self._values is None:
            return np.frombuffer(self._blob, np.uint8), self._offsets
        encoded = [s.encode("utf-8") for s in self._values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return np.frombuffer(b"".join(encoded), np.uint8), offsets

    @classmethod
    def from_arrays(cls, blob: NDArray[np.uint8], offsets: NDArray[np.int64]) -> _Strings:
        s = cls()
        s._values = None
        s._codes = None
        s._blob = blob.tobytes()
        s._offsets = np.asarray(offsets, np.int64)
        return s


class IdMap:
    """Columnar row -> :class:`Meta` map that grows with the index it belongs to.

    ``frame_time`` and ``bbox`` use NaN for ``None``; ``case`` and ``ref`` are codes into one
    interned strings table (-1 for ``None``), so a case name repeated a million times costs four
    bytes a row.
    """

    __slots__ = ("_n", "_case", "_item", "_time", "_bbox", "_ref", "_strings")

    def __init__(self) -> None:
        self._n = 0
        self._case: NDArray[np.int32] = np.empty(0, np.int32)
        self._item: NDArray[np.int64] = np.empty(0, np.int64)
        self._time: NDArray[np.float64] = np.empty(0, np.float64)
        self._bbox: NDArray[np.float64] = np.empty((0, 4), np.float64)
        self._ref: NDArray[np.int32] = np.empty(0, np.int32)
        self._strings = _Strings()

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row: int) -> Meta:
        n = self._n
        r = int(row)
        if not -n <= r < n:
            raise IndexError(f"row {row} is out of range for an index of {n} rows")
        if r < 0:
            r += n
        t = float(self._time[r])
        box = self._bbox[r]
        ref = int(self._ref[r])
        return Meta(
            case=self._strings.get(int(self._case[r])),
            item_id=int(self._item[r]),
            frame_time=None if np.isnan(t) else t,
            bbox=None
            if np.isnan(box[0])
            else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            ref=None if ref == _NONE else self._strings.get(ref),
        )

    def __iter__(self) -> Iterator[Meta]:
        return (self[i] for i in range(self._n))

    @property
    def item_ids(self) -> NDArray[np.int64]:
        return self._item[: self._n]

    @property
    def cases(self) -> list[str]:
        """The distinct case names present."""
        codes = np.unique(self._case[: self._n])
        return [self._strings.get(int(c)) for c in codes]

    @classmethod
    def from_metas(cls, metas: Sequence[Meta]) -> IdMap:
        for m in metas:
            if not isinstance(m, Meta):
                raise TypeError(f"expected Meta, got {type(m).__name__}")
        nan_box = (np.nan, np.nan, np.nan, np.nan)
        return cls.from_columns(
            case=[m.case for m in metas],
            item_id=[m.item_id for m in metas],
            frame_time=[np.nan if m.frame_time is None else m.frame_time for m in metas],
            bbox=np.array(
                [nan_box if m.bbox is None else m.bbox for m in metas], np.float64
            ).reshape(-1, 4),
            ref=[m.ref for m in metas],
        )

    @classmethod
    def from_columns(
        cls,
        *,
        case: str | Sequence[str],
        item_id: ArrayLike,
        frame_time: ArrayLike | None = None,
        bbox: ArrayLike | None = None,
        ref: Sequence[str | None] | None = None,
    ) -> IdMap:
        """Build a map for a batch of rows without making one :class:`Meta` per row.

        ``case`` may be one name for the whole batch; NaN in ``frame_time``/``bbox`` means None.
        """
        items = np.asarray(item_id, dtype=np.int64).reshape(-1)
        n = len(items)
        m = cls()
        if isinstance(case, str):
            cases = np.full(n, m._strings.encode([case])[0], np.int32)
        else:
            cases = m._strings.encode(case)
        times = (
            np.full(n, np.nan)
            if frame_time is None
            else np.asarray(frame_time, dtype=np.float64).reshape(-1)
        )
        boxes = (
            np.full((n, 4), np.nan)
            if bbox is None
            else np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
        )
        refs = np.full(n, _NONE, np.int32) if ref is None else m._strings.encode(ref)
        for name, col in (("case", cases), ("frame_time", times), ("bbox", boxes), ("ref", refs)):
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, item_id has {n}")
        m._case, m._item, m._time, m._bbox, m._ref = cases, items, times, boxes, refs
        m._n = n
        return m

    def extend(self, other: IdMap) -> None:
        """Append ``other``'s rows (re-coding its strings into this table)."""
        k = len(other)
        if k == 0:
            return
        table = other._strings
        uniq_case, inv_case = np.unique(other._case[:k], return_inverse=True)
        case = self._strings.encode(table.get(int(c)) for c in uniq_case)[inv_case]
        ref_src = other._ref[:k]
        ref = np.full(k, _NONE, np.int32)
        has = ref_src != _NONE
        if has.any():
            uniq_ref, inv_ref = np.unique(ref_src[has], return_inverse=True)
            ref[has] = self._strings.encode(table.get(int(c)) for c in uniq_ref)[inv_ref]
        self._reserve(k)
        n = self._n
        self._case[n : n + k] = case
        self._item[n : n + k] = other._item[:k]
        self._time[n : n + k] = other._time[:k]
        self._bbox[n : n + k] = other._bbox[:k]
        self._ref[n : n + k] = ref
        self._n = n + k

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        cap = len(self._item)
        if need <= cap:
            return
        new_cap = max(need, 2 * cap, 1024)
        n = self._n

        def grow(a: NDArray, fill: float | int) -> NDArray:  # type: ignore[type-arg]
            out = np.full((new_cap, *a.shape[1:]), fill, a.dtype)
            out[:n] = a[:n]
            return out

        self._case = grow(self._case, 0)
        self._item = grow(self._item, 0)
        self._time = grow(self._time, np.nan)
        self._bbox = grow(self._bbox, np.nan)
        self._ref = grow(self._ref, _NONE)

    def save(self, path: str | PathLike[str]) -> None:
        blob, offsets = self._strings.to_arrays()
        n = self._n
        with open(path, "wb") as f:
            np.savez(
                f,
                case=self._case[:n],
                item_id=self._item[:n],
                frame_time=self._time[:n],
                bbox=self._bbox[:n],
                ref=self._ref[:n],
                strings_blob=blob,
                strings_offsets=offsets,
            )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> IdMap:
        with np.load(Path(path), allow_pickle=False) as z:
            m = cls()
            m._case = z["case"].astype(np.int32, copy=False)
            m._item = z["item_id"].astype(np.int64, copy=False)
            m._time = z["frame_time"].astype(np.float64, copy=False)
            m._bbox = z["bbox"].astype(np.float64, copy=False).reshape(-1, 4)
            m._ref = z["ref"].astype(np.int32, copy=False)
            m._strings = _Strings.from_arrays(z["strings_blob"], z["strings_offsets"])
        m._n = len(m._item)
        if any(len(c) != m._n for c in (m._case, m._time, m._bbox, m._ref)):
            raise ValueError(f"{path}: id map columns have different lengths")
        return m


def as_id_map(metas: Sequence[Meta] | IdMap) -> IdMap:
    return metas if isinstance(metas, IdMap) else IdMap.from_metas(metas)


__all__ = ["BBox", "IdMap", "Meta", "as_id_map"]
