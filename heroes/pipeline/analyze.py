"""The per-file CPU work that runs in worker processes: decode, EXIF, PDQ, video keyframes.

Workers receive bytes (already read once by the identify stage) or, for large files on disk, a
path, and return plain record fields; no pixels cross the process boundary at this stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heroes.pipeline.identify import MEDIA_IMAGE, MEDIA_VIDEO


@dataclass(frozen=True, slots=True)
class AnalyzeOptions:
    working_size: int = 512
    max_pixels: int = 178_956_970
    keyframe_interval: float = 1.0
    max_frames: int = 2000
    max_video_seconds: float = 14400.0


def analyze_media(
    media_type: str, data: bytes | None, fs_path: str | None, opts: AnalyzeOptions
) -> dict[str, Any]:
    """Decode one image or video and return the record fields it fills.

    Never raises for bad content: a file that cannot be decoded returns ``status='error'`` with a
    readable reason, and the caller keeps the hashes it already has.
    """
    from heroes.pipeline.decode import DecodeError, ImageAnalysis, analyze_image
    from heroes.pipeline.video import VideoAnalysis, analyze_video

    try:
        if media_type == MEDIA_IMAGE:
            if data is None:
                assert fs_path is not None
                data = Path(fs_path).read_bytes()
            img = analyze_image(data, working_size=opts.working_size, max_pixels=opts.max_pixels)
            return {
                "width": img.width,
                "height": img.height,
                "pdq": img.pdq,
                "pdq_quality": img.pdq_quality,
                "exif": img.exif,
            }
        if media_type == MEDIA_VIDEO:
            source: bytes | Path = data if data is not None else Path(str(fs_path))
            vid = analyze_video(
                source,
                interval=opts.keyframe_interval,
                working_size=opts.working_size,
                max_frames=opts.max_frames,
                max_seconds=opts.max_video_seconds,
            )
            rec = vid.to_record()
            out: dict[str, Any] = {"video": rec, "width": vid.width, "height": vid.height}
            if vid.truncated:
                out["error"] = f"video partly decoded: {vid.truncated}"
            return out
    except DecodeError as exc:
        out = {"status": "error", "error": str(exc)}
        partial = getattr(exc, "partial", None)
        if isinstance(partial, ImageAnalysis):
            # a truncated image: what could be decoded still gets hashed and described
            out.update(
                width=partial.width,
                height=partial.height,
                pdq=partial.pdq,
                pdq_quality=partial.pdq_quality,
                exif=partial.exif,
            )
        elif isinstance(partial, VideoAnalysis):
            out.update(video=partial.to_record(), width=partial.width, height=partial.height)
        return out
    except MemoryError:
        return {"status": "error", "error": "decode failed: out of memory"}
    except Exception as exc:  # a decoder bug must cost one record, not the run
        return {"status": "error", "error": f"decode failed: {type(exc).__name__}: {exc}"}
    return {}
