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
