"""Offline scene embedding: same-scene retrieval on benign sample photos, and the vector contract.

The gallery is every sample photo that ships with scikit-image and scikit-learn. The two views of
``stereo_motorcycle`` were held out of codebook training, so finding one from the other is a real
"same scene, different viewpoint" test rather than recall of training data.

The retrieval tests run on the default model (``scene-vlad-fast``, features of a 192 px copy) and
on the first one (``scene-vlad``, 512 px), which old cases still hold vectors of.
"""

from __future__ import annotations

import importlib.resources
import io

import cv2
import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray
from sklearn.datasets import load_sample_images

from heroes.models import registry
from heroes.models.scene_embed import (
    DEFAULT_ASSET,
    LEGACY_ASSET,
    SceneCodebook,
    SceneEmbedder,
    flip_descriptors,
    geometric_inliers,
    load_default_codebook,
    load_shipped_codebook,
    rerank,
    rootsift,
    train_codebook,
)
from heroes.models.train_scene_codebook import SKIMAGE_PHOTOS as TRAINING_PHOTOS
from heroes.models.train_scene_codebook import as_rgb, jpeg

# the training photos plus ``cat`` (a second copy of ``chelsea``, left out of training)
SKIMAGE_PHOTOS = (*TRAINING_PHOTOS, "cat")
# ``cat`` is the same array as ``chelsea``; ``colorwheel`` is smooth gradients where SIFT finds no
# keypoint at all, so it embeds to the zero vector and cannot be retrieved by design.
NOT_QUERYABLE = {"cat", "colorwheel"}


