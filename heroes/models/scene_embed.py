"""Offline scene embedding for "same room / same object" search, with no downloaded weights.

A learned encoder (CLIP, DINOv2) plugs in later through a manifest; this module is the default that
must work on a bare machine. Each image becomes one vector in three steps:

1. **RootSIFT** local features (OpenCV SIFT, then L1-normalise and square-root), which are stable
   under crops, rescaling, recompression and moderate viewpoint change: exactly the edits that
   separate two photos of the same room or a re-shared copy of a picture.
2. **VLAD** aggregation against a small k-means codebook: residuals to the nearest centroid summed
   per centroid, then power-law, intra- and L2-normalised, so that bursts of repeated texture
   (tiles, wallpaper, carpet) cannot dominate the vector.
3. **PCA** to ``dim`` dimensions (128 for the shipped codebooks: 32 centroids x 128 = 4096-d
   VLADs), so that the vectors are cheap to store and search with a flat FAISS inner-product
   index.

A codebook carries the size at which its features are extracted. SIFT's cost is almost all of an
embedding's (the VLAD, PCA and flip steps together take about 1 ms), and OpenCV's SIFT first
doubles the image it is given, so it grows with the image area. The default ``scene-vlad-fast``
codebook extracts its features from a copy whose longest side is 192 px (its strongest 400
keypoints), which costs about a seventh of the 512 px that the first model, ``scene-vlad``, uses
(still shipped and loadable,
since old cases hold its vectors; the two models' vectors are never mixed in one index). It
halves SIFT's contrast threshold (0.02), so that dark and low-contrast photos keep about as many
keypoints as at 512 px. Its search quality is the same or better on the benchmarks
(``benchmarks/bench_scene.py``): a scene vector describes the layout of a whole picture, which the
coarse features of a small copy capture, while the finest-scale keypoints of a large one are the
most sensitive to recompression and rescaling.

Mirrored copies are a common edit when images are re-shared, and SIFT is not mirror-invariant. A
horizontal flip of the image acts on a SIFT descriptor as a fixed permutation of its bins (spatial
rows reversed, orientation bins negated), so a flip-invariant codebook aggregates every descriptor
*and* its mirror; the embedding of a flipped image then equals that of the original up to the
interpolation noise of the detector.

Cosine similarity between embeddings is a coarse ranking. :func:`geometric_inliers` and
:func:`rerank` re-check the top hits by matching keypoints and counting RANSAC inliers, which is
what tells a genuinely shared scene from a merely similar texture.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import faiss
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SceneCodebook",
    "SceneEmbedder",
    "flip_descriptors",
    "geometric_inliers",
    "load_default_codebook",
    "load_shipped_codebook",
    "rerank",
    "rootsift",
    "train_codebook",
    "vlad",
    "vlad_batch",
]

DESCRIPTOR_DIM = 128
DEFAULT_ASSET = "scene_codebook_fast.npz"
#: the first model's codebook (``scene-vlad``: features at 512 px), kept for the cases it indexed
LEGACY_ASSET = "scene_codebook.npz"
#: the geometric re-check matches keypoints at this size whatever the codebook (see ``features``)
RECHECK_SIDE = 512
RECHECK_FEATURES = 1000
#: OpenCV's default SIFT contrast threshold, which ``scene-vlad`` used
DEFAULT_CONTRAST = 0.04
# version 1 files (``scene-vlad``) hold no extraction parameters: they were trained at 512 px,
# 1000 keypoints and OpenCV's contrast threshold; version 2 adds ``max_side``, ``max_features``
# and ``contrast_threshold``.
_FORMAT_VERSION = 2
_V1_EXTRACTION = (512, 1000, DEFAULT_CONTRAST)
_EPS = 1e-12

# SIFT's 4x4 spatial grid is indexed (row, col) in the keypoint frame, each cell holding 8
# orientation bins. Mirroring the image reverses the rows of that grid and negates orientations.
_FLIP_PERMUTATION: NDArray[np.intp] = (
    np.arange(DESCRIPTOR_DIM).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)
)


def _readonly(a: NDArray[np.float32]) -> NDArray[np.float32]:
    out = np.ascontiguousarray(a, dtype=np.float32)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class SceneCodebook:
    """Everything that turns RootSIFT descriptors into one scene vector.

    ``pca_scale`` multiplies each projected component; it is all ones for plain PCA and
    ``eigenvalue ** -whiten_power`` when the codebook was trained with (partial) whitening.
    ``max_side``, ``max_features`` and ``contrast_threshold`` are how the features it aggregates
    are extracted (longest side of the grayscale copy, strongest keypoints kept, SIFT's contrast
    threshold): a codebook only describes descriptors extracted the way it was trained, so they
    travel with it.
    Arrays are made read-only so that a cached default codebook cannot be altered by a caller.
    """

    centroids: NDArray[np.float32]
    pca_mean: NDArray[np.float32]
    pca_components: NDArray[np.float32]
    pca_scale: NDArray[np.float32]
    flip_invariant: bool = True
    alpha: float = 0.5
    max_side: int = 512
    max_features: int = 1000
    contrast_threshold: float = DEFAULT_CONTRAST
    _index: faiss.IndexFlatL2 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        centroids = _readonly(self.centroids)
        k = centroids.shape[0]
        if self.max_side < 16 or self.max_features < 1 or not self.contrast_threshold > 0:
            raise ValueError(
                "max_side must be at least 16, max_features and contrast_threshold positive"
            )
        if centroids.ndim != 2 or centroids.shape[1] != DESCRIPTOR_DIM or k < 1:
            raise ValueError(f"centroids must be (K, {DESCRIPTOR_DIM}), got {centroids.shape}")
        mean = _readonly(self.pca_mean).reshape(-1)
        comps = _readonly(self.pca_components)
        scale = _readonly(self.pca_scale).reshape(-1)
        if mean.shape != (k * DESCRIPTOR_DIM,) or comps.ndim != 2:
            raise ValueError("pca_mean must be (K*128,) and pca_components 2-D")
        if comps.shape[1] != k * DESCRIPTOR_DIM or scale.shape != (comps.shape[0],):
            raise ValueError(
                f"pca_components must be (D, {k * DESCRIPTOR_DIM}) and pca_scale (D,); got "
                f"{comps.shape} and {scale.shape}"
            )
        object.__setattr__(self, "centroids", centroids)
        object.__setattr__(self, "pca_mean", mean)
        object.__setattr__(self, "pca_components", comps)
        object.__setattr__(self, "pca_scale", scale)
        index = faiss.IndexFlatL2(DESCRIPTOR_DIM)
        index.add(centroids)
        object.__setattr__(self, "_index", index)

    def __reduce__(self) -> tuple[type[SceneCodebook], tuple[object, ...]]:
        """Pickle through the constructor, so the copy gets its index and read-only arrays."""
        return (
            SceneCodebook,
            (
                self.centroids,
                self.pca_mean,
                self.pca_components,
                self.pca_scale,
                self.flip_invariant,
                self.alpha,
                self.max_side,
                self.max_features,
                self.contrast_threshold,
            ),
        )

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.pca_components.shape[0])

    def assign(self, desc: NDArray[np.float32]) -> NDArray[np.int64]:
        """Nearest centroid of each descriptor (exact, via FAISS)."""
        if len(desc) == 0:
            return np.zeros(0, dtype=np.int64)
        _, idx = self._index.search(np.ascontiguousarray(desc, dtype=np.float32), 1)
        return idx[:, 0]

    def project(self, vlads: NDArray[np.float32]) -> NDArray[np.float32]:
        """PCA-reduce and L2-normalise VLAD rows; all-zero rows (no features) stay zero.

        Rows are projected one at a time with ``einsum`` (about 0.1 ms each, negligible next to
        SIFT) rather than one BLAS product: a matrix product may round differently with the batch
        size, so this way an image gets bit-identical vectors alone or in any batch; and BLAS
        worker threads, spinning after each small call, were measured to halve the throughput
        of one-image calls on a 2-core machine by competing with OpenCV's SIFT threads.
        """
        vlads = np.atleast_2d(np.asarray(vlads, dtype=np.float32))
        out = np.zeros((len(vlads), self.dim), dtype=np.float32)
        for i, row in enumerate(vlads):
            if row.any():
                centred = row - self.pca_mean
                out[i] = np.einsum("dk,k->d", self.pca_components, centred) * self.pca_scale
        return _l2_rows(out)

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write a compact ``.npz``: float16 centroids/mean, int8 PCA rows with a per-row scale.

        Int8 keeps the shipped asset well under 1 MB; the error it adds is about 1 % of each
        projected coordinate, far below the margins that separate a match from a non-match.
        Zip entries get a fixed timestamp, so the same codebook always gives the same bytes (and
        the same sha256 in its manifest), and saving a loaded codebook reproduces the file. A
        codebook with the first model's extraction size (512 px, 1000 keypoints) is written in
        the version 1 layout, which is what ``scene-vlad``'s shipped file holds.
        """
        comps = np.asarray(self.pca_components, dtype=np.float32)
        row_max = np.abs(comps).max(axis=1)
        q_scale = np.where(row_max > 0, row_max / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(comps / q_scale[:, None]), -127, 127).astype(np.int8)
        extraction = (self.max_side, self.max_features, self.contrast_threshold)
        v1 = extraction == _V1_EXTRACTION
        arrays: dict[str, object] = {
            "version": np.int32(1 if v1 else _FORMAT_VERSION),
            "centroids": self.centroids.astype(np.float16),
            "pca_mean": self.pca_mean.astype(np.float16),
            "pca_components_q": q,
            "pca_components_scale": q_scale,
            "pca_scale": self.pca_scale.astype(np.float32),
            "flip_invariant": np.bool_(self.flip_invariant),
            "alpha": np.float32(self.alpha),
        }
        if not v1:
            arrays["max_side"] = np.int32(self.max_side)
            arrays["max_features"] = np.int32(self.max_features)
            arrays["contrast_threshold"] = np.float64(self.contrast_threshold)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> SceneCodebook:
        """Read a codebook written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            if version not in (1, _FORMAT_VERSION):
                raise ValueError(f"unsupported scene codebook format version {version}")
            if version == 1:
                max_side, max_features, contrast = _V1_EXTRACTION
            else:
                max_side, max_features = int(z["max_side"]), int(z["max_features"])
                contrast = float(z["contrast_threshold"])
            comps = z["pca_components_q"].astype(np.float32) * z["pca_components_scale"][:, None]
            return cls(
                centroids=z["centroids"].astype(np.float32),
                pca_mean=z["pca_mean"].astype(np.float32),
                pca_components=comps.astype(np.float32),
                pca_scale=z["pca_scale"].astype(np.float32),
                flip_invariant=bool(z["flip_invariant"]),
                alpha=float(z["alpha"]),
                max_side=max_side,
                max_features=max_features,
                contrast_threshold=contrast,
            )


@functools.cache
def load_shipped_codebook(asset: str) -> SceneCodebook:
    """A codebook shipped in ``heroes/models/assets/``, by file name, loaded once."""
    ref = importlib.resources.files("heroes.models").joinpath("assets", asset)
    return SceneCodebook.load(io.BytesIO(ref.read_bytes()))


def load_default_codebook() -> SceneCodebook:
    """The default codebook (``scene-vlad-fast``: ``assets/scene_codebook_fast.npz``), loaded once.

    It is trained by ``heroes/models/train_scene_codebook.py`` from benign photos that ship with
    scikit-image and scikit-learn, so it can be regenerated and audited without any download.
    ``load_shipped_codebook(LEGACY_ASSET)`` gives the first model's (``scene-vlad``).
    """
    return load_shipped_codebook(DEFAULT_ASSET)


def _l2_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms > _EPS, x / np.maximum(norms, _EPS), 0.0).astype(np.float32)


def rootsift(
    gray: NDArray[np.uint8],
    max_features: int = 1000,
    contrast_threshold: float = DEFAULT_CONTRAST,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """SIFT keypoints and RootSIFT descriptors of a grayscale image.

    RootSIFT (Arandjelovic & Zisserman, 2012) compares descriptors with the Hellinger kernel,
    which down-weights the largest histogram bins and improves matching and clustering at no cost.
    Returns ``(M, 2)`` (x, y) positions and ``(M, 128)`` descriptors; both are empty for an image
    without any detectable structure. At most ``max_features`` keypoints, the strongest, are kept.
    A lower ``contrast_threshold`` keeps weaker extrema (more keypoints in dark or flat images).
    """
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    if gray.ndim != 2:
        raise ValueError(f"rootsift expects a 2-D grayscale image, got shape {gray.shape}")
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast_threshold)
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or len(kps) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.float32)
    pts = np.array([kp.pt for kp in kps], dtype=np.float32).reshape(-1, 2)
    if len(pts) > max_features:
        strongest = np.argsort([-kp.response for kp in kps], kind="stable")[:max_features]
        pts, desc = pts[strongest], desc[strongest]
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(axis=1, keepdims=True), _EPS)
    return pts, np.sqrt(desc, dtype=np.float32)


def flip_descriptors(desc: NDArray[np.float32]) -> NDArray[np.float32]:
    """Descriptors of the horizontally mirrored patches, by permuting SIFT bins (no detection)."""
    return np.ascontiguousarray(np.asarray(desc, dtype=np.float32)[:, _FLIP_PERMUTATION])


def vlad(desc: NDArray[np.float32], codebook: SceneCodebook) -> NDArray[np.float32]:
    """Normalised VLAD of one image's descriptors, ``(K*128,)``; zeros when there are none."""
    return vlad_batch([desc], codebook)[0]


