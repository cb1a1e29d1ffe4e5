"""Video triage: keyframes at working size with PDQ, and the video's vPDQ signature.

One sequential PyAV pass keeps at least one frame per ``interval`` seconds (plus the encoder's own
keyframes, which mark scene cuts) and hashes them. The vPDQ signature (one PDQ per second) comes
from Meta's ``vpdq`` package, the reference that shared vPDQ hash lists are made with; when it
cannot run (no file name for in-memory bytes, a decode pass that stopped early, a stream it
rejects) the same per-second hashes are computed from the PyAV frames instead and
``vpdq_source`` says so.

Evidence on disk is read only through :func:`~heroes.pipeline.identify.open_evidence` (read-only,
no access-time update): PyAV reads the open file. The reference vPDQ can only open a file name,
which would update the access time, so it runs on in-memory bytes only (files up to the size the
pass keeps in memory, and archive members); large files on disk get the PyAV per-second hashes.

Decoding is bounded by the frames decoded, by frames per second of the video's own timeline (a
few KB of timestamps can squeeze ten thousand 4K frames into 50 ms) and by wall-clock time; a
video cut by a bound keeps what was decoded and ``truncated`` says which bound.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from heroes.pipeline.decode import DecodeError, pdq_dihedral_hex, pdq_hex
from heroes.pipeline.identify import StreamSource, open_evidence

try:
    import vpdq
except ImportError:  # pragma: no cover - platforms without the compiled reference
    vpdq = None

#: packets the decoder may reject before the stream is declared corrupt
MAX_BAD_PACKETS = 50
#: vPDQ's sampling period, fixed by its definition
VPDQ_SECONDS_PER_HASH = 1.0
#: vPDQ hashes whole frames (0 x 0 = no downsampling), as the reference tools and published vPDQ
#: lists do: at the 512 px working size the hashes of the published sample videos drift up to 32
#: bits from the reference (median 8); at full size at most 6 (median 2), at about the same cost
#: (PDQ reduces a frame to 64 x 64 itself, so decoding dominates)
VPDQ_FRAME_SIZE = (0, 0)
_EPS = 1e-6


@dataclass(slots=True)
class Keyframe:
    time: float
    pdq: str | None
    pdq_quality: int | None
    pixels: NDArray[np.uint8] | None = None
    #: PDQ of the frame's rotations and mirrors (``PDQ_DIHEDRAL`` order; the first is ``pdq``)
    dihedral: list[str] | None = None


@dataclass(slots=True)
class VideoAnalysis:
    duration: float | None
    codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    keyframes: list[Keyframe]
    vpdq: list[dict[str, Any]]
    vpdq_source: str
    truncated: str | None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary for the case database (pixels are never stored)."""
        return {
            "duration": self.duration,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "keyframes": [
                {"time": k.time, "pdq": k.pdq, "quality": k.pdq_quality} for k in self.keyframes
            ],
            "vpdq": [dict(feature) for feature in self.vpdq],
            "vpdq_source": self.vpdq_source,
            "truncated": self.truncated,
        }


@dataclass(slots=True)
class _Scan:
    keyframes: list[Keyframe] = field(default_factory=list)
    per_second: list[dict[str, Any]] = field(default_factory=list)
    truncated: str | None = None
    rotation: int = 0
    end: float | None = None
    elapsed: float = 0.0
    #: cut by the decode budget (frames, frame rate, wall clock): no second decode is affordable
    over_budget: bool = False


