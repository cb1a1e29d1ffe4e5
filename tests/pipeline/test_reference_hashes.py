"""heroes' PDQ and vPDQ agree with the hashes Meta's reference tools publish for the same files
(tests/data/threatexchange, see its SOURCE.md): a shared hash list is only useful if they do.

Distances are printed (``pytest -s``); benchmarks/bench_reference_hashes.py prints the table.
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from heroes.pipeline.decode import analyze_image, pdq_distance
from heroes.pipeline.matching import PDQ_DIHEDRAL
from heroes.pipeline.video import analyze_video

DATA = Path(__file__).parent.parent / "data" / "threatexchange"
#: agreement asked of heroes: far inside the match radius of 31
AGREE = 10
MIN_QUALITY = 50


def _references() -> list[dict[str, str]]:
    with (DATA / "pdq" / "reference.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _vpdq_reference(name: str) -> tuple[np.ndarray, list[str], list[int]]:
    rows = [line.split(",") for line in (DATA / "vpdq" / f"{name}.txt").read_text().split()]
    times = np.array([float(r[3]) for r in rows])
    return times, [r[2] for r in rows], [int(r[1]) for r in rows]


@pytest.mark.parametrize("ref", _references(), ids=lambda r: r["file"])
def test_image_pdq_agrees_with_the_reference_hashers(ref: dict[str, str]) -> None:
    result = analyze_image((DATA / "pdq" / ref["file"]).read_bytes())
    assert result.pdq is not None and result.pdq_quality is not None
    distance = pdq_distance(result.pdq, ref["pdq"])
    print(f"{ref['file']}: {distance} bits, quality {result.pdq_quality} ({ref['source']})")
    if ref["quality"]:
        assert abs(result.pdq_quality - int(ref["quality"])) <= 10
    if result.pdq_quality >= MIN_QUALITY:
        assert distance <= AGREE
    else:
        # a flat picture (sky, fog): its hash is noise and is never used for matching
        assert distance <= 31


def test_a_transparent_png_is_hashed_without_its_alpha_as_the_reference_does() -> None:
    ref = next(r for r in _references() if r["file"] == "LA.png")
    result = analyze_image((DATA / "pdq" / "LA.png").read_bytes())
    assert result.pdq == ref["pdq"]


@pytest.mark.parametrize(
    ("copy", "variant"), [("bridge-2-rotate-90.jpg", "rotate_90"), ("bridge-5-flipx.jpg", "flip_x")]
)
def test_dihedral_hashes_agree_with_the_reference_hashes_of_turned_copies(
    copy: str, variant: str
) -> None:
    refs = {r["file"]: r["pdq"] for r in _references()}
    original = analyze_image((DATA / "pdq" / "bridge-1-original.jpg").read_bytes())
    assert original.pdq_dihedral is not None
    distances = [pdq_distance(h, refs[copy]) for h in original.pdq_dihedral]
    print(f"bridge-1-original {variant} vs {copy}: {distances}")
    assert int(np.argmin(distances)) == PDQ_DIHEDRAL.index(variant)
    assert min(distances) <= AGREE


@pytest.mark.parametrize("name", ["doorknob-hd-no-bar", "test-padded-dimensions"])
@pytest.mark.parametrize("source", ["vpdq", "pdqhash"])
def test_vpdq_agrees_with_the_published_sample_hashes(
    name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = DATA / "vpdq" / f"{name}.mp4"
    if source == "pdqhash":
        # bytes without an anonymous file to hand them over: the PyAV fallback
        monkeypatch.delattr(os, "memfd_create")
        result = analyze_video(video.read_bytes())
    else:
        # bytes, as the pass hands every video up to 64 MiB: the reference gets an anonymous file
        result = analyze_video(video.read_bytes())
    assert result.vpdq_source == source
    times, hashes, qualities = _vpdq_reference(name)
    distances = []
    for feature in result.vpdq:
        j = int(np.argmin(np.abs(times - feature["time"])))
        assert abs(times[j] - feature["time"]) < 0.05
        if qualities[j] >= MIN_QUALITY:
            distances.append(pdq_distance(feature["pdq"], hashes[j]))
    print(
        f"{name} ({source}): {len(distances)} frames, median {statistics.median(distances)}, "
        f"max {max(distances)} bits"
    )
    assert len(distances) >= 2
    assert max(distances) <= AGREE


def test_whole_frames_are_not_hashed_twice_when_the_reference_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heroes.pipeline import video as video_module

    def refuse(*_args: object) -> None:
        raise AssertionError("whole-frame PDQ computed although the reference ran")

    monkeypatch.setattr(video_module, "_vpdq_feature", refuse)
    result = analyze_video((DATA / "vpdq" / "doorknob-hd-no-bar.mp4").read_bytes())
    assert result.vpdq_source == "vpdq" and len(result.vpdq) >= 2


def test_a_video_on_disk_is_never_handed_to_the_reference_by_name() -> None:
    """The reference opens a name itself, which would change the file's access time: a file on
    disk (over the pass's in-memory size) gets the whole-frame fallback from the same decode."""
    name = "doorknob-hd-no-bar"
    result = analyze_video(DATA / "vpdq" / f"{name}.mp4")
    assert result.vpdq_source == "pdqhash"
    times, hashes, qualities = _vpdq_reference(name)
    distances = []
    for feature in result.vpdq:
        j = int(np.argmin(np.abs(times - feature["time"])))
        if qualities[j] >= MIN_QUALITY:
            distances.append(pdq_distance(feature["pdq"], hashes[j]))
    assert len(distances) >= 2 and max(distances) <= AGREE


def test_a_stream_the_reference_refuses_gets_the_fallback_in_a_second_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heroes.pipeline import video as video_module

    monkeypatch.setattr(video_module, "_reference_vpdq", lambda *_args: None)
    name = "test-padded-dimensions"
    result = analyze_video((DATA / "vpdq" / f"{name}.mp4").read_bytes())
    assert result.vpdq_source == "pdqhash"
    times, hashes, _qualities = _vpdq_reference(name)
    assert [round(f["time"]) for f in result.vpdq] == [0, 1, 2, 3, 4]
    for feature in result.vpdq:
        j = int(np.argmin(np.abs(times - feature["time"])))
        assert pdq_distance(feature["pdq"], hashes[j]) <= AGREE


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_pdq_drops_alpha_while_the_models_still_see_white_behind_it(mode: str) -> None:
    import io

    from PIL import Image

    from heroes.pipeline.decode import pdq_hex

    rng = np.random.default_rng(1)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), 16, 0), 16, 1)
    alpha = np.zeros((256, 256), np.uint8)
    alpha[:, :128] = 255  # the right half is transparent, over colours as stored
    image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "LA":
        image = image.convert("LA")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    result = analyze_image(buf.getvalue(), keep_pixels=True)
    stored = np.asarray(image.convert("RGBA"))[..., :3]
    assert result.pdq == pdq_hex(np.ascontiguousarray(stored))[0]
    assert result.pixels is not None and (result.pixels[:, 128:] == 255).all()
    assert pdq_distance(result.pdq, pdq_hex(result.pixels)[0]) > 31
