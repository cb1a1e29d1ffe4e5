"""Regenerate the scene-embedding codebooks in ``heroes/models/assets/``.

Run ``python -m heroes.models.train_scene_codebook`` for the default ``scene-vlad-fast``
(``scene_codebook_fast.npz``: features of a 192 px copy, 400 keypoints, SIFT contrast threshold
0.02) or with
``--model scene-vlad`` for the first model (``scene_codebook.npz``: 512 px). Needs the ``dev``
extras: scikit-image and scikit-learn, whose bundled sample photos are the only training data.
Everything is seeded, so a rerun with the same library versions gives the same arrays; after a
retrain, put the file's new sha256 in its manifest (``heroes/models/manifests/``).

Training data: the benign sample photos that ship with scikit-image and scikit-learn, each as is,
mirrored, and in random crops / rescales / JPEG recompressions (about half of them mirrored), so
the codebook sees the same edits that search must survive. Both views of ``stereo_motorcycle`` are
left out: that pair is the held-out test of "same scene, other viewpoint". ``cat`` is left out as
an alias of ``chelsea``. ``colorwheel`` stays in although SIFT finds nothing in it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from heroes.models.scene_embed import (
    DEFAULT_ASSET,
    DEFAULT_CONTRAST,
    LEGACY_ASSET,
    SceneCodebook,
    train_codebook,
)

SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "coins",
    "horse",
    "moon",
    "page",
    "text",
    "retina",
    "colorwheel",
    "logo",
)
K = 32
PCA_DIM = 128
SEED = 0
AUGMENTATIONS_PER_PHOTO = 12
#: manifest name -> (asset file, longest side of the copy SIFT runs on, keypoints kept, SIFT
#: contrast threshold). The fast model's lower threshold gives a small copy about as many
#: keypoints in dark and low-contrast photos as the first model finds at 512 px.
MODELS = {
    "scene-vlad-fast": (DEFAULT_ASSET, 192, 400, 0.02),
    "scene-vlad": (LEGACY_ASSET, 512, 1000, DEFAULT_CONTRAST),
}
DEFAULT_MODEL = "scene-vlad-fast"


def as_rgb(image: NDArray) -> NDArray[np.uint8]:
    """Bool masks, grayscale and RGBA (composited on white) as RGB uint8."""
    x = np.asarray(image)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if x.shape[2] == 4:
        a = x[:, :, 3:4].astype(np.float32) / 255.0
        x = np.rint(x[:, :, :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return np.ascontiguousarray(x, dtype=np.uint8)


def benign_photos() -> dict[str, NDArray[np.uint8]]:
    """The training photos, by name, as RGB uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: as_rgb(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS}
    china, flower = load_sample_images().images
    photos["china"] = as_rgb(china)
    photos["flower"] = as_rgb(flower)
    return photos


def jpeg(image: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def random_edit(image: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """A crop of 20-90 % of the area, rescaled by 0.4-1.0, JPEG 60-95, mirrored half the time."""
    h, w = image.shape[:2]
    area = rng.uniform(0.2, 0.9)
    aspect = rng.uniform(0.8, 1.25)
    ch = min(h, max(16, round(h * np.sqrt(area * aspect))))
    cw = min(w, max(16, round(w * np.sqrt(area / aspect))))
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    crop = image[y : y + ch, x : x + cw]
    s = rng.uniform(0.4, 1.0)
    crop = cv2.resize(
        crop, (max(16, round(cw * s)), max(16, round(ch * s))), interpolation=cv2.INTER_AREA
    )
    out = jpeg(crop, int(rng.integers(60, 96)))
    if rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def training_images(seed: int = SEED) -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    images: list[NDArray[np.uint8]] = []
    for photo in benign_photos().values():
        images.append(photo)
        images.append(np.ascontiguousarray(photo[:, ::-1]))
        images.extend(random_edit(photo, rng) for _ in range(AUGMENTATIONS_PER_PHOTO))
    return images


def build(seed: int = SEED, model: str = DEFAULT_MODEL) -> SceneCodebook:
    _asset, max_side, max_features, contrast = MODELS[model]
    return train_codebook(
        training_images(seed),
        k=K,
        pca_dim=PCA_DIM,
        seed=seed,
        max_side=max_side,
        max_features=max_features,
        contrast_threshold=contrast,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the codebook (default: the model's shipped asset)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "assets" / MODELS[args.model][0]
    codebook = build(args.seed, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    codebook.save(args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): K={codebook.k}, dim={codebook.dim}, "
        f"features at {codebook.max_side} px"
    )


if __name__ == "__main__":
    main()