def analyze_video(
    source: bytes | Path | StreamSource,
    *,
    interval: float = 1.0,
    working_size: int = 512,
    max_frames: int = 2000,
    max_seconds: float = 14400.0,
    keep_pixels: bool = False,
    max_decoded: int = 1_000_000,
    max_rate: float = 1000.0,
    max_wall: float = 600.0,
) -> VideoAnalysis:
    """Keyframes, PDQ and vPDQ of a video file or of in-memory bytes (never written to disk).

    Raises :class:`DecodeError` when no video frame can be read at all; a stream that breaks or
    hits a limit part-way gives partial results with ``truncated`` saying why.
    """
    if interval <= 0 or working_size < 1 or max_frames < 1 or max_seconds <= 0:
        raise ValueError("interval, working_size, max_frames and max_seconds must be positive")
    in_memory = isinstance(source, bytes | bytearray | memoryview)
    with contextlib.ExitStack() as files:
        try:
            raw: Any
            if isinstance(source, StreamSource):
                # a file inside a forensic image: read through its stream, never copied out
                raw = files.enter_context(source.open_stream())
            elif in_memory:
                raw = io.BytesIO(source)
            else:
                raw = files.enter_context(open_evidence(Path(source)))  # type: ignore[arg-type]
            container = av.open(raw, options={"protocol_whitelist": "data"})
        except Exception as error:
            raise DecodeError(f"cannot open video: {error}") from None
        with container:
            return _analyze_open(
                source,
                container,
                interval=interval,
                working_size=working_size,
                max_frames=max_frames,
                max_seconds=max_seconds,
                keep_pixels=keep_pixels,
                budget=_DecodeBudget(max_decoded, max_rate, max_wall),
            )
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(slots=True)
class _DecodeBudget:
    frames: int
    rate: float
    seconds: float

    def exceeded(self, decoded: int, t: float, started: float) -> str | None:
        if decoded > self.frames:
            return f"decode limit: {self.frames} frames decoded, stopped at {t:.3f} s"
        if decoded > self.rate * (t + 1.0):
            return (
                f"frame-rate limit: {decoded} frames decoded in the first {t:.3f} s "
                f"(> {self.rate:g} per second)"
            )
        if time.monotonic() - started > self.seconds:
            return f"decode time limit: stopped after {self.seconds:g} s of decoding at {t:.3f} s"
        return None


def _analyze_open(
    source: bytes | Path | StreamSource,
    container: av.container.InputContainer,
    *,
    interval: float,
    working_size: int,
    max_frames: int,
    max_seconds: float,
    keep_pixels: bool,
    budget: _DecodeBudget,
) -> VideoAnalysis:
    stream = _video_stream(container)
    ctx = stream.codec_context
    ctx.thread_type = "AUTO"
    codec, coded = ctx.name, (stream.width or None, stream.height or None)
    fps = _fps(stream)
    duration = _duration(stream, container)
    reference = _reference_can_run(source)
    scan = _scan(
        container,
        stream,
        interval=interval,
        working_size=working_size,
        max_frames=max_frames,
        max_seconds=max_seconds,
        keep_pixels=keep_pixels,
        fps=fps,
        budget=budget,
        per_second=not reference,
    )
    if duration is None and scan.truncated is None:
        duration = scan.end
    width, height = coded if scan.rotation % 180 == 0 else coded[::-1]
    features, vpdq_source = None, "pdqhash"
    # the reference decodes the whole video again, the fallback up to the time limit: only when
    # the first decode kept within its budget, with room for another
    second_pass = not scan.over_budget and scan.elapsed <= budget.seconds / 2
    if reference and second_pass and scan.truncated is None and coded[0] and coded[1]:
        features = _reference_vpdq(source, VPDQ_FRAME_SIZE)
        vpdq_source = "vpdq" if features else vpdq_source
    if reference and second_pass and not features and scan.keyframes:
        scan.per_second = _per_second_pass(source, max_seconds)
    analysis = VideoAnalysis(
        duration=duration,
        codec=codec,
        width=width,
        height=height,
        fps=fps,
        keyframes=scan.keyframes,
        vpdq=features or scan.per_second,
        vpdq_source=vpdq_source,
        truncated=scan.truncated or _ends_early(scan.end, duration),
    )
    if not scan.keyframes:
        reason = scan.truncated or "the stream holds no frames"
        raise DecodeError(f"no decodable video frame: {reason}", partial=analysis)
    return analysis


