from __future__ import annotations

import numpy as np
import pytest

from heroes.index import (
    PDQ_MATCH_RADIUS,
    BinaryIndex,
    BinaryIndexParams,
    Meta,
    hashes_from_hex,
    hashes_to_hex,
)

N = 5000
PARAMS = {
    "flat": BinaryIndexParams(),
    "multihash": BinaryIndexParams(multihash_min=1000),
}


def flip_bits(code: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(bits.size, n, replace=False)] ^= 1
    return np.packbits(bits)


@pytest.fixture
def planted():
    """Random hashes plus, for each of 60 queries, one stored copy at distance 0..31."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (N, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (60, 32), dtype=np.uint8)
    rows = rng.choice(N, len(queries), replace=False)
    dists = np.concatenate([[0, 1, 30, 31, 31, 31], rng.integers(0, 32, len(queries) - 6)])
    for q, r, d in zip(queries, rows, dists, strict=True):
        codes[r] = flip_bits(q, int(d), rng)
    return codes, queries, rows, dists


def build(kind: str, codes: np.ndarray, metas) -> BinaryIndex:
    index = BinaryIndex(params=PARAMS[kind])
    index.add(codes, metas(len(codes)))
    return index


@pytest.mark.parametrize("kind", list(PARAMS))
def test_range_search_at_radius_31_finds_every_planted_near_duplicate(
    kind, planted, hamming_oracle, metas
):
    codes, queries, rows, dists = planted
    index = build(kind, codes, metas)
    assert index.index_type == kind
    truth = hamming_oracle(codes, queries)
    hits = index.range_search(queries, PDQ_MATCH_RADIUS)
    for h, t, row, d in zip(hits, truth, rows, dists, strict=True):
        assert {x.row for x in h} == set(np.flatnonzero(t <= 31).tolist())
        assert any(x.row == row and x.distance == d for x in h)
        assert [x.distance for x in h] == sorted(x.distance for x in h)


@pytest.mark.parametrize("kind", list(PARAMS))
def test_knn_search_matches_the_numpy_hamming_oracle(kind, planted, hamming_oracle, metas):
    codes, queries, _, _ = planted
    index = build(kind, codes, metas)
    truth = hamming_oracle(codes, queries)
    for hits, t in zip(index.search(queries, 10), truth, strict=True):
        order = np.lexsort((np.arange(N), t))[:10]
        assert [h.distance for h in hits] == t[order].tolist()
        kth = t[order[-1]]
        assert [h.row for h in hits if h.distance < kth] == [r for r in order if t[r] < kth]
        assert all(h.score == 1 - h.distance / 256 for h in hits)


def test_radius_is_inclusive(metas):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.stack([flip_bits(q, 31, rng), flip_bits(q, 32, rng)])
    index = build("flat", codes, metas)
    assert [h.row for h in index.range_search(q, 31)[0]] == [0]
    assert [h.row for h in index.range_search(q, 32)[0]] == [0, 1]


def test_multihash_answers_radii_beyond_its_guarantee_from_storage(planted, hamming_oracle, metas):
    codes, queries, _, _ = planted
    index = build("multihash", codes, metas)
    assert index.exact_radius == 31
    truth = hamming_oracle(codes, queries[:5])
    for hits, t in zip(index.range_search(queries[:5], 90), truth, strict=True):
        assert {h.row for h in hits} == set(np.flatnonzero(t <= 90).tolist())


def test_hex_and_packed_queries_give_the_same_hits(planted, metas):
    codes, queries, _, _ = planted
    index = BinaryIndex()
    index.add(hashes_to_hex(codes), metas(N))
    assert index.search(hashes_to_hex(queries[:3]), 4) == index.search(queries[:3], 4)
    assert index.search(hashes_to_hex(queries[:1])[0], 4) == index.search(queries[:1], 4)
    assert hashes_from_hex(hashes_to_hex(codes[:3])).tolist() == codes[:3].tolist()


@pytest.mark.parametrize(
    "bad",
    ["zz" * 32, "ab" * 31, ["ab" * 32, "ab"], np.zeros((2, 31), np.uint8), np.zeros((2, 32))],
)
def test_malformed_hashes_are_a_value_error(bad):
    with pytest.raises(ValueError):
        BinaryIndex().search(bad, 1)


def test_empty_and_single_hash_indexes(metas):
    index = BinaryIndex()
    q = np.zeros((2, 32), np.uint8)
    assert index.search(q, 3) == [[], []]
    assert index.range_search(q, 31) == [[], []]
    assert index.range_search_variants([q, q], 31) == [[], []]
    index.add(q[:1], metas(1))
    assert [[h.row for h in r] for r in index.search(q, 3)] == [[0], [0]]


def test_duplicate_hashes_are_all_returned_in_row_order(metas):
    code = np.full((1, 32), 7, np.uint8)
    index = BinaryIndex()
    index.add(np.repeat(code, 3, axis=0), metas(3))
    assert [h.row for h in index.range_search(code, 0)[0]] == [0, 1, 2]


def test_variant_sets_merge_to_the_best_distance_per_row(metas):
    rng = np.random.default_rng(3)
    variants = rng.integers(0, 256, (8, 32), dtype=np.uint8)
    a_close = flip_bits(variants[3], 5, rng)
    b_close = flip_bits(variants[6], 10, rng)
    codes = np.stack([a_close, b_close, rng.integers(0, 256, 32, dtype=np.uint8)])
    index = build("flat", codes, metas)
    other = rng.integers(0, 256, (2, 32), dtype=np.uint8)
    hits = index.range_search_variants([variants, hashes_to_hex(other)], 31)
    assert [(h.row, h.distance) for h in hits[0]] == [(0, 5.0), (1, 10.0)]
    assert hits[1] == []
    knn = index.search_variants([variants], 2)[0]
    assert [(h.row, h.distance) for h in knn] == [(0, 5.0), (1, 10.0)]
    assert index.search_dihedral(variants[None], radius=31) == hits[:1]
    assert index.search_dihedral(variants[None], k=2) == [knn]
    with pytest.raises(ValueError, match="exactly one"):
        index.search_dihedral([variants], k=2, radius=31)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "copy"])
@pytest.mark.parametrize("kind", list(PARAMS))
def test_saved_binary_index_round_trips_and_extends(kind, mmap, planted, metas, tmp_path):
    codes, queries, _, _ = planted
    index = build(kind, codes[:4000], metas)
    index.save(tmp_path / "pdq")
    loaded = BinaryIndex.load(tmp_path / "pdq", mmap=mmap)
    assert (loaded.index_type, len(loaded)) == (kind, 4000)
    assert loaded.range_search(queries, 31) == index.range_search(queries, 31)
    loaded.add(codes[4000:], metas(N - 4000, start=4000))
    full = build(kind, codes, metas)
    assert loaded.range_search(queries, 31) == full.range_search(queries, 31)
    assert loaded.index_type == kind


def test_add_moves_to_multihash_once_past_its_threshold(planted, metas):
    codes, queries, _, _ = planted
    index = BinaryIndex(params=BinaryIndexParams(multihash_min=3000))
    index.add(codes[:2000], metas(2000))
    assert index.index_type == "flat"
    index.add(codes[2000:], metas(N - 2000, start=2000))
    assert index.index_type == "multihash"
    assert index.range_search(queries, 31) == build("flat", codes, metas).range_search(queries, 31)


def test_binary_hits_carry_their_meta(metas):
    index = BinaryIndex()
    index.add(np.zeros((1, 32), np.uint8), [Meta("case-x", 42, 1.5, None, "frame-3")])
    assert index.search(np.zeros((1, 32), np.uint8), 1)[0][0].meta == Meta(
        "case-x", 42, 1.5, None, "frame-3"
    )
