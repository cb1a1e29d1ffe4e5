"""The face branch: 5-point alignment, age estimation and identity embedding, batched.

Face boxes come from the detector; dlib's 5-point shape predictor places eye corners and nose so
that each face is cut out as an aligned chip, the way the age and identity networks were trained
(dlib ``get_face_chip``: 64 px with padding 0.2 for age, 150 px with padding 0.25 for identity).
Each face is also checked by an independent human-face model (:class:`FaceConfirmer`), and the
age interval is read from a calibrated distribution (:func:`calibrated_interval`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heroes.models import registry
from heroes.models.base import OnnxModel
from heroes.models.registry import ModelSpec


@dataclass(frozen=True, slots=True)
class AgeEstimate:
    age: float
    p_minor: float
    interval: tuple[float, float]


class Landmarks:
    """dlib's 5-point landmark model; loaded once per process (dlib objects are not picklable)."""

    def __init__(self, spec: ModelSpec | str = "dlib-landmarks-5") -> None:
        self.spec = registry.get_spec(spec) if isinstance(spec, str) else spec
        self._predictor: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._predictor is None:
                import dlib

                self._predictor = dlib.shape_predictor(str(registry.resolve(self.spec)))
        return self._predictor

    def shapes(
        self, image: NDArray[np.uint8], boxes: list[tuple[float, float, float, float]]
    ) -> list[Any]:
        import dlib

        sp = self.load()
        img = np.ascontiguousarray(image)
        return [
            sp(img, dlib.rectangle(int(x1), int(y1), int(x2), int(y2))) for x1, y1, x2, y2 in boxes
        ]

    @staticmethod
    def points(shape: Any) -> list[list[int]]:
        return [[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)]

    @staticmethod
    def chips(
        image: NDArray[np.uint8], shapes: list[Any], size: int, padding: float
    ) -> NDArray[np.uint8]:
        """Aligned square chips, one per shape: [N, size, size, 3] RGB uint8."""
        import dlib

        if not shapes:
            return np.zeros((0, size, size, 3), dtype=np.uint8)
        img = np.ascontiguousarray(image)
        return np.stack(
            [np.asarray(dlib.get_face_chip(img, s, size=size, padding=padding)) for s in shapes]
        )


class FaceConfirmer:
    """A second, independent check that a detected face is a human face: dlib's HOG frontal face
    detector (it ships inside dlib, no model file) run on upright chips cut along the 5-point
    landmarks.

    The body-part detector finds faces on animals too (on crops of the scikit-image cat photo a
    cat face came out at P(minor) 0.98); a HOG face model trained on human faces, looking at the
    same face aligned, rarely agrees with it. A face is confirmed when, on one of the chips, a HOG
    window centred on the chip scores at least ``threshold`` (dlib's own detection threshold is 0;
    below it the detector is asked for weaker windows, to keep small and blurred human faces).
    """

    #: chip size and padding of each look: tight (150 px, 0.25) and wider (160 px, 0.4)
    looks: tuple[tuple[int, float], ...] = ((150, 0.25), (160, 0.4))

    def __init__(self, threshold: float = -0.6) -> None:
        self.threshold = threshold
        self._detector: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._detector is None:
                import dlib

                self._detector = dlib.get_frontal_face_detector()
        return self._detector

    def scores(self, image: NDArray[np.uint8], shapes: list[Any]) -> list[float | None]:
        """Per shape, the best centred HOG score over the looks (None: no window at all)."""
        det = self.load()
        out: list[float | None] = []
        for shape in shapes:
            best: float | None = None
            for size, padding in self.looks:
                (chip,) = Landmarks.chips(image, [shape], size, padding)
                rects, scores, _ = det.run(np.ascontiguousarray(chip), 0, self.threshold)
                for r, sc in zip(rects, scores, strict=True):
                    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
                    centred = abs(cx - size / 2) < 0.2 * size and abs(cy - size / 2) < 0.25 * size
                    if centred and (best is None or sc > best):
                        best = float(sc)
            out.append(best)
        return out

    def confirm(self, image: NDArray[np.uint8], shapes: list[Any]) -> list[bool]:
        return [s is not None and s >= self.threshold for s in self.scores(image, shapes)]


class AgeEstimator(OnnxModel):
    """Age from an aligned chip: an 81-bin distribution -> expected age, P(age < 18), interval.

    The expected age and P(age < 18) are read from the network's distribution as it is. The
    interval is not: the network is over-confident (on 13 adult portraits of known age its raw
    80% interval held the true age twice, and 23 of 104 intervals had zero width), so the interval
    is read from a *calibrated* copy of the distribution (:func:`calibrated_interval`): sharpened
    or flattened by a temperature, spread by the model's own error (a Gaussian of
    ``interval_sigma`` years over the age axis), its quantiles interpolated between bins, then
    widened to contain the expected age and to be at least ``2 * interval_min_half_width`` years.
    """

    max_batch = 256

    def __init__(self, spec: Any = "age-v1", **kw: Any) -> None:
        super().__init__(spec, **kw)
        p = self.spec.params
        self.bins = np.asarray(self.spec.output.bins, dtype=np.float32)
        self.minor_age = float(p.get("minor_age", 18))
        self.coverage = float(p.get("interval", 0.8))
        self.temperature = float(p.get("interval_temperature", 1.0))
        self.sigma = float(p.get("interval_sigma", 0.0))
        self.min_half_width = float(p.get("interval_min_half_width", 2.0))

    @property
    def chip_size(self) -> int:
        return int(self.spec.input.size[0])

    def decode(self, probs: NDArray[np.float32]) -> list[AgeEstimate]:
        p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
        expected = p @ self.bins
        p_minor = p[:, self.bins < self.minor_age].sum(axis=1)
        lo, hi = calibrated_interval(
            p,
            self.bins,
            expected,
            coverage=self.coverage,
            temperature=self.temperature,
            sigma=self.sigma,
            min_half_width=self.min_half_width,
        )
        return [
            AgeEstimate(float(a), float(m), (float(a0), float(a1)))
            for a, m, a0, a1 in zip(expected, p_minor, lo, hi, strict=True)
        ]

    def estimate(self, chips: NDArray[np.uint8]) -> list[AgeEstimate]:
        if len(chips) == 0:
            return []
        (probs,) = self.run(self.normalise(chips))[:1]
        return self.decode(probs)


