"""The device JPEG path: which files it takes, the working copy it makes (size, orientation,
pixels) against the CPU decode, and the CPU fallback for everything else."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from heroes.pipeline import gpu_decode
from heroes.pipeline.decode import DecodeError, analyze_image, load_rgb
from heroes.pipeline.gpu_decode import (
    available,
    decode_jpegs,
    plan,
    thumbnail_size,
    working_copies,
    working_copy,
)

SIZES = [(640, 480), (480, 640), (1999, 1001), (513, 512), (300, 200), (4000, 31), (1024, 1024)]


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic picture (gradients and discs) with some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            255 * xx / max(1, width - 1),
            255 * yy / max(1, height - 1),
            127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0),
        ],
        axis=-1,
    )
    for _ in range(5):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 200)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray, orientation: int = 1, mode: str = "RGB", **kw: Any) -> bytes:
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    im.save(buf, "JPEG", quality=92, exif=exif.tobytes(), **kw)
    return buf.getvalue()


def device_copy(data: bytes, working_size: int) -> np.ndarray:
    """The device path with a full-size decode done by Pillow (what nvJPEG hands over)."""
    p = plan(data, working_size)
    assert p is not None
    with Image.open(io.BytesIO(data)) as im:
        full = np.asarray(im.convert("RGB"))
    chw = torch.from_numpy(np.ascontiguousarray(full.transpose(2, 0, 1)))
    return working_copy(chw, p.target, p.orientation)


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("working_size", [512, 224])
def test_planned_shape_is_the_cpu_working_copy_shape(
    width: int, height: int, working_size: int
) -> None:
    data = jpeg(photo(width, height))
    p = plan(data, working_size)
    assert p is not None and (p.width, p.height) == (width, height)
    cpu = analyze_image(data, working_size=working_size, keep_pixels=True).pixels
    assert cpu is not None
    assert p.shape == cpu.shape


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_like_the_cpu_decode(orientation: int) -> None:
    data = jpeg(photo(900, 500, seed=orientation), orientation)
    cpu = analyze_image(data, working_size=512, keep_pixels=True).pixels
    assert cpu is not None
    dev = device_copy(data, 512)
    assert dev.shape == cpu.shape
    diff = np.abs(dev.astype(np.int16) - cpu.astype(np.int16))
    # a wrong rotation or mirror moves the gradients: differences of tens of levels
    assert float(diff.mean()) < 1.5, (orientation, float(diff.mean()))


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_device_working_copy_is_within_a_few_levels_of_the_cpu_one(width: int, height: int) -> None:
    data = jpeg(photo(width, height, seed=width))
    cpu = load_rgb(data, working_size=512)[0]
    dev = device_copy(data, 512)
    assert dev.shape == cpu.shape and dev.dtype == np.uint8
    diff = np.abs(dev.astype(np.int16) - cpu.astype(np.int16))
    # the CPU copy is a box reduce then a bilinear (OpenCV), the device's an antialiased bicubic:
    # 0.3-0.9 levels apart on average, 1.6 on a 4-row strip of a 4000x31 picture
    assert float(diff.mean()) < 2.0 and float(np.percentile(diff, 99)) < 30


def test_thumbnail_size_is_pillows() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(1, 3000, 2))
        ws = int(rng.integers(16, 1024))
        im = Image.new("L", (w, h))
        im.thumbnail((ws, ws), Image.Resampling.BICUBIC)
        assert thumbnail_size((w, h), ws) == im.size, (w, h, ws)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(64, 48)).save(buf, "PNG")
    return buf.getvalue()


def test_files_the_device_does_not_take_are_left_to_the_cpu() -> None:
    good = jpeg(photo(320, 240))
    cmyk = jpeg(photo(320, 240), mode="CMYK")
    refused = {
        "png": _png(),
        "cmyk": cmyk,
        "truncated": good[: len(good) // 2],
        "garbage": b"\xff\xd8" + bytes(range(256)) * 4,
        "empty": b"",
        "not an image": b"hello world\xff\xd9",
    }
    for name, data in refused.items():
        assert plan(data, 512) is None, name
    assert plan(good, 512) is not None
    assert plan(good, 512, max_pixels=320 * 240 - 1) is None
    # nothing the device could take: no device library is needed to say so
    assert decode_jpegs(list(refused.values()), 512, "cpu") == [None] * len(refused)


def test_without_a_device_every_file_is_decoded_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu_decode, "available", lambda: False)
    good = jpeg(photo(700, 400))
    cmyk = jpeg(photo(320, 240), mode="CMYK")
    bad = b"\xff\xd8 not a jpeg"
    out = working_copies([good, _png(), cmyk, bad], 512)
    assert isinstance(out[3], DecodeError)
    for data, got in zip([good, _png(), cmyk], out[:3], strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, load_rgb(data, working_size=512)[0])


def test_available_is_false_without_torch_or_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    available.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
        assert available() is False
        available.cache_clear()
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert available() is False
    finally:
        available.cache_clear()


def test_available_says_whether_this_machine_decodes_on_a_device() -> None:
    available.cache_clear()
    if not torch.cuda.is_available():
        assert available() is False
        return
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:
        assert available() is False
        return
    assert available() is True


@pytest.mark.gpu
def test_cuda_decode_matches_the_cpu_working_copy() -> None:
    """Runs on a GPU machine (where the ``gpu`` extra brings torchvision built for its torch);
    the fallback contract above is what a CPU-only machine can check."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (an accelerator); this machine has none")
    turns = [1, 6, 8, 3, 1, 2, 5]
    datas = [jpeg(photo(w, h, seed=w), o) for (w, h), o in zip(SIZES, turns, strict=True)]
    got = decode_jpegs(datas, 512, "cuda")
    for data, dev in zip(datas, got, strict=True):
        cpu = analyze_image(data, working_size=512, keep_pixels=True).pixels
        assert cpu is not None and dev is not None
        assert dev.shape == cpu.shape
        assert float(np.abs(dev.astype(np.int16) - cpu.astype(np.int16)).mean()) < 1.5