def _edited_copy(image: NDArray[np.uint8], seed: int) -> NDArray[np.uint8]:
    """A 60-75 % crop at a random place, shrunk to 50-70 %, recompressed at JPEG quality 60."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    fy, fx = rng.uniform(0.6, 0.75, size=2)
    ch, cw = round(h * fy), round(w * fx)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    s = rng.uniform(0.5, 0.7)
    small = cv2.resize(
        image[y : y + ch, x : x + cw], (round(cw * s), round(ch * s)), interpolation=cv2.INTER_AREA
    )
    return jpeg(small, 60)


@pytest.fixture(scope="module")
def photos() -> dict[str, NDArray[np.uint8]]:
    out = {name: as_rgb(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS}
    china, flower = load_sample_images().images
    out["china"], out["flower"] = china, flower
    return out


@pytest.fixture(scope="module")
def stereo() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    left, right, _ = skimage.data.stereo_motorcycle()
    return left, right


@pytest.fixture(scope="module", params=["scene-vlad-fast", "scene-vlad"])
def embedder(request: pytest.FixtureRequest) -> SceneEmbedder:
    """Each shipped model, loaded the way the pass loads it (manifest, checksum, file)."""
    spec = registry.get_spec(request.param)
    return SceneEmbedder(SceneCodebook.load(registry.resolve(spec)))


@pytest.fixture(scope="module")
def gallery(
    embedder: SceneEmbedder, photos: dict[str, NDArray[np.uint8]]
) -> tuple[list[str], NDArray[np.float32]]:
    names = list(photos)
    return names, embedder.embed([photos[n] for n in names])


def _cosines_with_other_view(
    embedder: SceneEmbedder,
    gallery: tuple[list[str], NDArray[np.float32]],
    query: NDArray[np.uint8],
    other: NDArray[np.uint8],
) -> tuple[float, float]:
    names, vectors = gallery
    q, o = embedder.embed([query, other])
    return float(o @ q), float((vectors @ q).max())


def test_the_left_motorcycle_view_finds_the_right_view_first(embedder, gallery, stereo) -> None:
    left, right = stereo
    other, best_unrelated = _cosines_with_other_view(embedder, gallery, left, right)
    assert other > best_unrelated + 0.2, (other, best_unrelated)


def test_the_right_motorcycle_view_finds_the_left_view_first(embedder, gallery, stereo) -> None:
    left, right = stereo
    other, best_unrelated = _cosines_with_other_view(embedder, gallery, right, left)
    assert other > best_unrelated + 0.2, (other, best_unrelated)


def test_the_geometric_recheck_gives_the_other_view_by_far_the_most_inliers(photos, stereo) -> None:
    # re-check keypoints are the same for every codebook (see the 512 px test below)
    embedder = SceneEmbedder()
    left, right = stereo
    for query, other in ((left, right), (right, left)):
        q = embedder.features(query)
        with_other = geometric_inliers(*q, *embedder.features(other))
        unrelated = max(geometric_inliers(*q, *embedder.features(p)) for p in photos.values())
        assert with_other >= 100 and with_other > 10 * unrelated, (with_other, unrelated)


def test_rerank_puts_the_other_view_first_even_from_a_low_cosine(embedder, photos, stereo) -> None:
    left, right = stereo
    candidates = [photos["astronaut"], photos["china"], right, photos["brick"]]
    ranked = rerank(left, candidates, [0.9, 0.8, 0.1, 0.7], embedder=embedder)
    assert ranked[0][0] == 2 and ranked[0][1] == pytest.approx(0.1)
    assert ranked[0][2] > 10 * ranked[1][2]


@pytest.mark.parametrize("mirrored", [False, True], ids=["as-is", "mirrored"])
def test_an_edited_copy_of_a_photo_finds_its_source_first(
    embedder, gallery, photos, mirrored
) -> None:
    names, vectors = gallery
    keep = [i for i, n in enumerate(names) if n != "cat"]
    sources = [n for n in names if n not in NOT_QUERYABLE]
    copies = [_edited_copy(photos[n], seed) for seed, n in enumerate(sources)]
    if mirrored:
        copies = [np.ascontiguousarray(c[:, ::-1]) for c in copies]
    scores = embedder.embed(copies) @ vectors[keep].T
    found = [names[keep[j]] for j in scores.argmax(axis=1)]
    assert found == sources


def test_a_mirrored_image_embeds_almost_like_the_original(embedder, photos) -> None:
    originals = [photos[n] for n in ("astronaut", "coffee", "china")]
    a = embedder.embed(originals)
    b = embedder.embed([np.ascontiguousarray(p[:, ::-1]) for p in originals])
    assert (np.sum(a * b, axis=1) > 0.9).all()


def test_mirroring_descriptors_twice_gives_them_back(embedder, photos) -> None:
    _, desc = embedder.features(photos["astronaut"])
    assert np.array_equal(flip_descriptors(flip_descriptors(desc)), desc)


def test_embeddings_are_unit_vectors_of_the_declared_dimension(embedder, gallery) -> None:
    names, vectors = gallery
    assert vectors.dtype == np.float32 and vectors.shape == (len(names), embedder.dim)
    norms = np.linalg.norm(np.delete(vectors, names.index("colorwheel"), axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_the_same_image_always_gives_the_same_vector(embedder, photos) -> None:
    a = embedder.embed([photos["coffee"]])
    b = SceneEmbedder(embedder.codebook).embed([photos["coffee"].copy()])
    assert np.array_equal(a, b)


def test_a_batch_gives_the_same_vectors_as_single_images(embedder, photos) -> None:
    images = [photos[n] for n in ("rocket", "colorwheel", "page", "flower")]
    batch = embedder.embed(images)
    singles = np.concatenate([embedder.embed([im]) for im in images])
    assert np.array_equal(batch, singles)


def test_a_flat_grey_image_has_no_features_and_embeds_to_the_zero_vector(embedder) -> None:
    grey = np.full((300, 400, 3), 128, dtype=np.uint8)
    kps, desc = embedder.features(grey)
    assert kps.shape == (0, 2) and desc.shape == (0, 128)
    vectors = embedder.embed([grey, grey[:, :, 0]])
    assert vectors.shape == (2, embedder.dim) and not vectors.any()
    assert geometric_inliers(kps, desc, kps, desc) == 0


def test_an_empty_batch_gives_an_empty_matrix(embedder) -> None:
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_a_non_image_array_is_rejected(embedder) -> None:
    with pytest.raises(ValueError):
        embedder.embed([np.zeros((8, 8, 2), dtype=np.uint8)])
    with pytest.raises(ValueError):
        embedder.embed([np.zeros((8, 8, 3), dtype=np.float32)])


def test_rootsift_descriptors_are_non_negative_unit_vectors(photos) -> None:
    gray = cv2.cvtColor(photos["astronaut"], cv2.COLOR_RGB2GRAY)
    kps, desc = rootsift(gray, max_features=200)
    assert kps.dtype == desc.dtype == np.float32
    assert 0 < len(kps) <= 200 and desc.shape == (len(kps), 128) and (desc >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("asset", "max_side", "max_features", "contrast"),
    [(DEFAULT_ASSET, 192, 400, 0.02), (LEGACY_ASSET, 512, 1000, 0.04)],
    ids=["fast", "legacy"],
)
def test_a_shipped_codebook_saves_back_to_its_bytes_and_loads_unchanged(
    asset, max_side, max_features, contrast
) -> None:
    codebook = load_shipped_codebook(asset)
    buf = io.BytesIO()
    codebook.save(buf)
    shipped = importlib.resources.files("heroes.models").joinpath("assets", asset)
    assert buf.getvalue() == shipped.read_bytes()
    buf.seek(0)
    again = SceneCodebook.load(buf)
    for name in ("centroids", "pca_mean", "pca_components", "pca_scale"):
        assert np.array_equal(getattr(codebook, name), getattr(again, name)), name
    assert (again.k, again.dim, again.flip_invariant) == (codebook.k, codebook.dim, True)
    assert (again.max_side, again.max_features) == (max_side, max_features)
    assert again.contrast_threshold == contrast == codebook.contrast_threshold


def test_a_dark_photo_keeps_keypoints_at_192_px(photos) -> None:
    # a photo taken in low light: the 512 px model at OpenCV's contrast threshold finds nothing
    dark = (photos["chelsea"].astype(np.float32) * 0.25).astype(np.uint8)
    legacy = SceneEmbedder(load_shipped_codebook(LEGACY_ASSET))
    fast = SceneEmbedder()
    assert len(legacy.embedding_features(dark)[0]) == 0 and not legacy.embed([dark]).any()
    assert len(fast.embedding_features(dark)[0]) >= 20
    # and its vector still finds the photo it was taken from among the others
    names = [n for n in photos if n != "cat"]
    gallery = fast.embed([photos[n] for n in names])
    assert names[int(np.argmax(gallery @ fast.embed([dark])[0]))] == "chelsea"


def test_the_default_codebook_is_the_fast_model_and_the_settings_name_it() -> None:
    from heroes.config import Settings

    assert Settings().scene_model == "scene-vlad-fast"
    spec = registry.get_spec("scene-vlad-fast")
    assert spec.file.endswith(DEFAULT_ASSET) and spec.sha256
    assert load_default_codebook() is load_shipped_codebook(DEFAULT_ASSET)
    assert (SceneEmbedder().max_side, SceneEmbedder().max_features) == (192, 400)


def test_the_fast_embedding_is_computed_on_a_192_px_copy(photos) -> None:
    embedder = SceneEmbedder()
    image = cv2.resize(photos["coffee"], (512, 341), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # the same grey copy given directly: bit-identical vector, since only 192 px are looked at
    small = cv2.resize(gray, (192, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(embedder.embed([image]), embedder.embed([small]))
    # while the 512 px model sees details that the reduced copy has lost
    legacy = SceneEmbedder(load_shipped_codebook(LEGACY_ASSET))
    assert not np.array_equal(legacy.embed([image]), legacy.embed([small]))


def test_the_recheck_keypoints_stay_at_512_px_whatever_the_codebook(photos) -> None:
    image = photos["astronaut"]  # 512 x 512
    fast = SceneEmbedder()
    legacy = SceneEmbedder(load_shipped_codebook(LEGACY_ASSET))
    for a, b in zip(fast.features(image), legacy.features(image), strict=True):
        np.testing.assert_array_equal(a, b)
    kps, _ = fast.embedding_features(image)
    assert 0 < len(kps) < len(fast.features(image)[0]) and kps.max() < 192


def test_an_explicit_extraction_size_overrides_the_codebook(photos) -> None:
    embedder = SceneEmbedder(max_side=128, max_features=50)
    kps, desc = embedder.embedding_features(photos["astronaut"])
    assert 0 < len(kps) <= 50 and kps.max() < 128 and desc.shape == (len(kps), 128)
    with pytest.raises(ValueError):
        SceneEmbedder(max_side=8)
    with pytest.raises(ValueError):
        SceneEmbedder(recheck_features=0)


def test_a_codebook_of_an_unknown_format_version_is_refused(tmp_path) -> None:
    path = tmp_path / "codebook.npz"
    load_default_codebook().save(path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["version"] = np.int32(3)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="version 3"):
        SceneCodebook.load(path)


def _small_training_set(photos: dict[str, NDArray[np.uint8]]) -> list[NDArray[np.uint8]]:
    images = []
    for name in ("astronaut", "coffee", "brick", "china"):
        small = cv2.resize(photos[name], (192, 160), interpolation=cv2.INTER_AREA)
        images += [small, np.ascontiguousarray(small[:, ::-1]), small[20:140, 30:170]]
    return images


def test_train_codebook_is_deterministic_for_a_seed(photos) -> None:
    images = _small_training_set(photos)
    a = train_codebook(images, k=8, pca_dim=6, seed=3, max_features=300)
    b = train_codebook(images, k=8, pca_dim=6, seed=3, max_features=300)
    c = train_codebook(images, k=8, pca_dim=6, seed=4, max_features=300)
    for name in ("centroids", "pca_mean", "pca_components", "pca_scale"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.centroids, c.centroids)
    assert SceneEmbedder(a).embed(images[:2]).shape == (2, 6)


def test_a_trained_codebook_round_trips_within_int8_precision(photos, tmp_path) -> None:
    images = _small_training_set(photos)
    codebook = train_codebook(
        images, k=8, pca_dim=6, seed=0, max_side=128, max_features=300, contrast_threshold=0.03
    )
    assert (codebook.max_side, codebook.max_features, codebook.contrast_threshold) == (
        128,
        300,
        0.03,
    )
    path = tmp_path / "codebook.npz"
    codebook.save(path)
    loaded = SceneCodebook.load(path)
    assert (loaded.max_side, loaded.max_features, loaded.contrast_threshold) == (128, 300, 0.03)
    before = SceneEmbedder(codebook).embed(images[:4])
    after = SceneEmbedder(loaded).embed(images[:4])
    assert (np.sum(before * after, axis=1) > 0.999).all()


def test_training_needs_more_images_than_pca_dimensions(photos) -> None:
    with pytest.raises(ValueError):
        train_codebook(_small_training_set(photos)[:4], k=4, pca_dim=4)
