"""Grouping face embeddings into identities, with ids that survive re-runs and manual edits.

Clustering is Chinese whispers (the algorithm dlib ships for its face descriptors) over a k-NN
graph built with :class:`~heroes.index.float_index.FloatIndex`: an edge joins two faces whose
cosine similarity is at least ``min_similarity``. It needs no number of clusters, which nobody
knows in a seized collection, and costs O(edges) per pass.

Why 0.94: dlib's 128-d descriptors call two faces the same person below Euclidean distance 0.6
on the raw descriptors, whose norms are about 1.3-1.45 (measured on dlib's own output). On the
L2-normalised vectors indexed here that distance is about 0.6 / 1.37 = 0.44, and for unit vectors
``|a - b|^2 = 2 - 2 cos``, so the rule is cosine ~0.90. That is too loose for grouping: calibrated
on labelled public photos of 19 adults (74 photos from the MIT-licensed deepface and
face_recognition repositories; benchmarks/bench_face_pairs.py, docs/models.md), 0.90 put
different people together in 2 of 15 clusters and 0.92 still merged two actors, while 0.94 is the
lowest threshold at which no pair of different people reaches it (closest strangers 0.9365) and
``persons`` still made one pure cluster per person; 4% of same-person pairs fall below it, which
chains of neighbours mostly bridge. Merging two people misleads an investigator more than
splitting one, hence the higher side. Measured on benign sample photos: the astronaut against her
flipped, resized and video copies 0.957-0.991, against the cameraman 0.815-0.846. Other embedders
need their own threshold, hence the parameter.

Re-running on a grown collection must not renumber the identities an investigator has already
reviewed: each new cluster takes the id of the previous identity it shares most faces with
(greedy by overlap, one cluster per old id), and clusters with no such partner get fresh ids above
every id used before. Manual ``merge``/``split`` edits change the saved assignment and so steer
that matching, but a later re-clustering may still separate faces a person merged by hand.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heroes.index.float_index import FloatIndex, FloatIndexParams
from heroes.index.idmap import IdMap

DEFAULT_MIN_SIMILARITY = 0.94
FORMAT = "heroes.identities/1"

ItemKey = str | int


@dataclass(frozen=True, slots=True)
class IdentitySummary:
    identity: int
    faces: int
    items: int


class Identities:
    """Face ref -> identity id, plus each face's item, saved as JSON.

    Faces in clusters smaller than ``min_faces`` are left out (``identity_of`` returns None).
    """

    def __init__(
        self,
        assignment: Mapping[str, int] | None = None,
        items: Mapping[str, ItemKey] | None = None,
        next_id: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.assignment: dict[str, int] = dict(assignment or {})
        self.items: dict[str, ItemKey] = dict(items or {})
        used = max(self.assignment.values(), default=-1) + 1
        self.next_id = max(used, next_id or 0)
        self.params: dict[str, Any] = dict(params or {})

    def __len__(self) -> int:
        return len(set(self.assignment.values()))

    def ids(self) -> list[int]:
        return sorted(set(self.assignment.values()))

    def identity_of(self, ref: str) -> int | None:
        return self.assignment.get(ref)

    def refs(self, identity: int) -> list[str]:
        out = sorted(r for r, i in self.assignment.items() if i == identity)
        if not out:
            raise KeyError(f"no identity {identity}")
        return out

    def merge(self, a: int, b: int) -> int:
        """Move every face of identity ``b`` into ``a``; returns ``a``. ``b``'s id is retired."""
        if a == b:
            raise ValueError(f"cannot merge identity {a} with itself")
        self.refs(a)
        for r in self.refs(b):
            self.assignment[r] = a
        return a

    def split(self, identity: int, refs: Sequence[str]) -> int:
        """Move ``refs`` out of ``identity`` into a new identity; returns the new id."""
        current = set(self.refs(identity))
        moving = set(refs)
        if not moving:
            raise ValueError("split needs at least one face")
        stray = sorted(moving - current)
        if stray:
            raise ValueError(f"faces not in identity {identity}: {stray[:5]}")
        if moving == current:
            raise ValueError(f"split would leave identity {identity} empty; nothing to split")
        new = self._new_id()
        for r in moving:
            self.assignment[r] = new
        return new

    def _new_id(self) -> int:
        new = self.next_id
        self.next_id += 1
        return new

    def summary(self) -> list[IdentitySummary]:
        """Faces and distinct items per identity, largest first."""
        faces: Counter[int] = Counter(self.assignment.values())
        items: dict[int, set[ItemKey]] = defaultdict(set)
        for r, i in self.assignment.items():
            if r in self.items:
                items[i].add(self.items[r])
        return sorted(
            (IdentitySummary(i, n, len(items[i])) for i, n in faces.items()),
            key=lambda s: (-s.faces, s.identity),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "next_id": self.next_id,
            "params": self.params,
            "faces": self.assignment,
            "items": self.items,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Identities:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown identities format {data.get('format')!r}")
        return cls(data["faces"], data.get("items"), data.get("next_id"), data.get("params"))

    def save(self, path: str | PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Identities:
        return cls.from_json(json.loads(Path(path).read_text()))


def knn_graph(
    vectors: ArrayLike,
    *,
    k: int,
    min_similarity: float,
    index_params: FloatIndexParams | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Symmetric similarity graph in CSR form (indptr, neighbours, cosine).

    An edge exists when either face is among the other's ``k`` nearest and their cosine is at
    least ``min_similarity``. Zero vectors get no edges.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    index = FloatIndex(x.shape[1], index_params)
    index.add(x, IdMap.from_columns(case="", item_id=np.zeros(n, np.int64)))
    sims, rows = index.search_arrays(x, k + 1)
    src = np.repeat(np.arange(n, dtype=np.int64), rows.shape[1])
    dst, w = rows.reshape(-1), sims.reshape(-1)
    keep = (dst >= 0) & (dst != src) & (w >= min_similarity)
    src, dst, w = src[keep], dst[keep], w[keep]
    src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    w = np.concatenate([w, w])
    order = np.lexsort((-w, dst, src))
    src, dst, w = src[order], dst[order], w[order]
    first = np.ones(len(src), bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    src, dst, w = src[first], dst[first], w[first]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst, w


def chinese_whispers(
    indptr: NDArray[np.int64],
    neighbours: NDArray[np.int64],
    weights: NDArray[np.float32],
    *,
    seed: int = 0,
    max_iterations: int = 100,
) -> NDArray[np.int64]:
    """Label per node: each node in turn (seeded random order) takes the label with the largest
    summed edge weight among its neighbours, until a pass changes nothing. Ties go to the smaller
    label, so the result depends only on the graph and the seed."""
    n = len(indptr) - 1
    labels = list(range(n))
    nbrs = neighbours.tolist()
    ws = weights.astype(np.float64).tolist()
    bounds = indptr.tolist()
    rng = np.random.default_rng(seed)
    for _ in range(max_iterations):
        changed = False
        for i in rng.permutation(n).tolist():
            a, b = bounds[i], bounds[i + 1]
            if a == b:
                continue
            votes: dict[int, float] = {}
            for j, wj in zip(nbrs[a:b], ws[a:b], strict=True):
                lab = labels[j]
                votes[lab] = votes.get(lab, 0.0) + wj
            best = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            if best != labels[i]:
                labels[i] = best
                changed = True
        if not changed:
            break
    return np.asarray(labels, np.int64)


def _match_previous(clusters: list[list[str]], previous: Identities) -> list[int | None]:
    pairs: list[tuple[int, int, int]] = []
    for c, refs in enumerate(clusters):
        counts = Counter(previous.assignment[r] for r in refs if r in previous.assignment)
        pairs.extend((n, old, c) for old, n in counts.items())
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    matched: list[int | None] = [None] * len(clusters)
    taken: set[int] = set()
    for _, old, c in pairs:
        if matched[c] is None and old not in taken:
            matched[c] = old
            taken.add(old)
    return matched


def cluster_faces(
    vectors: ArrayLike,
    refs: Sequence[str],
    *,
    items: Sequence[ItemKey] | None = None,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    k: int = 32,
    min_faces: int = 2,
    seed: int = 0,
    max_iterations: int = 100,
    previous: Identities | None = None,
    index_params: FloatIndexParams | None = None,
) -> Identities:
    """Group faces into identities; pass the last result as ``previous`` to keep its ids.

    ``refs`` name the faces (unique), ``items`` optionally the item each face came from (for the
    per-identity item count). ``k`` bounds the neighbours per face in the graph: a person seen in
    more than ``k`` faces still forms one cluster through chains of neighbours.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (faces, dim), got shape {x.shape}")
    if len(refs) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(refs)} refs")
    if len(set(refs)) != len(refs):
        raise ValueError("face refs must be unique")
    if items is not None and len(items) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(items)} items")
    if min_faces < 1:
        raise ValueError(f"min_faces must be at least 1, got {min_faces}")
    graph = knn_graph(x, k=k, min_similarity=min_similarity, index_params=index_params)
    labels = chinese_whispers(*graph, seed=seed, max_iterations=max_iterations)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels.tolist()):
        groups[lab].append(i)
    members = sorted(
        (g for g in groups.values() if len(g) >= min_faces), key=lambda g: (-len(g), g[0])
    )
    clusters = [[refs[i] for i in g] for g in members]
    params = {"min_similarity": min_similarity, "k": k, "min_faces": min_faces, "seed": seed}
    result = Identities(next_id=previous.next_id if previous else 0, params=params)
    matched = _match_previous(clusters, previous) if previous else [None] * len(clusters)
    for refs_c, old in zip(clusters, matched, strict=True):
        ident = old if old is not None else result._new_id()
        for r in refs_c:
            result.assignment[r] = ident
    result.next_id = max(result.next_id, max(result.assignment.values(), default=-1) + 1)
    if items is not None:
        result.items = {
            r: (it.item() if isinstance(it, np.generic) else it)
            for r, it in zip(refs, items, strict=True)
        }
    return result


__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "Identities",
    "IdentitySummary",
    "chinese_whispers",
    "cluster_faces",
    "knn_graph",
]
