from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from heroes.index import (
    FloatIndex,
    FloatIndexParams,
    IdMap,
    Meta,
    choose_float_index_type,
    choose_nlist,
)

DIM = 32
N = 3000

# (index type, params forcing it at test size, recall@10 it must reach against the oracle)
APPROXIMATE = [
    ("ivf", FloatIndexParams(flat_max=500), 0.95),
    ("hnsw", FloatIndexParams(flat_max=500, approximate="hnsw"), 0.95),
    ("ivfpq", FloatIndexParams(flat_max=500, memory_budget_bytes=1, pq_dims_per_code=2), 0.70),
]
ALL_TYPES = [("flat", FloatIndexParams(), 1.0), *APPROXIMATE]


def build(params: FloatIndexParams, x: np.ndarray, metas) -> FloatIndex:
    index = FloatIndex(x.shape[1], params)
    index.add(x, metas(len(x)))
    return index


def rows_of(hits) -> list[list[int]]:
    return [[h.row for h in per_query] for per_query in hits]


def recall_at(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.fixture
def data(clustered):
    x, _ = clustered(N + 100, DIM, seed=1)
    return x[:N], x[N:]


def test_flat_index_returns_exactly_the_oracle_neighbours(data, oracle, metas):
    x, q = data
    index = build(FloatIndexParams(), x, metas)
    hits = index.search(q, 10)
    truth, sims = oracle(x, q, 10)
    assert index.index_type == "flat"
    assert rows_of(hits) == truth.tolist()
    np.testing.assert_allclose([[h.score for h in r] for r in hits], sims, atol=1e-5)
    np.testing.assert_allclose([[h.distance for h in r] for r in hits], 1 - sims, atol=1e-5)


@pytest.mark.parametrize(("kind", "params", "recall"), APPROXIMATE, ids=[a[0] for a in APPROXIMATE])
def test_approximate_index_reaches_its_stated_recall_against_the_oracle(
    kind, params, recall, data, oracle, metas
):
    x, q = data
    index = build(params, x, metas)
    truth, _ = oracle(x, q, 10)
    assert index.index_type == kind
    assert recall_at(rows_of(index.search(q, 10)), truth) >= recall


def test_hits_carry_the_meta_of_their_row(data, metas):
    x, q = data
    index = build(FloatIndexParams(), x, metas)
    hit = index.search(x[6:7], 1)[0][0]
    assert hit.row == 6
    assert hit.meta == Meta("case-a", 6, 3.0, (6.0, 6.0, 7.0, 8.0), "face-6")
    assert index.meta(5) == Meta("case-a", 5, None, None, None)


@pytest.mark.parametrize("params", [p for _, p, _ in ALL_TYPES], ids=[a[0] for a in ALL_TYPES])
def test_empty_index_returns_no_hits(params):
    index = FloatIndex(DIM, params)
    q = np.ones((3, DIM), np.float32)
    assert len(index) == 0
    assert index.search(q, 5) == [[], [], []]
    assert index.range_search(q, 0.5) == [[], [], []]


def test_single_vector_index_returns_it_whatever_k(metas):
    index = FloatIndex(DIM)
    v = np.arange(DIM, dtype=np.float32)
    index.add(v, metas(1))
    hits = index.search(v[None] * 3, 10)[0]
    assert [h.row for h in hits] == [0]
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_duplicate_vectors_are_all_returned_with_equal_scores_in_row_order(data, metas):
    x, _ = data
    dup = np.concatenate([x[:50], np.repeat(x[7:8], 4, axis=0)])
    index = build(FloatIndexParams(), dup, metas)
    hits = index.search(x[7:8], 5)[0]
    assert [h.row for h in hits] == [7, 50, 51, 52, 53]
    assert len({round(h.score, 5) for h in hits}) == 1


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "copy"])
@pytest.mark.parametrize("params", [p for _, p, _ in ALL_TYPES], ids=[a[0] for a in ALL_TYPES])
def test_saved_index_loads_back_with_the_same_answers(params, mmap, data, metas, tmp_path):
    x, q = data
    index = build(params, x, metas)
    index.save(tmp_path / "ix")
    loaded = FloatIndex.load(tmp_path / "ix", mmap=mmap)
    assert (loaded.index_type, len(loaded), loaded.dim) == (index.index_type, N, DIM)
    assert loaded.params == index.params
    assert loaded.search(q[:20], 10) == index.search(q[:20], 10)
    assert loaded.meta(N - 1) == index.meta(N - 1)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "copy"])
