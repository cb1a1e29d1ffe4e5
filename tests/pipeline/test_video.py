"""Video keyframes and vPDQ on synthetic clips made here with PyAV from package-shipped photos."""

from __future__ import annotations

import io
import json
import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from skimage import data as skdata

from heroes.pipeline.decode import DecodeError, pdq_distance, pdq_hex
from heroes.pipeline.video import VideoAnalysis, _reference_vpdq, analyze_video

FPS = 10
SECONDS = 5
WIDTH, HEIGHT = 160, 120


def photo(width: int = WIDTH, height: int = HEIGHT) -> NDArray[np.uint8]:
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((width, height)))


def moving_frame(base: NDArray[np.uint8], index: int) -> NDArray[np.uint8]:
    """The photo scrolling down, with a bar sweeping across: every frame differs."""
    frame = np.roll(base, index * 3, axis=0)
    x = (index * 4) % base.shape[1]
    frame[:, x : x + 8] = (255, 255, 0)
    return frame


def make_video(
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    seconds: int = SECONDS,
    gop: int = 50,
    rotation: int = 0,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> bytes:
    """A clip whose only keyframe per ``gop`` frames is forced, so keyframes are sparse."""
    base = photo(width, height)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = gop
        if codec == "libx264":
            stream.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(seconds * FPS):
            frame = av.VideoFrame.from_ndarray(moving_frame(base, index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def keyframe_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.key_frame for frame in container.decode(video=0))


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video()


@pytest.fixture(scope="module")
def clip_path(clip: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    path.write_bytes(clip)
    return path


@pytest.fixture(scope="module")
def from_path(clip_path: Path) -> VideoAnalysis:
    return analyze_video(clip_path, keep_pixels=True)


def assert_at_least_one_frame_per(interval: float, times: list[float], duration: float) -> None:
    gaps = np.diff([0.0, *times, duration])
    assert gaps.max() <= interval + 1.0 / FPS + 1e-6


def test_a_clip_reports_its_stream_metadata(from_path: VideoAnalysis) -> None:
    assert from_path.duration == pytest.approx(SECONDS, abs=0.2)
    assert from_path.codec == "h264"
    assert (from_path.width, from_path.height) == (WIDTH, HEIGHT)
    assert from_path.fps == pytest.approx(FPS)
    assert from_path.truncated is None


def test_sparse_keyframes_still_give_at_least_one_kept_frame_per_second(
    clip: bytes, from_path: VideoAnalysis
) -> None:
    assert keyframe_count(clip) == 1
    times = [k.time for k in from_path.keyframes]
    assert times[0] == 0.0
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert_at_least_one_frame_per(1.0, times, SECONDS)


def test_every_kept_frame_has_a_pdq_and_a_working_copy(from_path: VideoAnalysis) -> None:
    for keyframe in from_path.keyframes:
        assert keyframe.pdq is not None and len(keyframe.pdq) == 64
        assert keyframe.pdq_quality is not None and keyframe.pdq_quality >= 50
        assert keyframe.pixels is not None and keyframe.pixels.shape == (HEIGHT, WIDTH, 3)


def test_a_kept_frame_hashes_like_the_picture_it_shows(from_path: VideoAnalysis) -> None:
    first = from_path.keyframes[0].pdq
    assert first is not None
    assert pdq_distance(first, pdq_hex(moving_frame(photo(), 0))[0]) <= 31


def test_a_shorter_interval_keeps_more_frames(clip: bytes) -> None:
    result = analyze_video(clip, interval=0.5)
    assert_at_least_one_frame_per(0.5, [k.time for k in result.keyframes], SECONDS)
    assert len(result.keyframes) >= 10


def test_the_working_size_bounds_kept_frames(clip: bytes) -> None:
    result = analyze_video(clip, working_size=64, keep_pixels=True)
    assert all(k.pixels is not None and k.pixels.shape == (48, 64, 3) for k in result.keyframes)
    assert all(k.pixels is None for k in analyze_video(clip).keyframes)


def test_a_file_on_disk_gets_per_second_hashes_without_being_opened_by_name(
    from_path: VideoAnalysis, clip_path: Path
) -> None:
    # the reference vPDQ opens a file name, which would update the evidence's access time
    assert from_path.vpdq_source == "pdqhash"
    assert [round(f["time"], 3) for f in from_path.vpdq] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(len(f["pdq"]) == 64 and 0 <= f["quality"] <= 100 for f in from_path.vpdq)


def test_a_video_on_disk_keeps_its_access_time(clip: bytes, tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(clip)
    os.utime(path, (1_000_000_000, 1_500_000_000))  # atime older than mtime: relatime updates
    analyze_video(path)
    assert os.stat(path).st_atime == 1_000_000_000


def test_in_memory_bytes_get_the_reference_vpdq_through_a_memfd(
    clip: bytes, from_path: VideoAnalysis
) -> None:
    result = analyze_video(clip)
    assert result.vpdq_source == "vpdq"
    assert [f["time"] for f in result.vpdq] == pytest.approx([f["time"] for f in from_path.vpdq])
    assert all(
        pdq_distance(a["pdq"], b["pdq"]) <= 16
        for a, b in zip(result.vpdq, from_path.vpdq, strict=True)
    )


@pytest.mark.parametrize("working_size", [512, 64])
def test_the_pdqhash_fallback_agrees_with_the_reference_vpdq(
    clip: bytes, monkeypatch: pytest.MonkeyPatch, working_size: int
) -> None:
    reference = analyze_video(clip, working_size=working_size)
    monkeypatch.delattr(os, "memfd_create")
    fallback = analyze_video(clip, working_size=working_size)
    assert (reference.vpdq_source, fallback.vpdq_source) == ("vpdq", "pdqhash")
    assert [f["time"] for f in fallback.vpdq] == pytest.approx([f["time"] for f in reference.vpdq])
    for ours, theirs in zip(fallback.vpdq, reference.vpdq, strict=True):
        assert pdq_distance(ours["pdq"], theirs["pdq"]) <= 8


def test_a_rotated_clip_shows_upright_frames_but_hashes_vpdq_as_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = make_video(rotation=90, seconds=2)
    result = analyze_video(clip, keep_pixels=True)
    assert (result.width, result.height) == (HEIGHT, WIDTH)
    first = result.keyframes[0]
    assert first.pixels is not None and first.pixels.shape == (WIDTH, HEIGHT, 3)
    upright = np.ascontiguousarray(np.rot90(moving_frame(photo(), 0)))
    assert first.pdq is not None and pdq_distance(first.pdq, pdq_hex(upright)[0]) <= 31
    monkeypatch.delattr(os, "memfd_create")
    fallback = analyze_video(clip)
    assert result.vpdq_source == "vpdq" and fallback.vpdq_source == "pdqhash"
    assert pdq_distance(result.vpdq[0]["pdq"], fallback.vpdq[0]["pdq"]) <= 8


def test_the_frame_limit_truncates_and_keeps_what_was_found(clip: bytes) -> None:
    result = analyze_video(clip, max_frames=2)
    assert len(result.keyframes) == 2
    assert result.truncated is not None and result.truncated.startswith("frame limit")
    assert result.vpdq_source == "pdqhash"


def test_the_time_limit_truncates_and_keeps_what_was_found(clip: bytes) -> None:
    result = analyze_video(clip, max_seconds=2.0)
    assert result.truncated is not None and result.truncated.startswith("time limit")
    assert max(k.time for k in result.keyframes) <= 2.0
    assert [round(f["time"]) for f in result.vpdq] == [0, 1, 2]


def test_the_record_is_json_and_carries_no_pixels(from_path: VideoAnalysis) -> None:
    record = from_path.to_record()
    assert json.loads(json.dumps(record)) == record
    assert set(record) == {
        "duration",
        "codec",
        "width",
        "height",
        "fps",
        "keyframes",
        "vpdq",
        "vpdq_source",
        "truncated",
    }
    assert set(record["keyframes"][0]) == {"time", "pdq", "quality"}


@pytest.mark.parametrize(
    "data",
    [b"", b"not a video, just text\n" * 40, np.random.default_rng(11).bytes(20_000)],
    ids=["empty", "text", "random"],
)
def test_bytes_that_are_not_a_video_raise_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="cannot open video|no video stream|no decodable"):
        analyze_video(data)


def test_a_sound_file_has_no_video_stream() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(bytes(16000))
    with pytest.raises(DecodeError, match="no video stream"):
        analyze_video(buf.getvalue())


@pytest.mark.parametrize("fmt", ["mp4", "mpegts", "matroska"])
def test_a_cut_video_gives_partial_results_or_a_decode_error(fmt: str) -> None:
    data = make_video(fmt=fmt, gop=10)
    try:
        result = analyze_video(data[: len(data) // 2])
    except DecodeError as error:
        assert str(error)
    else:
        assert 0 < len(result.keyframes) <= SECONDS + 1
        assert result.keyframes[-1].time < SECONDS


@pytest.mark.parametrize("fmt", ["mpegts", "matroska"])
def test_a_cut_stream_keeps_its_first_part(fmt: str) -> None:
    data = make_video(fmt=fmt, gop=10)
    result = analyze_video(data[: len(data) // 2])
    assert 1 <= len(result.keyframes) < SECONDS
    assert all(k.pdq is not None for k in result.keyframes)


def test_a_cut_stream_that_promised_more_says_where_it_ends() -> None:
    data = make_video(fmt="matroska", gop=10)
    result = analyze_video(data[: len(data) // 2])
    assert result.duration == pytest.approx(SECONDS, abs=0.2)
    assert result.truncated is not None and result.truncated.startswith("video ends at")


def test_zeroed_bytes_inside_a_stream_cost_packets_not_the_video(clip: bytes) -> None:
    damaged = clip[:5000] + bytes(5000) + clip[10_000:]
    result = analyze_video(damaged)
    assert result.keyframes
    if result.truncated is not None:
        assert result.vpdq_source == "pdqhash"


def test_the_reference_vpdq_declines_garbage_instead_of_crashing() -> None:
    assert _reference_vpdq(np.random.default_rng(5).bytes(10_000), (64, 48)) is None
    assert _reference_vpdq(b"", (64, 48)) is None


def test_invalid_limits_are_rejected(clip: bytes) -> None:
    with pytest.raises(ValueError, match="positive"):
        analyze_video(clip, interval=0)


def squeezed_video(frames: int = 600, size: int = 64) -> bytes:
    """``frames`` frames 1/60000 s apart (600 frames in 10 ms): almost nothing on the timeline,
    but every frame must be decoded."""
    buf = io.BytesIO()
    tick = Fraction(1, 60000)
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.codec_context.time_base = tick
        rng = np.random.default_rng(0)
        for index in range(frames):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, tick
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def test_frames_squeezed_into_milliseconds_are_cut_by_the_frame_rate_limit() -> None:
    data = squeezed_video()
    result = analyze_video(data, max_rate=100)
    assert result.truncated is not None
    assert result.truncated.startswith("frame-rate limit: 101 frames decoded in the first 0.00")
    assert result.vpdq_source == "pdqhash"  # no second decode by the reference after a cut


def test_the_decoded_frame_and_wall_clock_budgets_cut_a_video() -> None:
    data = squeezed_video(frames=90)
    frames = analyze_video(data, max_decoded=40)
    assert frames.truncated is not None and frames.truncated.startswith("decode limit: 40 frames")
    with pytest.raises(DecodeError, match="no decodable video frame: decode time limit"):
        analyze_video(data, max_wall=1e-9)


def test_a_cut_video_is_recorded_as_partly_decoded(tmp_path: Path) -> None:
    from heroes.config import Limits, Settings
    from heroes.pipeline.report import records
    from heroes.pipeline.runner import triage
    from heroes.store import CaseStore

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "squeezed.mp4").write_bytes(squeezed_video())
    limits = Limits(max_frame_rate=100)
    triage(ev, tmp_path / "case", settings=Settings(workers=1, models=False, limits=limits))
    store = CaseStore(tmp_path / "case", create=False)
    try:
        (row,) = list(records(store))
    finally:
        store.close()
    assert row["status"] == "ok"
    assert row["error"].startswith("video partly decoded: frame-rate limit: 101 frames")
