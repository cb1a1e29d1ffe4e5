"""Seeded data and numpy brute-force oracles for the index tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from heroes.index import IdMap

Clustered = Callable[..., tuple[NDArray[np.float32], NDArray[np.int64]]]


def clustered_vectors(
    n: int, dim: int, *, centres: int = 30, sigma: float = 0.6, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Unit vectors scattered around ``centres`` random unit centres; returns (vectors, labels).

    ``sigma`` is the noise norm relative to the unit centre: points of one cluster have cosine
    about ``1 / (1 + sigma**2)`` with each other and about 0 with other clusters.
    """
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    labels = rng.integers(0, centres, n)
    x = c[labels] + sigma / np.sqrt(dim) * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def cosine_topk(
    x: NDArray[np.float32], q: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Oracle: rows ordered by (cosine desc, row asc), top ``k``; zero rows excluded."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ xn.T.astype(np.float64)
    sims[:, np.linalg.norm(x, axis=1) == 0] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def hamming(codes: NDArray[np.uint8], q: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Oracle: Hamming distance of every query (rows of ``q``) to every code."""
    return np.bitwise_count(q[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int64)


def id_map(n: int, case: str = "case-a", start: int = 0) -> IdMap:
    rows = np.arange(start, start + n)
    return IdMap.from_columns(
        case=case,
        item_id=rows,
        frame_time=np.where(rows % 3 == 0, rows * 0.5, np.nan),
        bbox=np.where(
            (rows % 2 == 0)[:, None], np.stack([rows, rows, rows + 1, rows + 2], 1), np.nan
        ),
        ref=[f"face-{r}" if r % 5 else None for r in rows],
    )


@pytest.fixture
def clustered() -> Clustered:
    return clustered_vectors


@pytest.fixture
def oracle() -> Callable[..., tuple[NDArray[np.int64], NDArray[np.float64]]]:
    return cosine_topk


@pytest.fixture
def hamming_oracle() -> Callable[..., NDArray[np.int64]]:
    return hamming


@pytest.fixture
def metas() -> Callable[..., IdMap]:
    return id_map