def _ends_early(end: float | None, duration: float | None) -> str | None:
    """A cut file (carved, half-downloaded) decodes cleanly but stops short of its header.

    The tolerance absorbs audio that outlasts the video when only the container's duration is
    known.
    """
    if end is None or duration is None or end >= duration - max(1.0, 0.05 * duration):
        return None
    return f"video ends at {end:.1f} s of {duration:.1f} s declared"


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The main video stream; cover art (an attached picture) is not the video."""
    candidates = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not candidates:
        raise DecodeError("no video stream")
    return max(candidates, key=lambda s: (s.width or 0) * (s.height or 0))


def _fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _duration(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _fit(width: int, height: int, working_size: int) -> tuple[int, int]:
    """Frame size with the longest side <= ``working_size``, aspect kept."""
    scale = min(1.0, working_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _scan(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    *,
    interval: float,
    working_size: int,
    max_frames: int,
    max_seconds: float,
    keep_pixels: bool,
    fps: float | None,
    budget: _DecodeBudget,
    per_second: bool = True,
) -> _Scan:
    """Decode sequentially and keep frames.

    Kept: the first frame at or after each multiple of ``interval`` (so gaps between kept frames
    never exceed the interval, however sparse the encoder's keyframes), and keyframes at least
    half an interval after the last kept frame (scene cuts, without flooding on intra-only
    codecs). With ``per_second``, the first frame at or after each whole second is also hashed,
    whole and unrotated, for the fallback vPDQ.
    """
    scan = _Scan()
    start = _start_time(stream)
    next_mark = next_second = 0.0
    last_kept = -math.inf
    decoder = _Frames(container, stream)
    started = time.monotonic()
    for index, frame in enumerate(decoder):
        t = _frame_time(frame, start, index, fps)
        if t > max_seconds + _EPS:
            scan.truncated = f"time limit: decoding stopped at {max_seconds:g} s"
            break
        cut = budget.exceeded(index + 1, t, started)
        if cut is not None:
            scan.truncated, scan.over_budget = cut, True
            break
        scan.end = t + (1.0 / fps if fps else 0.0)
        on_mark = t >= next_mark - _EPS
        on_cut = frame.key_frame and t - last_kept >= interval / 2
        on_second = per_second and t >= next_second - _EPS
        if not (on_mark or on_cut or on_second):
            continue
        if (on_mark or on_cut) and len(scan.keyframes) >= max_frames:
            scan.truncated = f"frame limit: {max_frames} frames kept, stopped at {t:.3f} s"
            break
        scan.rotation = _rotation(frame)
        if on_second:
            scan.per_second.append(_vpdq_feature(frame, t))
            next_second = (math.floor(t / VPDQ_SECONDS_PER_HASH + _EPS) + 1) * VPDQ_SECONDS_PER_HASH
        if on_mark or on_cut:
            width, height = _fit(frame.width, frame.height, working_size)
            small = frame.to_ndarray(
                width=width, height=height, format="rgb24", interpolation="AREA"
            )
            shown = _display(small, scan.rotation)
            dihedral, quality = pdq_dihedral_hex(shown)
            pixels = shown if keep_pixels else None
            scan.keyframes.append(Keyframe(t, dihedral[0], quality, pixels, dihedral))
            last_kept = t
            if on_mark:
                next_mark = (math.floor(t / interval + _EPS) + 1) * interval
    if scan.truncated is None:
        scan.truncated = decoder.problem
    scan.elapsed = time.monotonic() - started
    return scan


def _reference_can_run(source: bytes | Path | StreamSource) -> bool:
    """Whether Meta's vpdq can be tried: it is installed and gets a name to open.

    Only bytes qualify (through an anonymous in-memory file): vpdq opens a name itself, which
    would change a file's access time on disk, and a file inside a forensic image has no name.
    """
    in_memory = isinstance(source, bytes | bytearray | memoryview)
    return vpdq is not None and in_memory and hasattr(os, "memfd_create")


def _per_second_pass(source: bytes, max_seconds: float) -> list[dict[str, Any]]:
    """The fallback vPDQ in a second decoding pass, for the rare stream the reference refuses.

    The first pass skips whole-frame hashing when the reference is expected to run: at 4K it
    costs about 0.8 s per second of video on one core.
    """
    out: list[dict[str, Any]] = []
    try:
        container = av.open(io.BytesIO(source), options={"protocol_whitelist": "data"})
    except Exception:
        return out
    with container:
        try:
            stream = _video_stream(container)
        except DecodeError:
            return out
        stream.codec_context.thread_type = "AUTO"
        start, fps = _start_time(stream), _fps(stream)
        next_second = 0.0
        for index, frame in enumerate(_Frames(container, stream)):
            t = _frame_time(frame, start, index, fps)
            if t > max_seconds + _EPS:
                break
            if t >= next_second - _EPS:
                out.append(_vpdq_feature(frame, t))
                next_second = (
                    math.floor(t / VPDQ_SECONDS_PER_HASH + _EPS) + 1
                ) * VPDQ_SECONDS_PER_HASH
    return out


def _vpdq_feature(frame: av.VideoFrame, t: float) -> dict[str, Any]:
    """The fallback vPDQ feature of one frame: PDQ of the whole frame as stored, unrotated.

    Like the reference package (see :data:`VPDQ_FRAME_SIZE`): a working-size copy drifts by up to
    32 bits from published vPDQ hashes.
    """
    digest, quality = pdq_hex(frame.to_ndarray(format="rgb24"))
    return {"time": t, "pdq": digest, "quality": quality}


def _start_time(stream: av.video.stream.VideoStream) -> Fraction | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return stream.start_time * stream.time_base


def _frame_time(
    frame: av.VideoFrame, start: Fraction | None, index: int, fps: float | None
) -> float:
    """Seconds from the stream start; frames without a timestamp are placed by their index."""
    if frame.pts is not None and frame.time_base is not None:
        t = frame.pts * frame.time_base - (start or 0)
        return max(0.0, float(t))
    return index / fps if fps else 0.0


def _display(pixels: NDArray[np.uint8], rotation: int) -> NDArray[np.uint8]:
    """Pixels as a player shows them (``np.rot90`` turns counter-clockwise, like the matrix)."""
    return np.ascontiguousarray(np.rot90(pixels, rotation // 90)) if rotation else pixels


def _rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation, a multiple of 90 in 0..270."""
    try:
        degrees = frame.rotation or 0
    except Exception:
        return 0
    return (round(degrees / 90) * 90) % 360


class _Frames:
    """Decoded frames of one stream, packet by packet, so one corrupt packet costs one packet.

    After iteration ``problem`` says why decoding was cut short or packets were lost, or is None.
    """

    def __init__(self, container: av.container.InputContainer, stream: Any) -> None:
        self.container = container
        self.stream = stream
        self.problem: str | None = None

    def __iter__(self) -> Iterator[av.VideoFrame]:
        bad = 0
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as error:
                    bad += 1
                    self.problem = f"corrupt stream: {bad} undecodable packets, last: {error}"
                    if bad > MAX_BAD_PACKETS:
                        return
                    continue
                yield from frames
        except av.FFmpegError as error:
            self.problem = f"corrupt container: {error}"


def _reference_vpdq(source: bytes | Path, size: tuple[int, int]) -> list[dict[str, Any]] | None:
    """vPDQ from Meta's reference package, or None when it cannot run on this input."""
    if vpdq is None:
        return None
    try:
        with _file_name(source) as name:
            features = vpdq.computeHash(
                input_video_filename=name,
                seconds_per_hash=VPDQ_SECONDS_PER_HASH,
                downsample_width=size[0],
                downsample_height=size[1],
                thread_count=1,
            )
    except MemoryError:
        raise
    except Exception:
        return None
    out = [
        {"time": float(f.timestamp), "pdq": str(f.hex).lower(), "quality": int(f.quality)}
        for f in features
    ]
    return out if out and all(len(f["pdq"]) == 64 for f in out) else None


@contextmanager
def _file_name(source: bytes | Path) -> Iterator[str]:
    """A name the reference vPDQ can open: the path itself, or an anonymous in-memory file.

    Archive members must never touch the evidence or the analysis disk, so bytes go to a memfd
    (Linux); elsewhere ``os.memfd_create`` is missing and the caller falls back.
    """
    if not isinstance(source, bytes | bytearray | memoryview):
        yield str(source)
        return
    fd = os.memfd_create("heroes-video", os.MFD_CLOEXEC)
    try:
        view = memoryview(source)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def frame_at(
    source: Any, time: float, *, working_size: int = 512, max_frames: int = 1000
) -> NDArray[np.uint8]:
    """The frame shown at ``time`` seconds, as a player shows it, longest side <= working_size.

    ``source`` is a readable binary stream (the evidence opened read-only). Decoding starts at
    the keyframe before ``time`` and reads at most ``max_frames`` frames; the last frame decoded
    is returned when the video ends earlier. Raises :class:`DecodeError` when no frame decodes.
    """
    try:
        container = av.open(source, options={"protocol_whitelist": "data"})
    except Exception as error:
        raise DecodeError(f"cannot open video: {error}") from None
    with container:
        stream = _video_stream(container)
        start = _start_time(stream)
        fps = _fps(stream)
        if time > 0 and stream.time_base is not None:
            try:
                at = Fraction(time).limit_denominator(1000) + (start or 0)
                target = int(at / stream.time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        chosen: av.VideoFrame | None = None
        for index, frame in enumerate(_Frames(container, stream)):
            chosen = frame
            if _frame_time(frame, start, index, fps) >= time - _EPS or index >= max_frames:
                break
        if chosen is None:
            raise DecodeError(f"no frame decodes at {time:g} s")
        width, height = _fit(chosen.width, chosen.height, working_size)
        pixels = chosen.to_ndarray(width=width, height=height, format="rgb24")
        return _display(pixels, _rotation(chosen))