@pytest.mark.parametrize("params", [p for _, p, _ in ALL_TYPES], ids=[a[0] for a in ALL_TYPES])
def test_adding_after_load_extends_the_index_instead_of_rebuilding(
    params, mmap, data, metas, tmp_path
):
    x, _ = data
    index = build(params, x[:2500], metas)
    index.save(tmp_path / "ix")
    loaded = FloatIndex.load(tmp_path / "ix", mmap=mmap)
    before = faiss.extract_index_ivf(loaded.faiss_index) if "ivf" in loaded.index_type else None
    centroids = before.quantizer.reconstruct_n(0, before.nlist) if before else None
    rows = loaded.add(x[2500:], metas(500, case="case-b", start=2500))
    assert rows == range(2500, 3000)
    assert len(loaded) == 3000 and loaded.index_type == index.index_type
    if centroids is not None:
        after = faiss.extract_index_ivf(loaded.faiss_index)
        np.testing.assert_array_equal(after.quantizer.reconstruct_n(0, after.nlist), centroids)
    hit = loaded.search(x[2900:2901], 1)[0][0]
    assert (hit.row, hit.meta.case) == (2900, "case-b")
    loaded.save(tmp_path / "ix")
    assert len(FloatIndex.load(tmp_path / "ix")) == 3000


def test_flat_index_migrates_once_when_it_grows_past_the_threshold(data, metas):
    x, q = data
    index = FloatIndex(DIM, FloatIndexParams(flat_max=1000))
    index.add(x[:800], metas(800))
    assert index.index_type == "flat"
    index.add(x[800:1600], metas(800, start=800))
    assert index.index_type == "ivf"
    migrated = index.faiss_index
    index.add(x[1600:], metas(N - 1600, start=1600))
    assert index.faiss_index is migrated and len(index) == N
    assert index.search(x[10:11], 1)[0][0].row == 10
    assert index.search(x[1700:1701], 1)[0][0].row == 1700


@pytest.mark.parametrize("bad", [np.zeros((2, DIM + 1)), np.zeros(DIM - 1), np.zeros((1, 2, DIM))])
def test_wrong_dimension_is_a_value_error_naming_the_expected_shape(bad, metas):
    index = FloatIndex(DIM)
    with pytest.raises(ValueError, match=rf"\(n, {DIM}\)"):
        index.search(bad, 3)
    with pytest.raises(ValueError, match=rf"\(n, {DIM}\)"):
        index.add(bad, metas(len(bad)))


def test_non_finite_vectors_and_mismatched_metas_are_refused(metas):
    index = FloatIndex(DIM)
    bad = np.ones((2, DIM), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add(bad, metas(2))
    with pytest.raises(ValueError, match="metas"):
        index.add(np.ones((2, DIM), np.float32), metas(3))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.ones(DIM), 0)


def test_meta_of_a_row_out_of_range_is_an_index_error(metas):
    index = FloatIndex(DIM)
    index.add(np.ones((3, DIM), np.float32), metas(3))
    with pytest.raises(IndexError, match="row 3 is out of range for an index of 3 rows"):
        index.meta(3)


@pytest.mark.parametrize("params", [p for _, p, _ in ALL_TYPES], ids=[a[0] for a in ALL_TYPES])
def test_zero_vectors_are_stored_but_never_returned(params, data, metas, tmp_path):
    x, _ = data
    x = x.copy()
    zero_rows = [0, 5, 2999]
    x[zero_rows] = 0
    index = build(params, x, metas)
    assert len(index) == N and index.zero_rows.tolist() == zero_rows
    for ix in (index, FloatIndex.load(index.save(tmp_path / "ix"))):
        found = {h.row for r in ix.search(x[1:8], 50) for h in r}
        found |= {h.row for r in ix.range_search(x[1:8], 2.0) for h in r}
        assert found and not found & set(zero_rows)
        assert ix.search(np.zeros((1, DIM)), 5) == [[]]
        assert ix.range_search(np.zeros((1, DIM)), 2.0) == [[]]