def calibrated_interval(
    probs: NDArray[np.floating[Any]],
    bins: NDArray[np.floating[Any]],
    estimate: NDArray[np.floating[Any]],
    *,
    coverage: float = 0.8,
    temperature: float = 1.0,
    sigma: float = 0.0,
    min_half_width: float = 2.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``coverage`` interval ``(lo, hi)`` per row of age distributions ``probs`` over ``bins``.

    1. Temperature: ``p ** (1 / temperature)``, renormalised (above 1 flattens an over-confident
       distribution).
    2. Smoothing: the distribution is resampled on a 1-year grid and convolved with a Gaussian of
       ``sigma`` years (the model's own error, which its softmax does not show), renormalised
       inside the model's range ``[bins[0], bins[-1]]``.
    3. Quantiles ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` of that distribution, each
       year's mass spread evenly over that year (CDF linear between half-years), so they are not
       stuck on bins.
    4. Honesty floor: the interval is widened to hold ``estimate`` (the point estimate shown beside
       it) and to be at least ``2 * min_half_width`` wide, still inside the model's range.

    Each step only widens as ``coverage`` grows, so the interval is monotone in ``coverage``.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"interval coverage must be in (0, 1), not {coverage}")
    if temperature <= 0:
        raise ValueError(f"interval temperature must be positive, not {temperature}")
    b = np.asarray(bins, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-300, None)
    if temperature != 1.0:
        p = np.power(p, 1.0 / temperature)
        p /= np.clip(p.sum(axis=1, keepdims=True), 1e-300, None)
    lo_b, hi_b = float(b[0]), float(b[-1])
    grid = np.arange(np.floor(lo_b), np.ceil(hi_b) + 1.0, 1.0)
    grid = np.clip(grid, lo_b, hi_b)
    # mass of each bin moved to the nearest grid point (bins are 1 year apart but for 0.25)
    idx = np.abs(grid[None, :] - b[:, None]).argmin(axis=1)
    g = np.zeros((p.shape[0], len(grid)))
    np.add.at(g, (slice(None), idx), p)
    if sigma > 0:
        k = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / sigma) ** 2)  # [from, to]
        g = g @ k
    g /= np.clip(g.sum(axis=1, keepdims=True), 1e-300, None)
    lo = _quantile(g, grid, (1 - coverage) / 2)
    hi = _quantile(g, grid, (1 + coverage) / 2)
    est = np.clip(np.asarray(estimate, dtype=np.float64), lo_b, hi_b)
    lo = np.minimum(lo, est - min_half_width)
    hi = np.maximum(hi, est + min_half_width)
    # clipped at one end of the range: the width moves to the other end
    hi = np.where(lo < lo_b, np.maximum(hi, lo_b + 2 * min_half_width), hi)
    lo = np.where(hi > hi_b, np.minimum(lo, hi_b - 2 * min_half_width), lo)
    lo, hi = np.clip(lo, lo_b, hi_b), np.clip(hi, lo_b, hi_b)
    return np.floor(lo * 10) / 10, np.ceil(hi * 10) / 10


def _quantile(
    mass: NDArray[np.float64], grid: NDArray[np.float64], q: float
) -> NDArray[np.float64]:
    """Per row, the age below which ``q`` of ``mass`` lies, each grid point's mass spread evenly
    over ``[x - 0.5, x + 0.5]`` (a 1-year bin)."""
    edges = np.concatenate([[grid[0] - 0.5], grid + 0.5])
    out = np.empty(mass.shape[0])
    for r, row in enumerate(mass):
        cdf = np.concatenate([[0.0], np.cumsum(row)])
        j = int(np.clip(np.searchsorted(cdf, q, side="left"), 1, len(cdf) - 1))
        step = cdf[j] - cdf[j - 1]
        frac = (q - cdf[j - 1]) / step if step > 0 else 0.0
        out[r] = edges[j - 1] + float(np.clip(frac, 0.0, 1.0)) * (edges[j] - edges[j - 1])
    return out


class FaceEmbedder(OnnxModel):
    """Identity embedding of an aligned chip, L2-normalised so that cosine is a dot product."""

    max_batch = 256

    def __init__(self, spec: Any = "dlib-face-resnet", **kw: Any) -> None:
        super().__init__(spec, **kw)

    @property
    def chip_size(self) -> int:
        return int(self.spec.input.size[0])

    @property
    def dim(self) -> int:
        return int(self.spec.output.dim or 128)

    def embed(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        (emb,) = self.run(self.normalise(chips))[:1]
        emb = emb.reshape(len(chips), -1).astype(np.float32)
        return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
