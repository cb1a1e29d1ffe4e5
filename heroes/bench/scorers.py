"""A manifest in, the one call a benchmark needs out.

``load_spec`` takes a manifest name (``heroes models list``) or a path to a TOML file; a plain
relative ``file`` in a TOML given by path is looked up beside that TOML first. ``scorer_for``
builds, from the manifest's task, the object a benchmark runs:

- ``age``: image -> faces with (age, P(age<18)); faces come from the detector and are aligned with
  the landmark model, or (``faces="whole"``) the image itself is the face chip, for sets of
  aligned face crops such as UTKFace's;
- ``detect``: image -> nudity score (the detector's explicit-class probability);
- ``face_embed``: image -> identity vector of the largest face (None when no face is found);
- ``scene_embed``: image -> scene vector.

Benchmarks accept any object with the same method, so a test can hand in a fake with known
scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from heroes.models import registry
from heroes.models.registry import ModelSpec

Box = tuple[float, float, float, float]


def load_spec(ref: str | Path | ModelSpec) -> ModelSpec:
    """A manifest by name or by TOML path."""
    if isinstance(ref, ModelSpec):
        return ref
    p = Path(ref)
    if str(ref).endswith(".toml") or p.is_file():
        if not p.is_file():
            raise ValueError(f"no such manifest: {p}")
        spec = ModelSpec.from_toml(p.read_text(encoding="utf-8"), str(p))
        f = Path(spec.file)
        if not spec.file.startswith(("package:", "converted:")) and not f.is_absolute():
            beside = p.parent / f
            if beside.exists():
                spec = dataclasses.replace(spec, file=str(beside.resolve()))
        return spec
    return registry.get_spec(str(ref))


@dataclass(frozen=True, slots=True)
class FaceAge:
    age: float
    p_minor: float
    box: Box


class AgeScorer(Protocol):
    name: str

    def predict(self, image: NDArray[np.uint8]) -> list[FaceAge]: ...


class NudityScorer(Protocol):
    name: str
    threshold: float

    def score(self, image: NDArray[np.uint8]) -> float: ...


class Embedder(Protocol):
    name: str

    def embed(self, image: NDArray[np.uint8]) -> NDArray[np.float32] | None: ...


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


class _FaceFinder:
    """Detector boxes -> aligned chips (the way the pass cuts them)."""

    def __init__(self, detector: str | ModelSpec, landmarks: str | ModelSpec) -> None:
        from heroes.models.detect import Detector
        from heroes.models.faces import Landmarks

        self.detector = Detector(load_spec(detector))
        self.landmarks = Landmarks(load_spec(landmarks))

    def chips(
        self, image: NDArray[np.uint8], size: int, padding: float, largest: bool = False
    ) -> tuple[NDArray[np.uint8], list[Box]]:
        (det,) = self.detector.detect([image])
        boxes = [f.bbox for f in det.faces]
        if largest and boxes:
            boxes = [max(boxes, key=_area)]
        if not boxes:
            return np.zeros((0, size, size, 3), np.uint8), []
        shapes = self.landmarks.shapes(image, boxes)
        return self.landmarks.chips(image, shapes, size, padding), boxes


def _whole_chip(image: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[None]


def _face_chips(
    finder: _FaceFinder | None,
    image: NDArray[np.uint8],
    size: int,
    padding: float,
    *,
    largest: bool = False,
) -> tuple[NDArray[np.uint8], list[Box]]:
    """The chips a face model reads: the faces found (``--faces detect``), or the whole image
    as one already-aligned face (``--faces whole``)."""
    if finder is None:
        h, w = image.shape[:2]
        return _whole_chip(image, size), [(0.0, 0.0, float(w), float(h))]
    return finder.chips(image, size, padding, largest)


class ManifestAge:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        faces: str = "detect",
        detector: str = "nudenet-320n",
        landmarks: str = "dlib-landmarks-5",
    ) -> None:
        from heroes.models.faces import AgeEstimator

        self.name = spec.name
        self.model = AgeEstimator(spec)
        self.faces = faces
        self.finder = _FaceFinder(detector, landmarks) if faces == "detect" else None

    def predict(self, image: NDArray[np.uint8]) -> list[FaceAge]:
        size, pad = self.model.chip_size, self.model.spec.input.chip_padding
        chips, boxes = _face_chips(self.finder, image, size, pad)
        return [
            FaceAge(e.age, e.p_minor, b)
            for e, b in zip(self.model.estimate(chips), boxes, strict=True)
        ]


class ManifestNudity:
    def __init__(self, spec: ModelSpec) -> None:
        from heroes.models.detect import Detector

        self.name = spec.name
        self.model = Detector(spec)
        self.threshold = self.model.nudity_threshold

    def score(self, image: NDArray[np.uint8]) -> float:
        return float(self.model.detect([image])[0].nudity_score)


class ManifestFace:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        faces: str = "detect",
        detector: str = "nudenet-320n",
        landmarks: str = "dlib-landmarks-5",
    ) -> None:
        from heroes.models.faces import FaceEmbedder

        self.name = spec.name
        self.model = FaceEmbedder(spec)
        self.finder = _FaceFinder(detector, landmarks) if faces == "detect" else None

    def embed(self, image: NDArray[np.uint8]) -> NDArray[np.float32] | None:
        size, pad = self.model.chip_size, self.model.spec.input.chip_padding
        chips, _ = _face_chips(self.finder, image, size, pad, largest=True)
        if not len(chips):
            return None
        return self.model.embed(chips)[0]


class ManifestScene:
    def __init__(self, spec: ModelSpec) -> None:
        self.name = spec.name
        if spec.format == "onnx":
            from heroes.models.image_embed import ImageEmbedder

            self.model: Any = ImageEmbedder(spec)
        else:
            from heroes.models.scene_embed import SceneCodebook, SceneEmbedder

            self.model = SceneEmbedder(SceneCodebook.load(registry.resolve(spec)))

    def embed(self, image: NDArray[np.uint8]) -> NDArray[np.float32] | None:
        return np.asarray(self.model.embed([image])[0], dtype=np.float32)


TASK_OF_BENCH = {
    "age": ("age",),
    "nudity": ("detect",),
    # pairs of a scene model: "same scene", the threshold a search of places needs
    "face-verify": ("face_embed", "scene_embed"),
    "search": ("scene_embed", "face_embed"),
}
DEFAULT_MODELS = {
    "age": "age-v1",
    "nudity": "nudenet-320n",
    "face-verify": "dlib-face-resnet",
    "search": "scene-vlad-fast",
}


def scorer_for(task: str, ref: str | Path | ModelSpec, *, faces: str = "detect") -> Any:
    """The scorer of a benchmark task for a model given by manifest name or path."""
    spec = load_spec(ref)
    if task not in TASK_OF_BENCH:
        raise ValueError(f"unknown task {task!r}: {', '.join(TASK_OF_BENCH)}")
    if spec.task not in TASK_OF_BENCH[task]:
        raise ValueError(
            f"model {spec.name!r} is a {spec.task} model; task {task} needs "
            + " or ".join(TASK_OF_BENCH[task])
        )
    registry.resolve(spec)  # fail now, with the install hint, not on the first image
    if task == "age":
        return ManifestAge(spec, faces=faces)
    if task == "nudity":
        return ManifestNudity(spec)
    if spec.task == "face_embed":
        return ManifestFace(spec, faces=faces)
    return ManifestScene(spec)
