"""The per-file CPU work that runs in worker processes: decode, EXIF, PDQ, video keyframes.

Workers receive bytes (already read once by the identify stage) or, for large files on disk, a
path, and return plain record fields; no pixels cross the process boundary at this stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heroes.pipeline.identify import MEDIA_IMAGE, MEDIA_VIDEO, StreamSource, open_source
from heroes.pipeline.infer import Analyzer, InferOptions, summarise
from heroes.store.db import encode_vector


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


def _infer(
    opts: AnalyzeOptions, frames: list[Any], times: list[float | None], scale: float
) -> dict[str, Any]:
    analyzer = _models(opts)
    if analyzer is None or not frames:
        return {}
    try:
        results = analyzer.analyze(frames, times, scale)
    except Exception as exc:  # out of memory, a broken model: this file's record says so
        return {"status": "error", "error": f"inference failed: {type(exc).__name__}: {exc}"}
    faces, nudity = summarise(results, opts.nudity_threshold)
    vectors: list[dict[str, Any]] = []
    offset = 0
    for r in results:
        for v in r.vectors:
            vec = encode_vector(v["vector"])
            vectors.append(
                {
                    "kind": v["kind"],
                    "model": v["model"],
                    "frame_time": r.frame_time,
                    "bbox": v.get("bbox"),
                    "dim": int(np.size(v["vector"])),
                    "vector": vec,
                    "face": offset + v["face_index"] if "face_index" in v else None,
                }
            )
        offset += len(r.faces)
    return {"faces": faces, "nudity": nudity, "_vectors": vectors}


@dataclass(slots=True)
class Decoded:
    """What decoding one file gave: record fields, and the frames the models still have to see
    (``frames`` is empty when no model runs or nothing decoded)."""

    fields: dict[str, Any]
    frames: list[Any]
    times: list[float | None]
    scale: float = 1.0


def analyze_media(
    media_type: str, data: bytes | None, fs_path: str | StreamSource | None, opts: AnalyzeOptions
) -> dict[str, Any]:
    """Decode one image or video, run the models on it, and return the record fields it fills.

    Never raises for bad content: a file that cannot be decoded returns ``status='error'`` with a
    readable reason, and the caller keeps the hashes it already has.
    """
    return infer_decoded(decode_media(media_type, data, fs_path, opts), opts)


def infer_decoded(dec: Decoded, opts: AnalyzeOptions) -> dict[str, Any]:
    """The models' fields for frames decoded here or elsewhere (a CPU worker); ``_frames`` counts
    the frames the models saw."""
    if not dec.frames:
        return dec.fields
    return {
        **dec.fields,
        **_infer(opts, dec.frames, dec.times, dec.scale),
        "_frames": len(dec.frames),
    }


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
