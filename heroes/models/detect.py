"""Body-part and face detection with the NudeNet YOLOv8 model, batched, with the nudity score.

Preprocessing follows how the model was trained (Ultralytics): the image is scaled to fit 320 px
and centred on a grey (114) square, colour order RGB, values /255. The peer package pads at the
right/bottom with black and, through two colour conversions, feeds BGR; both shift the scores
(a coffee cup reads BUTTOCKS_EXPOSED 0.30 that way, 0.15 this way).

Nudity score: the highest probability, over all anchors, of the explicit exposed-part classes
(genitalia, female breast, buttocks, anus exposed). Covered parts, faces, feet, belly, armpits and
male breasts are not explicit and do not count. An image is flagged explicit when the score
reaches ``nudity_threshold`` (0.5 by default): on every benign sample photo shipped by
scikit-image and scikit-learn the score stays well below it (see tests/models/test_detect.py),
and 0.5 is also the point where the detector's own boxes become reliable.

Graphics guard: the detector was trained on photos of people, and on some graphics it calls the
whole frame an exposed part (scikit-image's colour wheel: BUTTOCKS_EXPOSED 0.74 on a box covering
the whole image). An explicit-class prediction of at least ``guard_min`` is discounted (multiplied
by ``guard_discount``, 0.3) when

- the image has very few distinct colours (under ``guard_max_colours`` exact RGB values: flat
  synthetic graphics, charts, a checkerboard; a grey-scale photo has hundreds), or
- its box covers at least ``guard_area`` (0.6) of the frame, the image is in colour, and under
  ``guard_skin`` (0.2) of the box is skin-coloured (YCrCb rule Cr 133-173, Cb 77-127, which holds
  across skin tones). Grey-scale images are never discounted by this rule: colour says nothing
  there.

The detection then carries ``guard`` (why) and the image's score is the discounted one; the raw
score stays in ``raw_nudity_score``. Predictions under ``guard_min`` are never changed, so photos
whose parts score low keep their scores and detections (tests/models/test_detect.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from heroes.models.base import OnnxModel


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in the input image's pixels
    guard: str | None = None  # why an explicit score was discounted (see the module docstring)

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "label": self.label,
            "score": round(self.score, 4),
            "bbox": [round(v, 1) for v in self.bbox],
        }
        if self.guard is not None:
            rec["guard"] = self.guard
        return rec


@dataclass(slots=True)
class ImageDetections:
    detections: list[Detection] = field(default_factory=list)
    faces: list[Detection] = field(default_factory=list)
    nudity_score: float = 0.0
    explicit: bool = False
    raw_nudity_score: float = 0.0  # before the graphics guard
    guard: str | None = None  # why the score that set ``nudity_score`` was discounted


@dataclass(frozen=True, slots=True)
class ImageStats:
    """What the graphics guard looks at in one image."""

    colours: int  # distinct RGB colours
    chroma: float  # mean |Cr - 128| + |Cb - 128|: near 0 for grey-scale images
    skin: NDArray[np.float64]  # summed-area table of the skin-colour mask, [h + 1, w + 1]

    def skin_fraction(self, box: tuple[float, float, float, float]) -> float:
        h, w = self.skin.shape[0] - 1, self.skin.shape[1] - 1
        x1, y1 = int(np.clip(np.floor(box[0]), 0, w)), int(np.clip(np.floor(box[1]), 0, h))
        x2, y2 = int(np.clip(np.ceil(box[2]), 0, w)), int(np.clip(np.ceil(box[3]), 0, h))
        area = (x2 - x1) * (y2 - y1)
        if area <= 0:
            return 0.0
        t = self.skin
        return float((t[y2, x2] - t[y1, x2] - t[y2, x1] + t[y1, x1]) / area)


def image_stats(image: NDArray[np.uint8]) -> ImageStats:
    """Distinct colours, colourfulness and skin-colour mask of an RGB image."""
    q = image.astype(np.int32)
    colours = len(np.unique((q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]))
    ycc = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1].astype(np.int16), ycc[..., 2].astype(np.int16)
    chroma = float(np.mean(np.abs(cr - 128) + np.abs(cb - 128)))
    mask = ((cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)).astype(np.uint8)
    return ImageStats(colours, chroma, cv2.integral(mask, sdepth=cv2.CV_64F))


@dataclass(frozen=True, slots=True)
class Letterbox:
    scale: float
    pad_x: float
    pad_y: float


def letterbox(
    image: NDArray[np.uint8], size: int, pad_value: int = 114
) -> tuple[NDArray[np.uint8], Letterbox]:
    """Fit an RGB image into a ``size`` square, centred on a ``pad_value`` grey border."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = (
        cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    )
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out, Letterbox(r, left, top)


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> NDArray[np.int64]:
    """Indices kept by greedy non-maximum suppression (boxes x1, y1, x2, y2), best first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack(
        [boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]
    )
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


class Detector(OnnxModel):
    """Batched NudeNet detector: images in, detections, faces and a nudity score out."""

    max_batch = 64
    cpu_max_batch = 8  # measured: 160 img/s at 8 against 133 at 32 on a 2-core CPU

    def __init__(self, spec: Any = "nudenet-320n", **kw: Any) -> None:
        super().__init__(spec, **kw)
        p = self.spec.params
        self.labels = list(self.spec.output.labels)
        self.size = int(self.spec.input.size[0])
        self.score_threshold = float(p.get("score_threshold", 0.2))
        self.nms_iou = float(p.get("nms_iou", 0.45))
        self.face_threshold = float(p.get("face_threshold", 0.3))
        self.nudity_threshold = float(p.get("nudity_threshold", 0.5))
        self.guard_min = float(p.get("guard_min", 0.2))
        self.guard_discount = float(p.get("guard_discount", 0.3))
        self.guard_max_colours = int(p.get("guard_max_colours", 48))
        self.guard_area = float(p.get("guard_area", 0.6))
        self.guard_skin = float(p.get("guard_skin", 0.2))
        self.guard_min_chroma = float(p.get("guard_min_chroma", 4.0))
        self.face_idx = np.asarray(
            [self.labels.index(x) for x in p.get("face_labels", [])], dtype=np.int64
        )
        self.explicit_idx = np.asarray(
            [self.labels.index(x) for x in p.get("explicit_labels", [])], dtype=np.int64
        )

    def preprocess(
        self, images: list[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float32], list[Letterbox]]:
        boxed, geo = [], []
        for im in images:
            b, g = letterbox(im, self.size, self.spec.input.pad_value)
            boxed.append(b)
            geo.append(g)
        return self.normalise(np.stack(boxed)) if boxed else np.zeros(
            (0, 3, self.size, self.size), np.float32
        ), geo

    def decode(
        self,
        raw: NDArray[np.float32],
        geo: list[Letterbox],
        shapes: list[tuple[int, int]],
        images: list[NDArray[np.uint8]] | None = None,
    ) -> list[ImageDetections]:
        """Turn raw [N, 4 + C, A] outputs into detections in each input image's pixels.

        With ``images`` (the inputs), the graphics guard applies (see the module docstring)."""
        out: list[ImageDetections] = []
        if raw.ndim != 3 or raw.shape[1] != 4 + len(self.labels):
            raise ValueError(
                f"detector output shape {raw.shape} does not fit {len(self.labels)} classes"
            )
        pred = raw.transpose(0, 2, 1)  # [N, A, 4 + C]
        probs = pred[..., 4:]
        cls = probs.argmax(axis=2)
        conf = np.take_along_axis(probs, cls[..., None], axis=2)[..., 0]
        nudity = (
            probs[..., self.explicit_idx].max(axis=(1, 2))
            if len(self.explicit_idx)
            else np.zeros(len(pred))
        )
        cx, cy, bw, bh = pred[..., 0], pred[..., 1], pred[..., 2], pred[..., 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=2)
        for i, (g, (h, w)) in enumerate(zip(geo, shapes, strict=True)):
            res = ImageDetections(nudity_score=float(nudity[i]), raw_nudity_score=float(nudity[i]))
            guards: dict[int, str] = {}
            if images is not None and len(self.explicit_idx):
                guards = self._guard(images[i], probs[i], boxes[i], g, res)
            res.explicit = res.nudity_score >= self.nudity_threshold
            sel = np.nonzero(conf[i] >= min(self.score_threshold, self.face_threshold))[0]
            if len(sel):
                b = self._to_image(boxes[i, sel], g, h, w)
                c, s = cls[i, sel], conf[i, sel]
                # class-aware NMS in one call: shift each class to its own region
                offset = (self._nms_groups(c).astype(np.float32) * (max(h, w) + 1))[:, None]
                keep = nms(b + offset, s, self.nms_iou)
                for k in keep:
                    label = self.labels[int(c[k])]
                    det = Detection(
                        label,
                        float(s[k]),
                        tuple(float(v) for v in b[k]),  # type: ignore[arg-type]
                        guards.get(int(sel[k])),
                    )
                    if int(c[k]) in self.face_idx:
                        if det.score >= self.face_threshold:
                            res.faces.append(det)
                    elif det.score >= self.score_threshold:
                        res.detections.append(det)
            out.append(res)
        return out

    @staticmethod
    def _to_image(b: NDArray[np.float32], g: Letterbox, h: int, w: int) -> NDArray[np.float32]:
        b = (b - np.asarray([g.pad_x, g.pad_y, g.pad_x, g.pad_y], np.float32)) / g.scale
        return np.clip(b, 0, [w, h, w, h]).astype(np.float32)

    def _guard(
        self,
        image: NDArray[np.uint8],
        probs: NDArray[np.float32],
        boxes: NDArray[np.float32],
        g: Letterbox,
        res: ImageDetections,
    ) -> dict[int, str]:
        """Discount explicit predictions on graphics; sets ``res.nudity_score`` and ``res.guard``
        and returns, per anchor that was discounted, why."""
        explicit = probs[:, self.explicit_idx].max(axis=1)
        cand = np.nonzero(explicit >= self.guard_min)[0]
        if not len(cand):
            return {}
        h, w = image.shape[:2]
        stats = image_stats(image)
        b = self._to_image(boxes[cand], g, h, w)
        why: dict[int, str] = {}
        if stats.colours < self.guard_max_colours:
            reason = f"graphic: {stats.colours} distinct colours"
            why = {int(a): reason for a in cand}
        elif stats.chroma >= self.guard_min_chroma:
            for a, box in zip(cand, b, strict=True):
                area = float((box[2] - box[0]) * (box[3] - box[1])) / max(1, h * w)
                if area < self.guard_area:
                    continue
                skin = stats.skin_fraction(tuple(float(v) for v in box))  # type: ignore[arg-type]
                if skin < self.guard_skin:
                    why[int(a)] = (
                        f"box covers {area:.0%} of the frame with {skin:.0%} skin-like colour"
                    )
        if not why:
            return {}
        scores = explicit.astype(np.float64).copy()
        keys = np.fromiter(why, dtype=np.int64)
        scores[keys] *= self.guard_discount
        top = int(scores.argmax())
        res.nudity_score = float(scores[top])
        if int(explicit.argmax()) in why:
            res.guard = (
                f"{why[int(explicit.argmax())]}: score {res.raw_nudity_score:.4f} "
                f"x {self.guard_discount:g}"
            )
        return why

    def _nms_groups(self, classes: NDArray[np.int64]) -> NDArray[np.int64]:
        """The class each box competes in during NMS: its own, except that the face classes
        compete as one, so one face gets one box.

        The detector often scores FACE_FEMALE and FACE_MALE on the same face (7 of 104 faces on
        a set of public portraits; the cameraman sample at 0.55 of its size), which doubled faces in
        ``persons`` and in search results; the more confident label is kept.
        """
        if not len(self.face_idx):
            return classes
        return np.where(np.isin(classes, self.face_idx), self.face_idx[0], classes)

    def detect(self, images: list[NDArray[np.uint8]]) -> list[ImageDetections]:
        """Detect on RGB uint8 images of any sizes (one batch; chunks of ``max_batch``)."""
        if not images:
            return []
        x, geo = self.preprocess(images)
        (raw,) = self.run(x)[:1]
        return self.decode(raw, geo, [im.shape[:2] for im in images], images)
