"""The per-file work that runs in worker processes: decode, EXIF, PDQ, video keyframes, models.

Workers receive bytes (already read once by the identify stage) or, for large files on disk, a
path or a reference, and return an :class:`Analysis` per file (record fields, embeddings, frames
seen). Files are decoded one by one and their frames go through the models in batches across
files (:func:`analyze_many`); the Ray engine's split plan decodes in one place
(:func:`decode_media`) and runs the models in another (:func:`infer_many`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heroes.pipeline.identify import MEDIA_IMAGE, MEDIA_VIDEO, StreamSource, open_source
from heroes.pipeline.infer import Analyzer, InferOptions, summarise
from heroes.vectors import encode_vector


@dataclass(frozen=True, slots=True)
class AnalyzeOptions:
    working_size: int = 512
    max_pixels: int = 178_956_970
    max_decode_bytes: int = 512 * 1024 * 1024
    keyframe_interval: float = 1.0
    max_frames: int = 2000
    max_video_seconds: float = 14400.0
    max_decoded_frames: int = 1_000_000
    max_frame_rate: float = 1000.0
    max_decode_seconds: float = 600.0
    models: InferOptions | None = None
    nudity_threshold: float = 0.5
    decode_hook: str | None = None
    #: frames the models take in one call across files (more on a GPU, where batches are cheap)
    batch_frames: int = 64


def _hook(ref: str | None) -> Any:
    """A user decode hook, ``package.module:function(media_type, data, path)``, run in the worker
    before the built-in decoders (e.g. a lab's own format check). Loaded once per process."""
    if ref is None:
        return None
    cached = _hooks.get(ref)
    if cached is None:
        import importlib

        module, _, attr = ref.partition(":")
        cached = getattr(importlib.import_module(module), attr)
        _hooks[ref] = cached
    return cached


_hooks: dict[str, Any] = {}


_analyzer: Analyzer | None = None


def _models(opts: AnalyzeOptions) -> Analyzer | None:
    """This process's models, loaded once and reused for every file it analyses."""
    global _analyzer
    if opts.models is None:
        return None
    if _analyzer is None or _analyzer.opts != opts.models:
        _analyzer = Analyzer(opts.models)
    return _analyzer


@dataclass(slots=True)
class Vector:
    """One embedding a file gave: a face (``face`` is its index in the file's faces) or a scene."""

    kind: str
    model: str | None
    frame_time: float | None
    bbox: list[float] | None
    dim: int
    vector: bytes
    face: int | None = None


@dataclass(slots=True)
class Analysis:
    """What decoding and the models found in one file: the record fields they fill (``status``
    and ``error`` among them when something failed), the embeddings, and the frames the models
    saw. This is what workers of every engine hand back to the pass."""

    fields: dict[str, Any]
    vectors: list[Vector] = field(default_factory=list)
    frames: int = 0


@dataclass(slots=True)
class Decoded:
    """What decoding one file gave: record fields, and the frames the models still have to see
    (``frames`` is empty when no model runs or nothing decoded)."""

    fields: dict[str, Any]
    frames: list[Any]
    times: list[float | None]
    scale: float = 1.0


#: the record of a file whose decoder killed its worker process, twice
CRASHED = "decoder crashed: the worker process died on this file"

#: what a worker needs to analyse one file: media type, bytes (or None), path or reference
Job = tuple[str, bytes | None, "str | StreamSource | None"]


def analyze_media(
    media_type: str, data: bytes | None, fs_path: str | StreamSource | None, opts: AnalyzeOptions
) -> Analysis:
    """Decode one image or video, run the models on it, and return what it gives.

    Never raises for bad content: a file that cannot be decoded returns ``status='error'`` with a
    readable reason, and the caller keeps the hashes it already has.
    """
    return infer_many([decode_media(media_type, data, fs_path, opts)], opts)[0]


def crashed() -> Analysis:
    """The analysis of a file whose decoder killed its worker process."""
    return Analysis({"status": "error", "error": CRASHED})


def analyze_alone(job: Job, opts: AnalyzeOptions) -> Analysis:
    """One file analysed in a process of its own: a file that kills it gets an error record
    (after a worker died on a batch holding it, each file of the batch is tried this way)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("forkserver")) as one:
        try:
            return one.submit(analyze_media, *job, opts).result()
        except BrokenProcessPool:
            return crashed()


def analyze_many(jobs: list[Job], opts: AnalyzeOptions) -> list[Analysis]:
    """Decode several files and run the models on their frames together (batches across files).
    Each job is (media type, bytes or None, path or reference or None). Files are decoded one
    after the other and their frames handed to the models once about ``opts.batch_frames`` are
    waiting, so a batch of long videos never holds all their frames at once."""
    return infer_many((decode_media(m, d, f, opts) for m, d, f in jobs), opts)


def infer_many(decoded: Iterable[Decoded], opts: AnalyzeOptions) -> list[Analysis]:
    """The models' results for files decoded here or elsewhere (a CPU worker), in batches of up
    to ``opts.batch_frames`` frames across files (a video with more goes alone). A batch whose
    inference fails is run again file by file, so that only the file that fails gets an error."""
    analyzer = _models(opts)
    out: list[Analysis] = []
    waiting: list[tuple[Decoded, Analysis]] = []
    size = 0
    for d in decoded:
        result = Analysis(dict(d.fields))
        out.append(result)
        if analyzer is None or not d.frames:
            continue
        if waiting and size + len(d.frames) > opts.batch_frames:
            _infer_group(analyzer, opts, waiting)
            waiting, size = [], 0
        waiting.append((d, result))
        size += len(d.frames)
    if waiting and analyzer is not None:
        _infer_group(analyzer, opts, waiting)
    return out


def _infer_group(
    analyzer: Analyzer, opts: AnalyzeOptions, group: list[tuple[Decoded, Analysis]]
) -> None:
    frames: list[Any] = []
    times: list[float | None] = []
    scales: list[float] = []
    for d, _ in group:
        frames += d.frames
        times += d.times
        scales += [d.scale] * len(d.frames)
    try:
        results = analyzer.analyze(frames, times, scales)
    except Exception as exc:  # out of memory, a broken model: the file that fails says so
        if len(group) > 1:
            for one in group:
                _infer_group(analyzer, opts, [one])
            return
        group[0][1].fields.update(
            status="error", error=f"inference failed: {type(exc).__name__}: {exc}"
        )
        return
    start = 0
    for d, target in group:
        n = len(d.frames)
        _summarise_into(target, results[start : start + n], opts)
        start += n


def _summarise_into(target: Analysis, results: list[Any], opts: AnalyzeOptions) -> None:
    faces, nudity = summarise(results, opts.nudity_threshold)
    offset = 0
    for r in results:
        for v in r.vectors:
            target.vectors.append(
                Vector(
                    kind=v["kind"],
                    model=v["model"],
                    frame_time=r.frame_time,
                    bbox=v.get("bbox"),
                    dim=int(np.size(v["vector"])),
                    vector=encode_vector(v["vector"]),
                    face=offset + v["face_index"] if "face_index" in v else None,
                )
            )
        offset += len(r.faces)
    target.fields.update(faces=faces, nudity=nudity)
    target.frames = len(results)


def decode_media(
    media_type: str, data: bytes | None, fs_path: str | StreamSource | None, opts: AnalyzeOptions
) -> Decoded:
    """Decode one image or video: record fields, plus working-size frames when models run."""
    from heroes.pipeline.decode import DecodeError, ImageAnalysis, analyze_image
    from heroes.pipeline.video import VideoAnalysis, analyze_video

    try:
        hook = _hook(opts.decode_hook)
        if hook is not None:
            hook(media_type, data, fs_path)
        if media_type == MEDIA_IMAGE:
            if data is None:
                assert fs_path is not None
                with open_source(fs_path) as f:
                    data = f.read()
            keep = opts.models is not None
            img = analyze_image(
                data,
                working_size=opts.working_size,
                max_pixels=opts.max_pixels,
                keep_pixels=keep,
                max_decode_bytes=opts.max_decode_bytes,
            )
            out = {
                "width": img.width,
                "height": img.height,
                "pdq": img.pdq,
                "pdq_quality": img.pdq_quality,
                "exif": img.exif,
                "pdq_dihedral": img.pdq_dihedral,
            }
            if img.damage is not None:
                # damaged, but enough of it decoded: analysed as a viewer shows it, damage kept
                out["error"] = img.damage
            if img.pixels is not None:
                return Decoded(out, [img.pixels], [None], img.width / img.pixels.shape[1])
            return Decoded(out, [], [])
        if media_type == MEDIA_VIDEO:
            source: bytes | Path | StreamSource = (
                data
                if data is not None
                else fs_path
                if isinstance(fs_path, StreamSource)
                else Path(str(fs_path))
            )
            vid = analyze_video(
                source,
                interval=opts.keyframe_interval,
                working_size=opts.working_size,
                max_frames=opts.max_frames,
                max_seconds=opts.max_video_seconds,
                max_decoded=opts.max_decoded_frames,
                max_rate=opts.max_frame_rate,
                max_wall=opts.max_decode_seconds,
                keep_pixels=opts.models is not None,
            )
            rec = vid.to_record()
            out = {
                "video": rec,
                "width": vid.width,
                "height": vid.height,
                "pdq_dihedral": [k.dihedral for k in vid.keyframes],
            }
            if vid.truncated:
                out["error"] = f"video partly decoded: {vid.truncated}"
            kept = [k for k in vid.keyframes if k.pixels is not None]
            if kept:
                scale = (vid.width or kept[0].pixels.shape[1]) / kept[0].pixels.shape[1]
                return Decoded(out, [k.pixels for k in kept], [k.time for k in kept], scale)
            return Decoded(out, [], [])
    except DecodeError as exc:
        out = {"status": "error", "error": str(exc)}
        partial = getattr(exc, "partial", None)
        if isinstance(partial, ImageAnalysis):
            # too damaged to analyse: the header's facts stay, and a hash only if there is one
            out.update(width=partial.width, height=partial.height, exif=partial.exif)
            if partial.pdq is not None:
                out.update(
                    pdq=partial.pdq,
                    pdq_quality=partial.pdq_quality,
                    pdq_dihedral=partial.pdq_dihedral,
                )
        elif isinstance(partial, VideoAnalysis):
            out.update(
                video=partial.to_record(),
                width=partial.width,
                height=partial.height,
                pdq_dihedral=[k.dihedral for k in partial.keyframes],
            )
        return Decoded(out, [], [])
    except MemoryError:
        return Decoded({"status": "error", "error": "decode failed: out of memory"}, [], [])
    except Exception as exc:  # a decoder bug must cost one record, not the run
        err = f"decode failed: {type(exc).__name__}: {exc}"
        return Decoded({"status": "error", "error": err}, [], [])
    return Decoded({}, [], [])
