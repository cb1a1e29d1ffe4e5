"""Scene embedding: cost per image and search quality, old (``scene-vlad``) vs new default.

Cost: ``--frames`` distinct JPEGs made like ``bench_ray.py`` (crops of the benign sample photos,
560-720 px wide, maybe mirrored), decoded the pass's way (``analyze_image``, 512 px working copy,
pixels kept), then embedded one image per call on one thread (OpenCV and FAISS limited to one).
The two models are timed in alternating rounds in this one process, so that both see the same
machine load; the best round of each is reported, with the median, and the stages of one
embedding (grey copy, SIFT, VLAD, PCA) are timed apart.

Quality, the same images for both models:

- ``transforms``: heroes' own search set (``heroes.bench.datasets.make_transform_set``: each photo
  and its half-size, 80 % crop, 5-15 degree turn and mirrored copies, the original as query),
  the same harness as ``heroes bench accuracy --task search``;
- ``hard``: each photo and seven harder edits (a 35-55 % crop shrunk and saved at JPEG 50, a 10-25
  degree turn, a perspective warp, an exposure change, a 200 px thumbnail, a half-size crop at
  JPEG 40, a low-light copy at 20-35 % brightness; every second one mirrored), every image a
  query (leave-one-out);
- ``stereo``: the two views of scikit-image's ``stereo_motorcycle`` (held out of codebook
  training) in the hard set as one group, and the margin by which each view's other view beats
  the best unrelated photo in cosine.

The photos are the benign sample photos of scikit-image and scikit-learn, which the codebooks were
trained on (except the stereo pair): the sets measure robustness to edits, not generalisation to
unseen places. No other images are used.

    python benchmarks/bench_scene.py [--frames 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np
import skimage.data
from _common import write_result
from bench_ray import make_files
from numpy.typing import NDArray

from heroes.bench import accuracy
from heroes.bench.datasets import make_transform_set, read_search
from heroes.bench.metrics import retrieval_metrics
from heroes.models import registry
from heroes.models.scene_embed import (
    SceneCodebook,
    SceneEmbedder,
    _working_gray,
    rootsift,
    vlad_batch,
)
from heroes.models.train_scene_codebook import benign_photos, jpeg

Image = NDArray[np.uint8]
OLD, NEW = "scene-vlad", "scene-vlad-fast"


def load(name: str) -> SceneEmbedder:
    """A model loaded the way the pass loads it: manifest, checksum, file."""
    return SceneEmbedder(SceneCodebook.load(registry.resolve(registry.get_spec(name))))


def frames(count: int, seed: int) -> list[Image]:
    from heroes.pipeline.decode import analyze_image

    with tempfile.TemporaryDirectory() as tmp:
        return [
            analyze_image(p.read_bytes(), working_size=512, keep_pixels=True).pixels
            for p in make_files(Path(tmp), count, seed)
        ]


def per_image_ms(fn: Any, items: list[Any]) -> float:
    return timed(fn, items)[0]


def timed(fn: Any, items: list[Any]) -> tuple[float, float]:
    """Wall-clock and CPU (this process) milliseconds per item; with one thread, CPU time is
    what the work costs even when other jobs share the machine."""
    t, c = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    n = len(items)
    return (time.perf_counter() - t) / n * 1000, (time.process_time() - c) / n * 1000


def cost(models: dict[str, SceneEmbedder], images: list[Image], repeat: int) -> dict[str, Any]:
    rounds: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for emb in models.values():
        emb.embed(images[:2])  # warm-up
    for _ in range(repeat):
        for name, emb in models.items():
            wall, cpu_ms = timed(lambda im, e=emb: e.embed([im]), images)
            rounds[name].append(wall)
            cpu[name].append(cpu_ms)
    out: dict[str, Any] = {"images": len(images), "repeat": repeat, "models": {}}
    for name, emb in models.items():
        side, nf, cb = emb.max_side, emb.max_features, emb.codebook
        ct = cb.contrast_threshold
        grays = [_working_gray(im, side) for im in images]
        descs = [rootsift(g, nf, ct)[1] for g in grays]
        vlads = [vlad_batch([d], cb) for d in descs]
        stages = {
            "grey_copy": per_image_ms(lambda im, s=side: _working_gray(im, s), images),
            "sift": per_image_ms(lambda g, n=nf, c=ct: rootsift(g, n, c), grays),
            "vlad": per_image_ms(lambda d, c=cb: vlad_batch([d], c), descs),
            "pca": per_image_ms(cb.project, vlads),
        }
        out["models"][name] = {
            "sift_side_px": side,
            "sift_contrast_threshold": ct,
            "ms_per_image_best": round(min(rounds[name]), 2),
            "ms_per_image_median": round(statistics.median(rounds[name]), 2),
            "cpu_ms_per_image_best": round(min(cpu[name]), 2),
            "rounds_ms": [round(x, 2) for x in rounds[name]],
            "stages_ms": {k: round(v, 3) for k, v in stages.items()},
            "descriptors_per_image": round(float(np.mean([len(d) for d in descs])), 1),
        }
    m = out["models"]
    out["ratio_new_over_old_best"] = round(
        m[NEW]["ms_per_image_best"] / m[OLD]["ms_per_image_best"], 3
    )
    out["ratio_new_over_old_cpu_best"] = round(
        m[NEW]["cpu_ms_per_image_best"] / m[OLD]["cpu_ms_per_image_best"], 3
    )
    out["ratio_new_over_old_median"] = round(
        m[NEW]["ms_per_image_median"] / m[OLD]["ms_per_image_median"], 3
    )
    return out


def hard_variants(image: Image, rng: np.random.Generator) -> list[Image]:
    h, w = image.shape[:2]

    def crop(lo: float, hi: float) -> Image:
        area = rng.uniform(lo, hi)
        ch, cw = max(16, round(h * np.sqrt(area))), max(16, round(w * np.sqrt(area)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return np.ascontiguousarray(image[y : y + ch, x : x + cw])

    def shrink(a: Image, s: float) -> Image:
        size = (max(16, round(a.shape[1] * s)), max(16, round(a.shape[0] * s)))
        return cv2.resize(a, size, interpolation=cv2.INTER_AREA)

    out = [jpeg(shrink(crop(0.35, 0.55), rng.uniform(0.4, 0.8)), 50)]
    angle = float(rng.uniform(10, 25)) * float(rng.choice([-1, 1]))
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    out.append(jpeg(cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REFLECT), 70))
    d = 0.12 * min(h, w)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = (src + rng.uniform(-d, d, (4, 2))).astype(np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    out.append(jpeg(cv2.warpPerspective(image, warp, (w, h), borderMode=cv2.BORDER_REPLICATE), 75))
    gamma, gain = rng.uniform(0.6, 1.6), rng.uniform(0.8, 1.1)
    lut = np.clip(255 * (np.arange(256) / 255) ** gamma * gain, 0, 255).astype(np.uint8)
    out.append(jpeg(cv2.LUT(crop(0.6, 0.9), lut), 60))
    out.append(jpeg(shrink(image, 200 / max(h, w)), 70))
    out.append(jpeg(shrink(crop(0.5, 0.8), 0.5), 40))
    dim = rng.uniform(0.2, 0.35)  # a photo taken in low light
    out.append(jpeg(np.clip(image.astype(np.float32) * dim, 0, 255).astype(np.uint8), 80))
    return [np.ascontiguousarray(o[:, ::-1]) if i % 2 else o for i, o in enumerate(out)]


def hard_set(
    photos: dict[str, Image], stereo: tuple[Image, Image], seed: int
) -> tuple[list[Image], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    images: list[Image] = []
    groups: list[int] = []
    for g, name in enumerate(sorted(photos)):
        variants = [photos[name], *hard_variants(photos[name], rng)]
        images += variants
        groups += [g] * len(variants)
    for view in stereo:  # both views and three edits of each: one group
        variants = [view, *hard_variants(view, rng)[:3]]
        images += variants
        groups += [len(photos)] * len(variants)
    return images, np.asarray(groups)


def leave_one_out(vectors: NDArray[np.float32], groups: NDArray[np.int64]) -> dict[str, float]:
    ranked, relevant = [], []
    for j in range(len(vectors)):
        if not vectors[j].any():
            continue
        sims = vectors @ vectors[j]
        ranked.append([int(k) for k in np.argsort(-sims, kind="stable") if k != j])
        relevant.append({int(k) for k in np.flatnonzero(groups == groups[j]) if k != j})
    return retrieval_metrics(ranked, relevant, (1, 5, 10))


class _Named:
    def __init__(self, name: str, emb: SceneEmbedder) -> None:
        self.name, self.emb = name, emb

    def embed(self, image: Image) -> NDArray[np.float32]:
        return self.emb.embed([image])[0]


def quality(models: dict[str, SceneEmbedder], seed: int) -> dict[str, Any]:
    photos = {k: v for k, v in benign_photos().items() if k != "colorwheel"}  # no keypoints
    left, right, _ = skimage.data.stereo_motorcycle()
    images, groups = hard_set(photos, (left, right), seed)
    out: dict[str, Any] = {
        "photos": len(photos),
        "hard_images": len(images),
        "models": {},
    }
    keys = ("recall@1", "recall@5", "recall@10", "hit@1", "hit@5", "mAP")
    with tempfile.TemporaryDirectory() as tmp:
        listing = make_transform_set({**photos, "stereo_left": left}, Path(tmp), seed=seed)
        ds = read_search(listing, "csv")
        out["transform_images"] = len(ds.samples)
        for name, emb in models.items():
            res = accuracy.search(ds, _Named(name, emb))
            gallery = emb.embed(list(photos.values()))
            lv, rv = emb.embed([left, right])
            margins = [float(rv @ lv - (gallery @ lv).max()), float(lv @ rv - (gallery @ rv).max())]
            hard = leave_one_out(emb.embed(images), groups)
            out["models"][name] = {
                "transforms": {k: round(res[k], 4) for k in keys},
                "hard": {k: round(hard[k], 4) for k in keys},
                "stereo_cosine": round(float(lv @ rv), 4),
                "stereo_margin_min": round(min(margins), 4),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    models = {OLD: load(OLD), NEW: load(NEW)}
    speed = cost(models, frames(args.frames, args.seed), args.repeat)
    qual = quality(models, args.seed)
    for name in models:
        s, q = speed["models"][name], qual["models"][name]
        print(
            f"{name:16s} {s['ms_per_image_best']:7.2f} ms/img (median {s['ms_per_image_median']}) "
            f"transforms mAP {q['transforms']['mAP']:.3f} hard mAP {q['hard']['mAP']:.3f} "
            f"hard hit@1 {q['hard']['hit@1']:.3f} stereo margin {q['stereo_margin_min']:.3f}",
            file=sys.stderr,
        )
    print(
        f"new/old cost: {speed['ratio_new_over_old_best']} (wall), "
        f"{speed['ratio_new_over_old_cpu_best']} (CPU time)",
        file=sys.stderr,
    )
    write_result("scene", {"threads": 1, "cost": speed, "quality": qual})


if __name__ == "__main__":
    main()
