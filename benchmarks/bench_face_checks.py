"""How the face confirmation and the graphics guard change results on benign sets.

Face confirmation (``FaceConfirmer``): human faces kept, and animal faces still passing, on
- cat: ``--cat-crops`` random crops of scikit-image's cat photo (``skimage.data.chelsea``);
- photos: the benign sample photos of scikit-image and scikit-learn (the demo's photos among them);
- composites: the astronaut's and the cameraman's faces pasted, scaled and turned, onto the other
  photos;
- lfw: scikit-image's ``lfw_subset`` (100 small adult faces of public figures), each upscaled and
  pasted onto a photo.
Graphics guard (``Detector``): nudity scores of graphics (colour wheel, checkerboard, gradients,
shapes, text renders) and of the photos, with the guard's discount and reason.

No image of a person other than these public sample photos is used; no sexual content.
"""

from __future__ import annotations

import argparse
from typing import Any

import cv2
import numpy as np
import skimage.data as data
from _common import write_result
from numpy.typing import NDArray

from heroes.demo import sample_photos
from heroes.models.train_scene_codebook import benign_photos
from heroes.pipeline.infer import Analyzer, InferOptions

Image = NDArray[np.uint8]


def cat_crops(n: int, rng: np.random.Generator) -> list[Image]:
    cat = data.chelsea()
    h0, w0 = cat.shape[:2]
    out = []
    for _ in range(n):
        s = rng.uniform(0.3, 1.0)
        h, w = int(h0 * s), int(w0 * s)
        y, x = int(rng.integers(0, h0 - h + 1)), int(rng.integers(0, w0 - w + 1))
        out.append(np.ascontiguousarray(cat[y : y + h, x : x + w]))
    return out


def paste(bg: Image, face: Image, scale: float, angle: float, at: tuple[int, int]) -> Image:
    f = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    m = cv2.getRotationMatrix2D((f.shape[1] / 2, f.shape[0] / 2), angle, 1)
    f = cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REFLECT)
    out = cv2.resize(bg, (512, 400)).copy()
    y, x = at
    h, w = min(f.shape[0], 400 - y), min(f.shape[1], 512 - x)
    out[y : y + h, x : x + w] = f[:h, :w]
    return out


def composites(photos: dict[str, Image]) -> list[Image]:
    astro, cam = data.astronaut(), np.stack([data.camera()] * 3, -1)
    faces = [astro[20:230, 120:330], cam[40:200, 180:320]]
    out = []
    for bg in list(photos.values())[:8]:
        for face in faces:
            for scale in (0.5, 0.8, 1.2):
                for angle in (0, 15):
                    out.append(paste(bg, face, scale, angle, (50, 100)))
    return out


def lfw(photos: dict[str, Image]) -> list[Image]:
    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    bgs = list(photos.values())
    out = []
    for i, f in enumerate(faces):
        rgb = np.stack([(f * 255).astype(np.uint8)] * 3, -1)
        out.append(paste(bgs[i % len(bgs)], rgb, 6.0, 0, (60, 150)))
    return out


def faces_of(an: Analyzer, images: list[Image]) -> list[list[dict[str, Any]]]:
    out = []
    for im in images:
        (res,) = an.analyze([im], [None])
        out.append(res.faces)
    return out


def summary(per_image: list[list[dict[str, Any]]]) -> dict[str, Any]:
    faces = [f for fs in per_image for f in fs]
    conf = [f for f in faces if f.get("confirmed", True)]
    return {
        "images": len(per_image),
        "images_with_face": sum(bool(fs) for fs in per_image),
        "faces": len(faces),
        "confirmed": len(conf),
        "p_minor_ge_0.5": sum((f.get("p_minor") or 0) >= 0.5 for f in faces),
        "p_minor_ge_0.5_confirmed": sum((f.get("p_minor") or 0) >= 0.5 for f in conf),
    }


def raw_interval(p: NDArray[np.float64], bins: NDArray[np.float64], coverage: float) -> tuple:
    """The interval as it was read before calibration: CDF steps on the bins."""
    cdf = np.cumsum(p / p.sum())
    lo = bins[min(int((cdf < (1 - coverage) / 2).sum()), len(bins) - 1)]
    hi = bins[min(int((cdf < 1 - (1 - coverage) / 2).sum()), len(bins) - 1)]
    return float(lo), float(hi)


