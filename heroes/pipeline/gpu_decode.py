"""JPEG decode on the GPU (torchvision's nvJPEG path), with the CPU decode as the fallback.

At a few thousand images per second a GPU node runs out of CPU cores for JPEG decoding long
before its GPU runs out of work (5.7 ms of CPU per web-size JPEG with Pillow's ``draft``, 27
cores at 3,000 images/s for decode, EXIF and PDQ; docs/scale.md), so the split plan can decode on
the device instead:
``torchvision.io.decode_jpeg(..., device="cuda")`` decodes a batch with nvJPEG, the working copy
is resized on the device and only the small copy comes back to the host.

The working copy is the one :func:`heroes.pipeline.decode.analyze_image` makes: the longest side
at most ``working_size`` in the size Pillow's ``draft`` + ``thumbnail`` pick (same width and
height to the pixel), the EXIF orientation applied after resizing, RGB uint8. Pixels differ by a
few levels: nvJPEG decodes at full size and the device resizes with an antialiased bicubic
filter, where Pillow decodes at 1/2-1/8 scale in the DCT first.

Only what the device path handles like the CPU path is taken: baseline or progressive JPEGs in
RGB/YCbCr or greyscale that end with an EOI marker, within ``max_pixels``. Anything else (CMYK,
other formats, truncated or damaged files, a decode the device refuses) comes back as ``None``,
and the caller decodes it on the CPU with :func:`heroes.pipeline.decode.analyze_image`, which
also says what is wrong with a damaged file. :func:`working_copies` does exactly that.

EXIF, PDQ and the record's other facts still come from the CPU (``analyze_image`` on the same
bytes, or PDQ of the returned working copy); this module only moves the pixel decode.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from heroes.pipeline.decode import DEFAULT_MAX_PIXELS, DecodeError, load_rgb, thumbnail_size

_EOI = b"\xff\xd9"
_MODES = frozenset({"RGB", "L"})


@lru_cache(maxsize=1)
def available() -> bool:
    """True when torch sees a CUDA device and torchvision's ``decode_jpeg`` imports."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # a missing or mismatched torch/torchvision: the CPU decodes
        return False
    return True


@dataclass(frozen=True, slots=True)
class JpegPlan:
    """What the header says and what the working copy will be, before any pixel is decoded."""

    #: size stored in the file, before the EXIF orientation
    width: int
    height: int
    #: working copy size (width, height) before the orientation is applied
    target: tuple[int, int]
    #: EXIF orientation 1-8 (1: none)
    orientation: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the working copy as returned, orientation applied."""
        w, h = self.target
        return (w, h, 3) if self.orientation in (5, 6, 7, 8) else (h, w, 3)


def plan(
    data: bytes, working_size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> JpegPlan | None:
    """The :class:`JpegPlan` of a file the device path can take, else None (decode on CPU)."""
    if len(data) < 4 or not data.startswith(b"\xff\xd8") or not data.rstrip(b"\0").endswith(_EOI):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            with im:
                if im.format != "JPEG" or im.mode not in _MODES:
                    return None
                width, height = im.size
                if width * height > max_pixels:
                    return None
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:
                    return None  # unreadable EXIF: the CPU path says what is wrong
                # the size Pillow's DCT-scaled draft decodes to, which thumbnail then resizes
                scale = working_size / max(width, height)
                im.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                drafted = im.size
    except Exception:
        return None
    if orientation not in range(1, 9):
        orientation = 1
    return JpegPlan(width, height, thumbnail_size(drafted, working_size), orientation)


def working_copy(chw: Any, target: tuple[int, int], orientation: int) -> NDArray[np.uint8]:
    """Resize a decoded ``uint8[3, H, W]`` torch tensor to ``target`` (width, height) on its
    device, apply the EXIF orientation as :mod:`heroes.pipeline.decode` does (after resizing),
    and return ``uint8[h, w, 3]`` on the host."""
    import torch
    import torch.nn.functional as F

    w, h = target
    x = chw
    if (x.shape[-1], x.shape[-2]) != (w, h):
        x = F.interpolate(
            x.unsqueeze(0).float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False
        )[0]
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    if orientation == 2:
        x = x.flip(-1)
    elif orientation == 3:
        x = x.flip(-2, -1)
    elif orientation == 4:
        x = x.flip(-2)
    elif orientation == 5:
        x = x.transpose(-2, -1)
    elif orientation == 6:
        x = torch.rot90(x, -1, dims=(-2, -1))
    elif orientation == 7:
        x = x.transpose(-2, -1).flip(-2, -1)
    elif orientation == 8:
        x = torch.rot90(x, 1, dims=(-2, -1))
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


def decode_jpegs(
    datas: Sequence[bytes],
    working_size: int,
    device: Any = "cuda",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[NDArray[np.uint8] | None]:
    """Working copies of a batch of JPEGs decoded on ``device``; None for each file the device
    path does not take or cannot decode (the caller decodes those on the CPU)."""
    plans = [plan(d, working_size, max_pixels=max_pixels) for d in datas]
    out: list[NDArray[np.uint8] | None] = [None] * len(datas)
    todo = [i for i, p in enumerate(plans) if p is not None]
    if not todo:
        return out
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.frombuffer(datas[i], dtype=np.uint8).copy()) for i in todo]
    decoded: list[Any]
    try:
        decoded = list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except Exception:  # one bad file fails the batch: decode one at a time to find it
        decoded = []
        for t in tensors:
            try:
                decoded.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except Exception:
                decoded.append(None)
    for i, chw in zip(todo, decoded, strict=True):
        p = plans[i]
        assert p is not None
        if chw is None or tuple(chw.shape) != (3, p.height, p.width):
            continue
        try:
            out[i] = working_copy(chw, p.target, p.orientation)
        except Exception:
            out[i] = None
    return out


def working_copies(
    datas: Sequence[bytes],
    working_size: int,
    device: Any = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[NDArray[np.uint8] | DecodeError]:
    """Working copies of every file: on the device where :func:`available` (or ``device`` is
    given), the rest with :func:`heroes.pipeline.decode.load_rgb` on the CPU; a file neither
    decodes is its :class:`DecodeError`, never an exception for the batch."""
    if device is None and available():
        device = "cuda"
    fast: list[NDArray[np.uint8] | None] = (
        decode_jpegs(datas, working_size, device, max_pixels=max_pixels)
        if device is not None
        else [None] * len(datas)
    )
    out: list[NDArray[np.uint8] | DecodeError] = []
    for data, px in zip(datas, fast, strict=True):
        if px is not None:
            out.append(px)
            continue
        try:
            out.append(load_rgb(data, working_size=working_size, max_pixels=max_pixels)[0])
        except DecodeError as error:
            out.append(error)
    return out