def test_flat_range_search_equals_the_oracle(data, oracle, metas):
    x, q = data
    index = build(FloatIndexParams(), x, metas)
    radius = 0.3
    order, sims = oracle(x, q, N)
    for hits, o, s in zip(index.range_search(q, radius), order, sims, strict=True):
        found = [h.row for h in hits]
        assert set(o[s >= 1 - radius + 1e-5].tolist()) <= set(found)
        assert set(found) <= set(o[s >= 1 - radius - 1e-5].tolist())
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize(("kind", "params", "recall"), APPROXIMATE, ids=[a[0] for a in APPROXIMATE])
def test_approximate_range_search_reaches_its_stated_recall(
    kind, params, recall, data, oracle, metas
):
    x, q = data
    index = build(params, x, metas)
    order, sims = oracle(x, q, N)
    radius = 0.3
    found = [{h.row for h in hits} for hits in index.range_search(q, radius)]
    truth = [set(o[s >= 1 - radius].tolist()) for o, s in zip(order, sims, strict=True)]
    total = sum(len(t) for t in truth)
    assert total > 0
    assert sum(len(f & t) for f, t in zip(found, truth, strict=True)) / total >= recall - 0.05


def test_size_rule_follows_the_thresholds():
    p = FloatIndexParams()
    assert choose_float_index_type(50_000, 512, p) == "flat"
    assert choose_float_index_type(50_001, 512, p) == "ivf"
    assert choose_float_index_type(1_000_000, 512, p) == "ivf"
    assert choose_float_index_type(3_000_000, 512, p) == "ivfpq"
    assert choose_float_index_type(3_000_000, 512, FloatIndexParams(approximate="hnsw")) == "hnsw"
    for n in (100_000, 1_000_000, 10_000_000):
        assert 4 * math.sqrt(n) <= choose_nlist(n, p) <= 16 * math.sqrt(n)
    assert choose_nlist(1_000_000, p) == 4096
    assert choose_nlist(3000, p) == 3000 // p.train_per_list


def test_search_uses_a_gpu_replica_when_faiss_reports_gpus(data, metas, monkeypatch):
    x, q = data
    index = build(FloatIndexParams(), x, metas)
    expected = index.search(q[:5], 10)
    replicas = []

    def to_gpus(cpu_index):
        replicas.append(faiss.clone_index(cpu_index))
        return replicas[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    assert index.search(q[:5], 10) == expected
    assert index.search(q[:5], 10) == expected
    assert len(replicas) == 1
    index.add(x[:1], metas(1))
    index.search(q[:1], 3)
    assert len(replicas) == 2


def test_search_falls_back_to_the_cpu_when_faiss_cannot_clone_to_the_gpu(data, metas, monkeypatch):
    x, q = data
    index = build(FloatIndexParams(), x, metas)
    expected = index.search(q[:5], 10)

    def refuse(cpu_index):
        raise RuntimeError("not implemented on GPU")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", refuse)
    assert index.search(q[:5], 10) == expected


def test_saving_over_the_directory_an_index_is_mapped_from_keeps_both_usable(data, metas, tmp_path):
    x, q = data
    build(FloatIndexParams(flat_max=500), x[:2000], metas).save(tmp_path / "ix")
    mapped = FloatIndex.load(tmp_path / "ix", mmap=True)
    before = mapped.search(q[:5], 10)
    bigger = FloatIndex.load(tmp_path / "ix", mmap=False)
    bigger.add(x[2000:], metas(N - 2000, start=2000))
    bigger.save(tmp_path / "ix")
    assert mapped.search(q[:5], 10) == before
    assert len(FloatIndex.load(tmp_path / "ix")) == N


def test_bulk_search_arrays_pad_missing_results(data, metas):
    x, q = data
    index = build(FloatIndexParams(), x[:3], metas)
    sims, rows = index.search_arrays(np.concatenate([q[:1], np.zeros((1, DIM))]), 5)
    assert rows.shape == (2, 3) and (rows[1] == -1).all() and np.isneginf(sims[1]).all()
    assert sorted(rows[0].tolist()) == [0, 1, 2]


def test_id_map_columns_can_be_added_in_bulk():
    index = FloatIndex(4)
    ids = IdMap.from_columns(case=["a", "b"], item_id=[10, 11], ref=["x", None])
    index.add(np.eye(4, dtype=np.float32)[:2], ids)
    assert index.meta(1) == Meta("b", 11)
    assert index.meta(0) == Meta("a", 10, ref="x")
