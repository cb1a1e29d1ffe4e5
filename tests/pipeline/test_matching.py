"""PDQ matching and visual groups against a brute-force oracle."""

from __future__ import annotations

import numpy as np

from heroes.pipeline.matching import hamming, nearest_within, visual_groups


def _oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = np.unpackbits(a, axis=1).astype(int)
    bb = np.unpackbits(b, axis=1).astype(int)
    return (ab[:, None, :] != bb[None, :, :]).sum(axis=2)


def _flip_bits(h: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(h)
    idx = rng.choice(256, n, replace=False)
    bits[idx] ^= 1
    return np.packbits(bits)


def test_hamming_equals_bitwise_oracle() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    assert (hamming(a, b) == _oracle(a, b)).all()


def test_nearest_within_finds_planted_near_duplicates_only() -> None:
    rng = np.random.default_rng(1)
    refs = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    near = np.stack([_flip_bits(refs[i], 20, rng) for i in range(10)])
    far = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    best, dist = nearest_within(np.concatenate([near, far]), refs, 31)
    assert best[:10].tolist() == list(range(10)) and (dist[:10] == 20).all()
    assert (best[10:] == -1).all()


def test_empty_inputs_give_no_matches() -> None:
    best, _ = nearest_within(np.zeros((0, 32), np.uint8), np.zeros((3, 32), np.uint8), 31)
    assert best.size == 0
    best, _ = nearest_within(np.zeros((2, 32), np.uint8), np.zeros((0, 32), np.uint8), 31)
    assert (best == -1).all()
    assert visual_groups(np.zeros((0, 32), np.uint8), np.zeros(0, np.int64), 31) == {}


def test_visual_groups_are_transitive_and_named_by_smallest_id() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, 32, dtype=np.uint8)
    b = _flip_bits(a, 25, rng)  # a-b 25
    c = _flip_bits(b, 25, rng)  # b-c 25, a-c up to 50: joined through b
    lone = rng.integers(0, 256, 32, dtype=np.uint8)
    hashes = np.stack([c, lone, a, b])
    owners = np.array([30, 40, 10, 20], dtype=np.int64)
    groups = visual_groups(hashes, owners, 31)
    assert groups == {10: 10, 20: 10, 30: 10}


def test_a_video_owning_several_frames_joins_one_group() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, 32, dtype=np.uint8)
    other = rng.integers(0, 256, 32, dtype=np.uint8)
    hashes = np.stack([frame, other, _flip_bits(frame, 5, rng)])
    owners = np.array([7, 7, 3], dtype=np.int64)
    assert visual_groups(hashes, owners, 31) == {3: 3, 7: 3}


def _groups_oracle(
    hashes: np.ndarray, owners: np.ndarray, max_d: int, variants: np.ndarray, v_owners: np.ndarray
) -> dict[int, int]:
    """Groups by a breadth-first walk over every pair within ``max_d`` (items, their variants)."""
    near: dict[int, set[int]] = {int(o): set() for o in owners}
    d = _oracle(hashes, hashes)
    for i, j in zip(*np.nonzero(d <= max_d), strict=True):
        near[int(owners[i])].add(int(owners[j]))
        near[int(owners[j])].add(int(owners[i]))
    if len(variants):
        dv = _oracle(variants, hashes)
        for i, j in zip(*np.nonzero(dv <= max_d), strict=True):
            if int(v_owners[i]) in near:
                near[int(v_owners[i])].add(int(owners[j]))
                near[int(owners[j])].add(int(v_owners[i]))
    out: dict[int, int] = {}
    for start in sorted(near):
        if start in out:
            continue
        seen, todo = {start}, [start]
        while todo:
            for nxt in near[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        if len(seen) > 1:
            out.update({m: min(seen) for m in seen})
    return out


def test_visual_groups_equal_a_breadth_first_walk_on_random_chains_and_clusters() -> None:
    """Chains of near copies (joined only through each other), clusters, videos owning several
    hashes, variants (some of items with no hash of their own), item ids in any order."""
    rng = np.random.default_rng(7)
    for trial in range(25):
        hashes, owners = [], []
        ids = rng.permutation(10_000)[:200].astype(np.int64)
        k = 0
        for _chain in range(int(rng.integers(1, 12))):
            h = rng.integers(0, 256, 32, dtype=np.uint8)
            for _link in range(int(rng.integers(1, 9))):
                hashes.append(h)
                # a video (same owner as the last hash) now and then
                owners.append(owners[-1] if owners and rng.random() < 0.15 else int(ids[k]))
                k += 1
                h = _flip_bits(h, int(rng.integers(5, 40)), rng)
        mat, own = np.stack(hashes), np.array(owners, dtype=np.int64)
        picks = rng.integers(0, len(mat), int(rng.integers(0, 6)))
        variants = np.stack([_flip_bits(mat[p], 20, rng) for p in picks] or [mat[0]])[: len(picks)]
        v_owners = np.array(
            [int(ids[-1]) if rng.random() < 0.2 else int(own[p]) for p in picks], dtype=np.int64
        )
        got = visual_groups(mat, own, 31, variants, v_owners)
        assert got == _groups_oracle(mat, own, 31, variants, v_owners), trial
