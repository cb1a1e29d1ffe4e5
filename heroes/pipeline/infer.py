"""Inference over decoded frames: detector -> faces (landmarks, age, identity) + scene embedding.

A frame is an RGB working copy with an optional timestamp (a still image has none). All frames of a
file go through each model as one batch, so a video's keyframes are batched together. Boxes are
reported in the pixels of the original file (working-copy boxes scaled back), so an investigator
can find them in the evidence.

Every face the detector reports is checked a second time by an independent human-face model
(:class:`heroes.models.faces.FaceConfirmer`) and keeps ``confirmed`` (and ``confirm_score``) in its
record: an unconfirmed face (an animal, a pattern) stays in the record for a reviewer, but scoring
does not count it as a likely minor and ``persons`` does not group it into identities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from heroes.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferOptions:
    detector: str | None = "nudenet-320n"
    landmarks: str | None = "dlib-landmarks-5"
    age: str | None = "age-v1"
    face_embed: str | None = "dlib-face-resnet"
    scene_embed: str | None = "scene-vlad-fast"
    #: HOG score a face needs to be confirmed human (None: no check, every face confirmed)
    face_confirm: float | None = -0.6
    threads: int | None = None
    device: str | None = None
    #: half precision where the device runs it (TensorRT FP16 on a GPU; ignored on CPU)
    fp16: bool = True
    #: the ``model_dir`` and ``trt_cache`` settings, for the processes that load the models
    model_dir: str | None = None
    trt_cache: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, threads: int | None, **models: str | None
    ) -> InferOptions:
        """The named models (the others as their defaults) run as ``settings`` say: device,
        precision, model folder, TensorRT cache; ``threads`` per ONNX Runtime session."""
        return cls(
            **models,  # type: ignore[arg-type]
            threads=threads,
            device=settings.device,
            fp16=settings.fp16,
            model_dir=str(settings.model_dir) if settings.model_dir else None,
            trt_cache=str(settings.trt_cache) if settings.trt_cache else None,
        )


@dataclass
class FrameResult:
    frame_time: float | None
    faces: list[dict[str, Any]] = field(default_factory=list)
    nudity_score: float = 0.0
    detections: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[dict[str, Any]] = field(default_factory=list)
    raw_nudity_score: float = 0.0  # before the detector's graphics guard
    nudity_guard: str | None = None  # why the graphics guard discounted this frame's score
    #: the faces' boxes in the working copy's pixels (the landmarks run there)
    face_boxes: list[Any] = field(default_factory=list)


class Analyzer:
    """Holds the models of one process (loaded once, on first use) and runs them on frames."""

    def __init__(self, opts: InferOptions | None = None) -> None:
        self.opts = opts or InferOptions()
        if self.opts.threads:
            from heroes.models import runtime

            runtime.limit_native_threads(self.opts.threads)
        if self.opts.model_dir or self.opts.trt_cache:
            from pathlib import Path

            from heroes.models import registry, runtime

            # a worker process takes the folder the pass was given (a setting passed in code
            # reaches no other process otherwise); where it already resolves there, nothing is
            # pinned, so the process keeps following its settings
            if self.opts.model_dir and Path(self.opts.model_dir) != registry.model_dir():
                registry.set_model_dir(self.opts.model_dir)
            if self.opts.trt_cache:
                runtime.set_trt_cache(self.opts.trt_cache)
        self._detector: Any = None
        self._landmarks: Any = None
        self._age: Any = None
        self._embed: Any = None
        self._scene: Any = None
        self._confirm: Any = None

    # lazily built so that a worker that never sees an image loads nothing
    @property
    def detector(self) -> Any:
        if self._detector is None and self.opts.detector:
            from heroes.models.detect import Detector

            self._detector = Detector(
                self.opts.detector,
                threads=self.opts.threads,
                device=self.opts.device,
                fp16=self.opts.fp16,
            )
        return self._detector

    @property
    def landmarks(self) -> Any:
        if self._landmarks is None and self.opts.landmarks:
            from heroes.models.faces import Landmarks

            self._landmarks = Landmarks(self.opts.landmarks)
        return self._landmarks

    @property
    def confirmer(self) -> Any:
        if self._confirm is None and self.opts.face_confirm is not None:
            from heroes.models.faces import FaceConfirmer

            self._confirm = FaceConfirmer(self.opts.face_confirm)
        return self._confirm

    @property
    def age(self) -> Any:
        if self._age is None and self.opts.age:
            from heroes.models.faces import AgeEstimator

            self._age = AgeEstimator(
                self.opts.age,
                threads=self.opts.threads,
                device=self.opts.device,
                fp16=self.opts.fp16,
            )
        return self._age

    @property
    def face_embedder(self) -> Any:
        if self._embed is None and self.opts.face_embed:
            from heroes.models.faces import FaceEmbedder

            self._embed = FaceEmbedder(
                self.opts.face_embed,
                threads=self.opts.threads,
                device=self.opts.device,
                fp16=self.opts.fp16,
            )
        return self._embed

    @property
    def scene(self) -> Any:
        if self._scene is None and self.opts.scene_embed:
            from heroes.models import registry

            spec = registry.get_spec(self.opts.scene_embed)
            if spec.format == "onnx":
                from heroes.models.image_embed import ImageEmbedder

                self._scene = ImageEmbedder(
                    spec, threads=self.opts.threads, device=self.opts.device, fp16=self.opts.fp16
                )
            else:
                from heroes.models.scene_embed import SceneCodebook, SceneEmbedder

                self._scene = SceneEmbedder(SceneCodebook.load(registry.resolve(spec)))
        return self._scene

    def analyze(
        self,
        frames: list[NDArray[np.uint8]],
        times: list[float | None],
        scale: float | Sequence[float] = 1.0,
    ) -> list[FrameResult]:
        """Run every enabled model on a batch of frames, of one file or of many.

        ``scale`` maps working-copy pixels to original pixels (original width / working width),
        one number for all frames or one per frame (frames of several files). The detector takes
        the frames in batches sized for the device; then every face of the batch goes through
        landmarks, the confirmation, age and the face model together.
        """
        results = [FrameResult(t) for t in times]
        if not frames:
            return results
        scales = [float(scale)] * len(frames) if isinstance(scale, int | float) else list(scale)
        if len(scales) != len(frames):
            raise ValueError(f"{len(scales)} scales for {len(frames)} frames")
        if self.detector is not None:
            dets = self.detector.detect(frames)
            for res, d, sc in zip(results, dets, scales, strict=True):
                res.nudity_score = d.nudity_score
                res.raw_nudity_score = d.raw_nudity_score
                res.nudity_guard = d.guard
                res.detections = [_scaled(x.to_record(), sc) for x in d.detections]
                res.faces = [_scaled(f.to_record(), sc) for f in d.faces]
                res.face_boxes = [f.bbox for f in d.faces]
            self._faces(frames, results, scales)
        if self.scene is not None:
            vecs = self.scene.embed(frames)
            for res, v in zip(results, vecs, strict=True):
                res.vectors.append(
                    {"kind": "scene", "model": self.opts.scene_embed, "vector": v, "bbox": None}
                )
        return results

    def _faces(
        self, frames: list[NDArray[np.uint8]], results: list[FrameResult], scales: list[float]
    ) -> None:
        if self.landmarks is None:
            return
        age_chips, emb_chips, owners, checks = [], [], [], []
        for i, (frame, res, scale) in enumerate(zip(frames, results, scales, strict=True)):
            if not res.faces:
                continue
            shapes = self.landmarks.shapes(frame, res.face_boxes)
            for j, (face, shape) in enumerate(zip(res.faces, shapes, strict=True)):
                face["landmarks"] = [
                    [round(x * scale, 1), round(y * scale, 1)]
                    for x, y in self.landmarks.points(shape)
                ]
                owners.append((i, j))
            if self.confirmer is not None:
                checks += self.confirmer.scores(frame, shapes)
            if self.age is not None:
                pad = self.age.spec.input.chip_padding
                age_chips.append(self.landmarks.chips(frame, shapes, self.age.chip_size, pad))
            if self.face_embedder is not None:
                pad = self.face_embedder.spec.input.chip_padding
                emb_chips.append(
                    self.landmarks.chips(frame, shapes, self.face_embedder.chip_size, pad)
                )
        if not owners:
            return
        if age_chips:
            for (i, j), est in zip(
                owners, self.age.estimate(np.concatenate(age_chips)), strict=True
            ):
                results[i].faces[j].update(
                    age=round(est.age, 1),
                    p_minor=round(est.p_minor, 4),
                    age_interval=[est.interval[0], est.interval[1]],
                )
        for k, (i, j) in enumerate(owners):
            sc = checks[k] if checks else None
            results[i].faces[j].update(
                confirmed=not checks or (sc is not None and sc >= self.opts.face_confirm),
                confirm_score=None if sc is None else round(sc, 3),
            )
        if emb_chips:
            emb = self.face_embedder.embed(np.concatenate(emb_chips))
            for (i, j), v in zip(owners, emb, strict=True):
                results[i].vectors.append(
                    {
                        "kind": "face",
                        "model": self.opts.face_embed,
                        "vector": v,
                        "bbox": results[i].faces[j]["bbox"],
                        "face_index": j,
                    }
                )


def _scaled(rec: dict[str, Any], scale: float) -> dict[str, Any]:
    if scale != 1.0:
        rec["bbox"] = [round(v * scale, 1) for v in rec["bbox"]]
    return rec


def summarise(
    results: list[FrameResult], threshold: float
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Item-level ``faces`` and ``nudity`` from the per-frame results of one file.

    ``nudity.score`` is the maximum over frames, with the time of the frame that set it; the
    detections kept are those of that frame, and ``raw_score``/``guard`` are that frame's score
    before the detector's graphics guard and why it was discounted (null when it was not)."""
    faces: list[dict[str, Any]] = []
    for r in results:
        for f in r.faces:
            faces.append({**f, "frame_time": r.frame_time})
    if not results:
        return faces, None
    best = max(results, key=lambda r: r.nudity_score)
    nudity: dict[str, Any] = {
        "score": round(float(best.nudity_score), 4),
        "explicit": bool(best.nudity_score >= threshold),
        "threshold": threshold,
        "frame_time": best.frame_time,
        "detections": best.detections,
    }
    if len(results) > 1:
        nudity["frames"] = [
            {"time": r.frame_time, "score": round(float(r.nudity_score), 4)} for r in results
        ]
    nudity["raw_score"] = round(float(best.raw_nudity_score), 4)
    nudity["guard"] = best.nudity_guard
    return faces, nudity
