"""Mirrored and rotated copies: PDQ's dihedral hashes let a flipped copy of a known image match
its hash-set entry and join its original's visual group, while the record's ``pdq`` stays the
hash of the file as it is."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from heroes.config import Settings
from heroes.pipeline.decode import analyze_image, pdq_distance, pdq_hex
from heroes.pipeline.matching import (
    PDQ_DIHEDRAL,
    hamming,
    nearest_within_variants,
    pairs_within,
    visual_groups,
)
from heroes.pipeline.report import records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore

MAX_D = 31


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())


@pytest.fixture(scope="module")
def rocket() -> Image.Image:
    return Image.fromarray(data.rocket())


def _rand(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 32), dtype=np.uint8)


def _flip_bits(rows: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    out = rows.copy()
    for row in out:
        for b in rng.choice(256, size=bits, replace=False):
            row[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def test_the_first_dihedral_hash_is_the_plain_hash_and_the_others_differ(
    coffee: Image.Image,
) -> None:
    result = analyze_image(_jpeg(coffee))
    assert result.pdq_dihedral is not None and len(result.pdq_dihedral) == len(PDQ_DIHEDRAL)
    assert result.pdq_dihedral[0] == result.pdq
    assert all(pdq_distance(result.pdq, h) > MAX_D for h in result.pdq_dihedral[1:])


@pytest.mark.parametrize(
    ("transpose", "undo"),
    [
        (Image.Transpose.FLIP_LEFT_RIGHT, "flip_y"),
        (Image.Transpose.FLIP_TOP_BOTTOM, "flip_x"),
        (Image.Transpose.ROTATE_90, "rotate_270"),
        (Image.Transpose.ROTATE_180, "rotate_180"),
        (Image.Transpose.ROTATE_270, "rotate_90"),
        (Image.Transpose.TRANSPOSE, "flip_plus_1"),
        (Image.Transpose.TRANSVERSE, "flip_minus_1"),
    ],
)
def test_each_transform_of_a_copy_finds_the_original_hash_through_the_variant_that_undoes_it(
    coffee: Image.Image, transpose: Image.Transpose, undo: str
) -> None:
    original = analyze_image(_jpeg(coffee)).pdq
    copy = analyze_image(_jpeg(coffee.transpose(transpose)))
    assert copy.pdq_dihedral is not None
    distances = [pdq_distance(h, original) for h in copy.pdq_dihedral]
    print(f"{transpose.name}: {distances}")
    assert int(np.argmin(distances)) == PDQ_DIHEDRAL.index(undo)
    # a JPEG copy mirrored left to right drifts most (about 20 bits at the 512 px working size)
    assert min(distances) <= 24
    assert sorted(distances)[1] > MAX_D


def test_nearest_within_variants_prefers_the_query_itself_and_names_the_variant() -> None:
    rng = np.random.default_rng(7)
    refs = _rand(rng, 50)
    queries = np.stack([_flip_bits(refs[3:4], 5, rng)[0], _rand(rng, 1)[0], _rand(rng, 1)[0]])
    variants = np.stack(
        [
            _flip_bits(refs[3:4], 5, rng)[0],  # query 0: as close as the query itself
            _flip_bits(refs[9:10], 2, rng)[0],  # query 1: found only through a variant
            _rand(rng, 1)[0],  # query 1: a variant that finds nothing
        ]
    )
    variant_of = np.array([0, 1, 1], dtype=np.int64)
    best, dist, found_by = nearest_within_variants(queries, refs, MAX_D, variants, variant_of)
    assert best.tolist() == [3, 9, -1]
    assert dist[:2].tolist() == [5, 2]
    assert found_by.tolist() == [-1, 1, -1]
    plain_best, _d, plain_by = nearest_within_variants(queries, refs, MAX_D)
    assert plain_best.tolist() == [3, -1, -1] and plain_by.tolist() == [-1, -1, -1]


def test_nearest_within_variants_agrees_with_a_brute_force_oracle() -> None:
    rng = np.random.default_rng(11)
    refs = _rand(rng, 200)
    queries = np.concatenate([_flip_bits(refs[:20], 20, rng), _rand(rng, 20)])
    variants = np.concatenate([_flip_bits(refs[20:60], 25, rng), _rand(rng, 40)])
    variant_of = rng.integers(0, len(queries), size=len(variants)).astype(np.int64)
    best, dist, found_by = nearest_within_variants(queries, refs, MAX_D, variants, variant_of)
    for q in range(len(queries)):
        own = hamming(queries[q : q + 1], refs)[0]
        rows = np.nonzero(variant_of == q)[0]
        candidates = [(int(own.min()), -1, int(own.argmin()))]
        for v in rows.tolist():
            d = hamming(variants[v : v + 1], refs)[0]
            candidates.append((int(d.min()), v, int(d.argmin())))
        d_min = min(c[0] for c in candidates)
        if d_min > MAX_D:
            assert best[q] == -1
            continue
        assert dist[q] == d_min
        assert (found_by[q], best[q]) in {(v, r) for d, v, r in candidates if d == d_min}
        if candidates[0][0] == d_min:
            assert found_by[q] == -1


def test_a_variant_joins_its_owner_to_the_group_of_the_hash_it_matches() -> None:
    rng = np.random.default_rng(3)
    base = _rand(rng, 3)
    owners = np.array([10, 20, 30], dtype=np.int64)
    assert visual_groups(base, owners, MAX_D) == {}
    variants = _flip_bits(base[:1], 4, rng)  # item 30 seen mirrored looks like item 10
    groups = visual_groups(base, owners, MAX_D, variants, np.array([30], dtype=np.int64))
    assert groups == {10: 10, 30: 10}


@pytest.mark.parametrize("page", [None, 1], ids=["one page", "pages of one item"])
def test_a_mirrored_copy_matches_a_known_bad_hash_and_joins_its_original(
    tmp_path: Path,
    coffee: Image.Image,
    rocket: Image.Image,
    page: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if page is not None:  # finalize reads the case in pages: the result must not depend on them
        from heroes.store import db

        monkeypatch.setattr(db, "PAGE_ROWS", page)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "a_original.jpg").write_bytes(_jpeg(coffee))
    (evidence / "b_mirrored.jpg").write_bytes(
        _jpeg(coffee.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    (evidence / "c_rotated.jpg").write_bytes(_jpeg(rocket.transpose(Image.Transpose.ROTATE_90)))
    (evidence / "d_other.jpg").write_bytes(_jpeg(Image.fromarray(data.chelsea())))
    known = pdq_hex(np.asarray(rocket))[0]
    hashset = tmp_path / "known.txt"
    hashset.write_text(f"# PDQ\n{known}\n")

    triage(
        evidence, tmp_path / "case", settings=Settings(workers=1, models=False), hashsets=[hashset]
    )

    store = CaseStore(tmp_path / "case", create=False)
    try:
        rows = {Path(r["path"]).stem: r for r in records(store)}
    finally:
        store.close()
    original, mirrored = rows["a_original"], rows["b_mirrored"]
    assert pdq_distance(original["pdq"], mirrored["pdq"]) > MAX_D  # pdq is the file as it is
    assert original["visual_group"] == mirrored["visual_group"] == original["item_id"]
    assert rows["d_other"]["visual_group"] is None
    match = rows["c_rotated"]["known_match"]
    assert match is not None and match["method"] == "pdq"
    assert match["transform"] == "rotate_270" and match["distance"] <= 24
    assert pdq_distance(rows["c_rotated"]["pdq"], known) > MAX_D  # found through a variant only
    assert rows["a_original"]["known_match"] is None and rows["d_other"]["known_match"] is None

    from heroes.search import search_pdq

    hits = search_pdq([tmp_path / "case"], similar_to=original["item_id"], max_distance=MAX_D)
    assert {h.path for h in hits} == {"a_original.jpg", "b_mirrored.jpg"}


def test_pairs_within_finds_exactly_the_pairs_of_a_brute_force_scan() -> None:
    rng = np.random.default_rng(5)
    refs = _rand(rng, 300)
    queries = np.concatenate([_flip_bits(refs[:40], 31, rng), _flip_bits(refs[40:80], 32, rng)])
    queries = np.concatenate([queries, _rand(rng, 20)])
    found = {
        (int(i), int(j))
        for ii, jj in pairs_within(queries, refs, MAX_D)
        for i, j in zip(ii, jj, strict=True)
    }
    d = hamming(queries, refs)
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(d <= MAX_D), strict=True)}
    assert found == expected
    assert {(i, i) for i in range(40)} <= found and not any(i in range(40, 80) for i, _ in found)
    assert list(pairs_within(queries[:0], refs, MAX_D)) == []


def test_a_mirrored_video_frame_matches_a_known_bad_image_hash(
    tmp_path: Path, rocket: Image.Image
) -> None:
    from heroes.demo import video_bytes

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    mirrored = np.asarray(rocket.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    still = np.asarray(Image.fromarray(data.chelsea()))
    (evidence / "clip.mp4").write_bytes(video_bytes([(still, 2.0), (mirrored, 2.0)], fps=5))
    (evidence / "photo.jpg").write_bytes(_jpeg(rocket.transpose(Image.Transpose.ROTATE_90)))
    known = pdq_hex(np.asarray(rocket.resize((320, 240))))[0]
    hashset = tmp_path / "known.txt"
    hashset.write_text(f"# PDQ\n{known}\n")

    triage(
        evidence,
        tmp_path / "case",
        settings=Settings(workers=1, models=False),
        hashsets=[hashset],
    )

    store = CaseStore(tmp_path / "case", create=False)
    try:
        rows = {r["path"]: r for r in records(store)}
    finally:
        store.close()
    clip = rows["clip.mp4"]
    match = clip["known_match"]
    assert match is not None and match["method"] == "pdq" and match["transform"] == "flip_y"
    assert match["frame_time"] >= 1.9
    frames = clip["video"]["keyframes"]
    assert all(pdq_distance(f["pdq"], known) > MAX_D for f in frames)  # the plain hashes miss
    assert "dihedral" not in frames[0]  # the exported record is unchanged
    # a video's frames never join an image's group, mirrored or not
    assert clip["visual_group"] is None and rows["photo.jpg"]["visual_group"] is None