def vlad_batch(
    descs: Sequence[NDArray[np.float32]], codebook: SceneCodebook
) -> NDArray[np.float32]:
    """Normalised VLADs ``(N, K*128)`` of several images' descriptors, in one pass.

    All descriptors of the batch are assigned in one FAISS search (interleaving many small
    searches with SIFT makes the two thread pools fight over the cores), and residuals are summed
    per (image, centroid) with a sort and ``np.add.reduceat``. A stable sort keeps each sum in
    descriptor order, so an image gets the same vector alone or in any batch.

    Power-law (signed square root) then per-centroid L2 ("intra") normalisation stop a single
    repeated texture from dominating; the final L2 makes images with different feature counts
    comparable. An image without descriptors gets the zero vector.
    """
    k = codebook.k
    n = len(descs)
    parts = [np.asarray(d, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM) for d in descs]
    if codebook.flip_invariant:
        parts = [np.concatenate([d, flip_descriptors(d)]) for d in parts]
    counts = np.array([len(d) for d in parts], dtype=np.int64)
    v = np.zeros((n * k, DESCRIPTOR_DIM), dtype=np.float32)
    if counts.sum() > 0:
        desc = np.concatenate(parts)
        key = np.repeat(np.arange(n, dtype=np.int64), counts) * k + codebook.assign(desc)
        order = np.argsort(key, kind="stable")
        keys, starts = np.unique(key[order], return_index=True)
        v[keys] = np.add.reduceat(desc[order], starts, axis=0)
        v -= np.bincount(key, minlength=n * k)[:, None] * np.tile(codebook.centroids, (n, 1))
    v = np.sign(v) * np.abs(v) ** codebook.alpha
    v = _l2_rows(v).reshape(n, k * DESCRIPTOR_DIM)
    return _l2_rows(v)


