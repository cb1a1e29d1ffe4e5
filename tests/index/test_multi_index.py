from __future__ import annotations

import numpy as np
import pytest

from heroes.index import (
    BinaryIndex,
    FloatIndex,
    ShardedSearcher,
    load_index,
    range_search_many,
    search_many,
)


def unit(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a), 0, 0], np.float32)


@pytest.fixture
def two_cases(metas):
    a, b = FloatIndex(4), FloatIndex(4)
    a.add(np.stack([unit(10), unit(40), unit(80)]), metas(3, case="case-a"))
    b.add(np.stack([unit(5), unit(30), unit(170)]), metas(3, case="case-b"))
    return a, b


def test_hits_from_several_cases_are_merged_by_score(two_cases):
    hits = search_many(two_cases, unit(0), 4)[0]
    assert [(h.meta.case, h.row) for h in hits] == [
        ("case-b", 0),
        ("case-a", 0),
        ("case-b", 1),
        ("case-a", 1),
    ]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_merged_ties_are_ordered_by_case_then_row_whatever_the_index_order(metas):
    a, b = FloatIndex(4), FloatIndex(4)
    a.add(np.stack([unit(0), unit(0)]), metas(2, case="a"))
    b.add(np.stack([unit(0)]), metas(1, case="b"))
    for order in ([a, b], [b, a]):
        assert [(h.meta.case, h.row) for h in search_many(order, unit(0), 3)[0]] == [
            ("a", 0),
            ("a", 1),
            ("b", 0),
        ]


def test_range_search_many_keeps_every_hit_within_the_radius(two_cases):
    hits = range_search_many(two_cases, unit(0), 1 - np.cos(np.deg2rad(35)))[0]
    assert {(h.meta.case, h.row) for h in hits} == {("case-a", 0), ("case-b", 0), ("case-b", 1)}


def test_indexes_of_different_kinds_or_dimensions_cannot_be_merged(two_cases):
    with pytest.raises(ValueError, match="different kind/dim"):
        search_many([two_cases[0], BinaryIndex()], unit(0), 3)
    with pytest.raises(ValueError, match="different kind/dim"):
        ShardedSearcher([two_cases[0], FloatIndex(8)])
    with pytest.raises(ValueError, match="at least one"):
        search_many([], unit(0), 3)


def test_sharded_searcher_loads_saved_cases_of_any_kind(two_cases, metas, tmp_path):
    dirs = [ix.save(tmp_path / f"case{i}") for i, ix in enumerate(two_cases)]
    searcher = ShardedSearcher.load(dirs)
    assert len(searcher) == 6
    assert searcher.search(unit(0), 4) == search_many(two_cases, unit(0), 4)
    pdq = BinaryIndex()
    pdq.add(np.zeros((1, 32), np.uint8), metas(1))
    assert isinstance(load_index(pdq.save(tmp_path / "pdq")), BinaryIndex)
    assert isinstance(load_index(dirs[0], mmap=False), FloatIndex)
    with pytest.raises(FileNotFoundError, match="no saved index"):
        load_index(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a binary one"):
        BinaryIndex.load(dirs[0])
