"""The face branch: 5-point alignment, age estimation and identity embedding, batched.

Face boxes come from the detector; dlib's 5-point shape predictor places eye corners and nose so
that each face is cut out as an aligned chip, the way the age and identity networks were trained
(dlib ``get_face_chip``: 64 px with padding 0.2 for age, 150 px with padding 0.25 for identity).
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


class AgeEstimator(OnnxModel):
    """Age from an aligned chip: an 81-bin distribution -> expected age, P(age < 18), interval."""

    max_batch = 256

    def __init__(self, spec: Any = "age-v1", **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.bins = np.asarray(self.spec.output.bins, dtype=np.float32)
        self.minor_age = float(self.spec.params.get("minor_age", 18))
        self.coverage = float(self.spec.params.get("interval", 0.8))

    @property
    def chip_size(self) -> int:
        return int(self.spec.input.size[0])

    def decode(self, probs: NDArray[np.float32]) -> list[AgeEstimate]:
        p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
        expected = p @ self.bins
        p_minor = p[:, self.bins < self.minor_age].sum(axis=1)
        cdf = np.cumsum(p, axis=1)
        lo_q, hi_q = (1 - self.coverage) / 2, 1 - (1 - self.coverage) / 2
        lo = self.bins[np.minimum((cdf < lo_q).sum(axis=1), len(self.bins) - 1)]
        hi = self.bins[np.minimum((cdf < hi_q).sum(axis=1), len(self.bins) - 1)]
        return [
            AgeEstimate(float(a), float(m), (float(a0), float(a1)))
            for a, m, a0, a1 in zip(expected, p_minor, lo, hi, strict=True)
        ]

    def estimate(self, chips: NDArray[np.uint8]) -> list[AgeEstimate]:
        if len(chips) == 0:
            return []
        (probs,) = self.run(self.normalise(chips))[:1]
        return self.decode(probs)


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