def _to_gray(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    img = np.asarray(image)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected an HxW, HxWx3 (RGB) or HxWx4 image, got shape {img.shape}")


def _working_gray(image: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    gray = _to_gray(image)
    h, w = gray.shape
    if h == 0 or w == 0:
        return np.zeros((0, 0), np.uint8)
    scale = max_side / max(h, w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def _extract(
    image: NDArray[np.uint8],
    max_side: int,
    max_features: int,
    contrast_threshold: float = DEFAULT_CONTRAST,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    gray = _working_gray(image, max_side)
    if gray.size == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.float32)
    return rootsift(gray, max_features, contrast_threshold)


class SceneEmbedder:
    """RGB images -> L2-normalised scene vectors (``dim`` floats) for cosine search.

    Images are converted to grayscale and downscaled so that the longest side is at most
    ``max_side`` (the codebook's unless given); this bounds the cost per image and puts
    full-size originals and their reduced copies on the same scale. Smaller images are not
    upscaled (SIFT already doubles its first octave).

    The keypoints of the geometric re-check (:meth:`features`) are extracted at
    ``recheck_side`` (512 px) whatever the codebook: RANSAC needs many well-localised matches,
    and it runs only on the few hits an investigator looks at, so its cost does not matter.

    An image in which SIFT finds no keypoint (flat colour, a blank frame) embeds to the **zero
    vector**: its cosine similarity to everything is 0, so it can never surface as a match, and
    ``norm == 0`` marks it for the caller. Giving it some shared "empty" vector instead would make
    every blank frame in a case a perfect match of every other.
    """

    def __init__(
        self,
        codebook: SceneCodebook | None = None,
        *,
        max_side: int | None = None,
        max_features: int | None = None,
        recheck_side: int = RECHECK_SIDE,
        recheck_features: int = RECHECK_FEATURES,
    ) -> None:
        self.codebook = codebook if codebook is not None else load_default_codebook()
        self.max_side = self.codebook.max_side if max_side is None else max_side
        self.max_features = self.codebook.max_features if max_features is None else max_features
        if min(self.max_side, recheck_side) < 16:
            raise ValueError("max_side and recheck_side must be at least 16")
        if min(self.max_features, recheck_features) < 1:
            raise ValueError("max_features and recheck_features must be positive")
        self.recheck_side = recheck_side
        self.recheck_features = recheck_features
        self.dim: int = self.codebook.dim

    def features(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """RootSIFT keypoints and descriptors of one image, for the geometric re-check.

        Keypoint coordinates are in the working image (longest side at most ``recheck_side``),
        so that RANSAC pixel thresholds mean the same thing for every image.
        """
        return _extract(image, self.recheck_side, self.recheck_features)

    def embedding_features(
        self, image: NDArray[np.uint8]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The keypoints and descriptors that the embedding aggregates (at ``max_side``)."""
        return _extract(image, self.max_side, self.max_features, self.codebook.contrast_threshold)

    def vlads(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Un-projected normalised VLADs, ``(N, K*128)``; the input to PCA training."""
        return vlad_batch([self.embedding_features(im)[1] for im in images], self.codebook)

    def embed(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """``[N, dim]`` float32 rows of unit norm, or all zeros for images without features."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.codebook.project(self.vlads(images))


def _ratio_matches(
    q_desc: NDArray[np.float32], c_desc: NDArray[np.float32], ratio: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Lowe ratio-test matches, at most one query per candidate keypoint (the closest)."""
    index = faiss.IndexFlatL2(DESCRIPTOR_DIM)
    index.add(np.ascontiguousarray(c_desc, dtype=np.float32))
    dist, nn = index.search(np.ascontiguousarray(q_desc, dtype=np.float32), 2)
    keep = dist[:, 0] < (ratio * ratio) * dist[:, 1]
    qi = np.flatnonzero(keep)
    ci = nn[keep, 0]
    order = np.lexsort((dist[keep, 0], ci))
    qi, ci = qi[order], ci[order]
    first = np.ones(len(ci), dtype=bool)
    first[1:] = ci[1:] != ci[:-1]
    return qi[first], ci[first].astype(np.intp)


_MIN_HOMOGRAPHY_MATCHES = 4
_MIN_FUNDAMENTAL_MATCHES = 16
_HOMOGRAPHY_THRESHOLD_PX = 5.0
_FUNDAMENTAL_THRESHOLD_PX = 1.5


def _inliers_one_way(
    q_kps: NDArray[np.float32],
    q_desc: NDArray[np.float32],
    c_kps: NDArray[np.float32],
    c_desc: NDArray[np.float32],
    ratio: float,
) -> int:
    qi, ci = _ratio_matches(q_desc, c_desc, ratio)
    if len(qi) < _MIN_HOMOGRAPHY_MATCHES:
        return 0
    src = np.ascontiguousarray(q_kps[qi], dtype=np.float32)
    dst = np.ascontiguousarray(c_kps[ci], dtype=np.float32)
    best = 0
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, _HOMOGRAPHY_THRESHOLD_PX)
    if mask is not None:
        best = int(mask.sum())
    if len(qi) >= _MIN_FUNDAMENTAL_MATCHES:
        _, mask = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, _FUNDAMENTAL_THRESHOLD_PX, 0.999)
        if mask is not None and mask.shape[0] == len(qi):
            best = max(best, int(mask.sum()))
    return best


def geometric_inliers(
    q_kps: NDArray[np.float32],
    q_desc: NDArray[np.float32],
    c_kps: NDArray[np.float32],
    c_desc: NDArray[np.float32],
    *,
    ratio: float = 0.8,
    mirror: bool = False,
) -> int:
    """Number of keypoint matches between two images that agree on one geometry.

    Descriptors are matched with Lowe's ratio test (exact search with FAISS), then RANSAC fits a
    homography (a plane, or a copy of the same picture) and, when there are enough matches, a
    fundamental matrix (the same 3-D scene from another viewpoint); the larger inlier count wins.
    Unrelated images give a handful of chance inliers; a shared scene gives tens to hundreds.
    With ``mirror=True`` the candidate is also tried mirrored (descriptors permuted; a
    homography can represent the reflection), for flipped copies. OpenCV's RANSAC seeds its
    sampler the same way on every call, so the count is deterministic.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError("ratio must be in (0, 1)")
    if min(len(q_desc), len(c_desc)) < 2:
        return 0
    best = _inliers_one_way(q_kps, q_desc, c_kps, c_desc, ratio)
    if mirror:
        best = max(best, _inliers_one_way(q_kps, q_desc, c_kps, flip_descriptors(c_desc), ratio))
    return best


def rerank(
    query_image: NDArray[np.uint8],
    candidates: Sequence[NDArray[np.uint8]],
    scores: Sequence[float] | NDArray[np.float32],
    *,
    embedder: SceneEmbedder | None = None,
    ratio: float = 0.8,
) -> list[tuple[int, float, int]]:
    """Re-order the top hits of a cosine search by geometric inliers with the query.

    Returns ``(candidate position, cosine score, inliers)`` sorted by inliers, then score. Meant
    for the few tens of hits shown to an investigator: it costs one feature extraction and one
    RANSAC per candidate. Mirrored candidates are checked too when the codebook is flip-invariant.
    """
    if len(candidates) != len(scores):
        raise ValueError("candidates and scores must have the same length")
    emb = embedder if embedder is not None else SceneEmbedder()
    q_kps, q_desc = emb.features(query_image)
    mirror = emb.codebook.flip_invariant
    rows = []
    for i, cand in enumerate(candidates):
        c_kps, c_desc = emb.features(cand)
        n = geometric_inliers(q_kps, q_desc, c_kps, c_desc, ratio=ratio, mirror=mirror)
        rows.append((i, float(scores[i]), n))
    rows.sort(key=lambda r: (-r[2], -r[1], r[0]))
    return rows


def train_codebook(
    images: Sequence[NDArray[np.uint8]],
    k: int = 32,
    pca_dim: int = 128,
    seed: int = 0,
    *,
    flip_invariant: bool = True,
    whiten_power: float = 0.0,
    max_side: int = 512,
    max_features: int = 1000,
    contrast_threshold: float = DEFAULT_CONTRAST,
    niter: int = 25,
) -> SceneCodebook:
    """Learn centroids (seeded FAISS k-means on RootSIFT) and PCA (numpy SVD on the VLADs).

    ``whiten_power`` scales component ``i`` by ``eigenvalue_i ** -whiten_power``: 0 is plain
    PCA, 0.5 full whitening. Full whitening needs many more training images than components to
    estimate the small eigenvalues; with few it mostly amplifies noise. PCA signs are fixed (the
    largest entry of each component is positive) so that a retrained codebook does not flip
    components arbitrarily. Needs more images than ``pca_dim``. ``max_side``, ``max_features``
    and ``contrast_threshold`` (how features are extracted) are stored in the codebook, so that
    an embedder built on it extracts them the same way.
    """
    if len(images) <= pca_dim:
        raise ValueError(f"need more than pca_dim={pca_dim} training images, got {len(images)}")
    descs = [_extract(im, max_side, max_features, contrast_threshold)[1] for im in images]
    pool = np.concatenate(descs)
    if flip_invariant:
        pool = np.concatenate([pool, flip_descriptors(pool)])
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} descriptors for k={k} centroids")
    km = faiss.Kmeans(DESCRIPTOR_DIM, k, niter=niter, seed=seed, max_points_per_centroid=1000)
    km.train(np.ascontiguousarray(pool, dtype=np.float32))
    centroids = np.asarray(km.centroids, dtype=np.float32)

    kd = k * DESCRIPTOR_DIM
    provisional = SceneCodebook(
        centroids=centroids,
        pca_mean=np.zeros(kd, np.float32),
        pca_components=np.zeros((1, kd), np.float32),
        pca_scale=np.ones(1, np.float32),
        flip_invariant=flip_invariant,
        max_side=max_side,
        max_features=max_features,
        contrast_threshold=contrast_threshold,
    )
    x = vlad_batch(descs, provisional).astype(np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:pca_dim]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps *= signs[:, None]
    eig = (s[:pca_dim] ** 2) / max(1, len(x) - 1)
    scale = np.where(eig > _EPS, eig, _EPS) ** -whiten_power
    return SceneCodebook(
        centroids=centroids,
        pca_mean=mean.astype(np.float32),
        pca_components=comps.astype(np.float32),
        pca_scale=(scale / scale[0]).astype(np.float32),
        flip_invariant=flip_invariant,
        max_side=max_side,
        max_features=max_features,
        contrast_threshold=contrast_threshold,
    )