def age_intervals(an: Analyzer, images: list[Image]) -> dict[str, Any]:
    """Raw (uncalibrated) and calibrated 80% intervals of every confirmed face."""
    captured: list[NDArray[np.float32]] = []
    decode = an.age.decode

    def spy(probs: NDArray[np.float32]) -> Any:
        captured.append(np.asarray(probs, np.float64))
        return decode(probs)

    an.age.decode = spy
    try:
        faces = [f for fs in faces_of(an, images) for f in fs]
    finally:
        an.age.decode = decode
    probs = np.concatenate(captured) if captured else np.zeros((0, len(an.age.bins)))
    bins = an.age.bins.astype(np.float64)
    rows = []
    for f, p in zip(faces, probs, strict=True):
        if not f["confirmed"]:
            continue
        e = float(p @ bins / p.sum())
        lo, hi = raw_interval(p, bins, an.age.coverage)
        rows.append((e, lo, hi, *f["age_interval"]))
    a = np.asarray(rows).reshape(-1, 5)
    raw_w, new_w = a[:, 2] - a[:, 1], a[:, 4] - a[:, 3]
    return {
        "faces": len(a),
        "raw_zero_width": int((raw_w == 0).sum()),
        "raw_excludes_estimate": int(((a[:, 0] < a[:, 1]) | (a[:, 0] > a[:, 2])).sum()),
        "raw_width_median": float(np.median(raw_w)) if len(a) else None,
        "calibrated_excludes_estimate": int(((a[:, 0] < a[:, 3]) | (a[:, 0] > a[:, 4])).sum()),
        "calibrated_width_min": float(new_w.min()) if len(a) else None,
        "calibrated_width_median": float(np.median(new_w)) if len(a) else None,
    }


def graphics(rng: np.random.Generator) -> dict[str, Image]:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    g = {"colorwheel": np.ascontiguousarray(data.colorwheel()[..., :3])}
    yy, xx = np.mgrid[0:400, 0:400]
    g["checkerboard"] = np.stack([data.checkerboard()] * 3, -1)
    g["gradient_h"] = np.stack([(xx * 255 / 399).astype(np.uint8)] * 3, -1)
    g["gradient_rgb"] = np.stack(
        [(xx * 255 / 399), (yy * 255 / 399), ((xx + yy) * 255 / 798)], -1
    ).astype(np.uint8)
    g["skin_gradient"] = np.stack(
        [200 + 40 * xx / 399, 150 + 40 * yy / 399, 120 + 30 * xx / 399], -1
    ).astype(np.uint8)
    shapes = PILImage.new("RGB", (480, 360), (240, 220, 200))
    d = ImageDraw.Draw(shapes)
    for _ in range(12):
        x, y = rng.integers(0, 400, 2)
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        d.ellipse([int(x), int(y), int(x) + 80, int(y) + 60], fill=c)
    g["shapes"] = np.asarray(shapes)
    text = PILImage.new("RGB", (640, 360), (255, 255, 255))
    d = ImageDraw.Draw(text)
    for i in range(12):
        d.text((10, 10 + 28 * i), "Lorem ipsum dolor sit amet, consectetur " * 2, fill=(0, 0, 0))
    g["text"] = np.asarray(text)
    g["flat"] = np.full((300, 300, 3), (210, 160, 140), np.uint8)
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cat-crops", type=int, default=150)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = {**sample_photos(), **benign_photos()}
    sets = {
        "cat": cat_crops(args.cat_crops, rng),
        "photos": list(photos.values()),
        "composites": composites(photos),
        "lfw": lfw(photos),
    }
    an = Analyzer(InferOptions(scene_embed=None, face_embed=None))
    faces = {name: summary(faces_of(an, ims)) for name, ims in sets.items()}
    human = sets["photos"] + sets["composites"] + sets["lfw"]
    ages = age_intervals(an, human)
    (astro,) = an.analyze([data.astronaut()], [None])
    ages["astronaut"] = {  # Eileen Collins, born 1956, NASA portrait of about 1998-1999
        k: astro.faces[0][k] for k in ("age", "p_minor", "age_interval")
    }
    det = an.detector
    gfx = graphics(rng)
    nud: dict[str, Any] = {}
    for name, im in {**gfx, **photos}.items():
        (r,) = det.detect([im])
        nud[name] = {
            "score": round(r.nudity_score, 4),
            "raw_score": round(getattr(r, "raw_nudity_score", r.nudity_score), 4),
            "explicit": r.explicit,
            "guard": getattr(r, "guard", None),
        }
    write_result(
        "face_checks",
        {
            "seed": args.seed,
            "face_confirm": an.opts.face_confirm,
            "faces": faces,
            "age_intervals": ages,
            "nudity": nud,
        },
    )


if __name__ == "__main__":
    main()
