"""Decode an image once, at the size the pipeline needs, and hash it with PDQ.

Seized media is hostile input: pixel bombs, truncated files, garbage metadata. Every image is
identified from its header, its pixel count is checked against ``max_pixels`` before a single
pixel is decoded, JPEGs are decoded through ``draft`` straight to about the working size, and the
result is one RGB copy (longest side <= ``working_size``) from which PDQ and the models work.
Anything unreadable becomes a :class:`DecodeError` with a reason a reviewer can read.

**Damaged files keep what could be read.** A truncated or corrupt image is decoded a second time
with Pillow's truncated-image tolerance; the decoder fills what it could not read with one flat
colour (JPEG grey, PNG black) from the bottom up, so the rows decoded are the rows above that flat
tail. When at least :data:`MIN_DECODED_FRACTION` of the rows decoded, the image is analysed as it
would show in a viewer (PDQ, models) and ``ImageAnalysis.damage`` says what was wrong, e.g.
``truncated image: image file is truncated (16 bytes not processed); 97% of rows decoded``.
Below that, most of the picture would be decoder fill: the file is a :class:`DecodeError` whose
``partial`` keeps the header facts (size, format, EXIF) but no PDQ, since a hash of fill would be
made up. A progressive JPEG cut short decodes every row at a lower quality, so it counts as fully
decoded. A flat bottom that the picture really has counts as undecoded in a damaged file (it
cannot be told from fill), which errs towards calling a file too damaged.

**Decode memory is bounded per worker.** JPEGs decode through ``draft`` at 1/2 to 1/8 scale; other
formats decode at full size (their Pillow decoders cannot reduce), so an image whose full-size
decode would take more than ``max_decode_bytes`` (default :data:`DEFAULT_MAX_DECODE_BYTES`,
counted as Pillow stores pixels: 4 bytes per multi-band pixel, plus any mode conversion) is refused
with a readable error before a pixel is decoded, instead of taking gigabytes (a 13000 x 13000 RGBA
PNG of 657 KB would need about 645 MiB per copy). No full-size copy is made beyond the decode
itself, except a mode conversion that resampling needs (palette, CMYK, transparency key).
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pdqhash
from numpy.typing import NDArray
from PIL import Image, ImageFile
from pillow_heif import register_heif_opener

from heroes.pipeline.matching import PDQ_DIHEDRAL
from heroes.pipeline.xmp import fill_missing, read_iptc, read_xmp, safe_read, xmp_packet

register_heif_opener()

#: Pillow's own hard limit (2 x ``Image.MAX_IMAGE_PIXELS``), the default of ``Limits.max_pixels``
DEFAULT_MAX_PIXELS = 178_956_970
PDQ_HEX_LEN = 64
#: Rows of a damaged image that must decode for it to be analysed (see the module docstring).
MIN_DECODED_FRACTION = 0.5
#: Bytes one full-size decode (plus a mode conversion) may take in a worker.
DEFAULT_MAX_DECODE_BYTES = 512 * 1024 * 1024


#: Background that transparent pixels are composited on.
#: White, because viewers and messaging apps show stickers and cut-outs on light backgrounds, and
#: dark line art or text on a transparent canvas (drawings, comics) would vanish on black.
ALPHA_BACKGROUND = 255

_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_MAX_TEXT = 256


class DecodeError(ValueError):
    """An image or video that cannot be (fully) decoded, with a reason a reviewer can read.

    ``partial`` holds what could still be computed (e.g. the hashes of a truncated JPEG), so the
    caller can keep them while recording the file as damaged.
    """

    def __init__(self, reason: str, *, partial: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


@dataclass(slots=True)
class ImageInfo:
    """What the header and metadata say about an image, next to its decoded working copy."""

    width: int
    height: int
    format: str | None
    mode: str
    frames: int
    exif: dict[str, Any] | None
    truncated: str | None = None
    #: share of the rows that decoded (1.0 unless ``truncated``)
    decoded_fraction: float = 1.0
    #: what PDQ hashes when it differs from the working copy (see :func:`pdq_pixels`)
    pdq_pixels: NDArray[np.uint8] | None = None


@dataclass(slots=True)
class ImageAnalysis:
    width: int
    height: int
    format: str | None
    mode: str
    frames: int
    pdq: str | None
    pdq_quality: int | None
    exif: dict[str, Any] | None
    pixels: NDArray[np.uint8] | None = None
    #: why the file is damaged when it was analysed anyway (the record's ``error``), else None
    damage: str | None = None
    decoded_fraction: float = 1.0
    #: PDQ of the image and of its rotations and mirrors, in :data:`PDQ_DIHEDRAL` order
    pdq_dihedral: list[str] | None = None


class _Damaged(Exception):
    """The decoder stopped before the end of the pixel data."""


def analyze_image(
    data: bytes,
    *,
    working_size: int = 512,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keep_pixels: bool = False,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    min_decoded_fraction: float = MIN_DECODED_FRACTION,
) -> ImageAnalysis:
    """Decode ``data`` once and return its size, format, EXIF and PDQ.

    A damaged image of which at least ``min_decoded_fraction`` of the rows decoded is analysed
    and says so in ``damage``. Raises :class:`DecodeError` otherwise; for a damaged image the
    error's ``partial`` holds its header facts (size, format, EXIF) and no PDQ.
    """
    rgb, info = load_rgb(
        data, working_size=working_size, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes
    )
    too_damaged = info.truncated is not None and info.decoded_fraction < min_decoded_fraction
    dihedral: list[str] | None = None
    pdq: str | None = None
    quality: int | None = None
    if not too_damaged:
        dihedral, quality = pdq_dihedral_hex(rgb if info.pdq_pixels is None else info.pdq_pixels)
        pdq = dihedral[0]
    analysis = ImageAnalysis(
        width=info.width,
        height=info.height,
        format=info.format,
        mode=info.mode,
        frames=info.frames,
        pdq=pdq,
        pdq_quality=quality,
        exif=info.exif,
        pixels=rgb if keep_pixels and not too_damaged else None,
        damage=info.truncated,
        decoded_fraction=info.decoded_fraction,
        pdq_dihedral=dihedral,
    )
    if too_damaged:
        needed = f"under the {min_decoded_fraction:.0%} needed to analyse it"
        raise DecodeError(f"{info.truncated}, {needed}", partial=analysis)
    return analysis


def load_rgb(
    data: bytes,
    *,
    working_size: int = 512,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> tuple[NDArray[np.uint8], ImageInfo]:
    """Decode the first frame of an image to an RGB array whose longest side <= ``working_size``.

    Damaged files are decoded a second time with Pillow's truncated-image tolerance so that what
    is there can still be hashed; ``ImageInfo.truncated`` then says why and
    ``ImageInfo.decoded_fraction`` how much of the picture is real.
    """
    if working_size < 1:
        raise ValueError(f"working_size must be positive, got {working_size}")
    with _quiet_pillow():
        try:
            with _truncated_images(allowed=False):
                return _decode(data, working_size, max_pixels, max_decode_bytes)
        except _Damaged as damage:
            reason = str(damage)
        with _truncated_images(allowed=True):
            try:
                rgb, info = _decode(data, working_size, max_pixels, max_decode_bytes, damaged=True)
            except (_Damaged, DecodeError):
                raise DecodeError(f"damaged image: {reason}") from None
    kind = "truncated image" if "truncat" in reason.lower() else "damaged image"
    rows = f"{math.floor(info.decoded_fraction * 100)}% of rows decoded"
    return rgb, replace(info, truncated=f"{kind}: {reason}; {rows}")


def _decode(
    data: bytes, working_size: int, max_pixels: int, max_bytes: int, *, damaged: bool = False
) -> tuple[NDArray[np.uint8], ImageInfo]:
    try:
        im = _identify(data)
    except Image.DecompressionBombError as bomb:
        raise DecodeError(f"decompression bomb: {bomb}") from None
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(f"decompression bomb: {width * height} pixels > {max_pixels}")
        fmt, mode = im.format, im.mode
        frames = _frame_count(im)
        applied = _orientation_applied_by_plugin(im)
        # Ask for the working size in the image's own aspect: a square request would make the
        # short side decide and decode a 3:2 photo at twice the scale needed.
        scale = working_size / max(width, height)
        im.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        need = _decode_bytes(im)
        if need > max_bytes:
            raise DecodeError(
                f"too large to decode: {width}x{height} {mode} needs about {need >> 20} MiB, "
                f"over the {max_bytes >> 20} MiB decode budget per worker"
            )
        try:
            im.load()
        except Image.DecompressionBombError as bomb:
            raise DecodeError(f"decompression bomb: {bomb}") from None
        except MemoryError:
            raise
        except Exception as error:
            raise _Damaged(str(error) or type(error).__name__) from None
        fraction = _decoded_fraction(im) if damaged else 1.0
        exif = read_exif(im)
        orientation = exif.get("orientation", 1) if exif else 1
        try:
            rgb, for_pdq = _working_copy(im, working_size, orientation)
        except MemoryError:
            raise
        except Exception as error:
            raise DecodeError(f"cannot convert {mode} image to RGB: {error}") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if applied is not None:
        exif = {**(exif or {}), "orientation": applied}
        if fmt in ("HEIF", "AVIF") and applied != 1 and not _heif_has_transform(data):
            exif["orientation_applied"] = False
    info = ImageInfo(
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        frames=frames,
        exif=exif,
        decoded_fraction=fraction,
        pdq_pixels=for_pdq,
    )
    return rgb, info


def _decode_bytes(im: Image.Image) -> int:
    """Bytes of the decode ``im`` is set up for (after ``draft``), plus a mode conversion.

    Pillow keeps every multi-band pixel in 4 bytes; ``I``/``F`` take 4, ``I;16`` 2, others 1.
    """
    w, h = im.size
    mode = im.mode
    if mode.startswith("I;16"):
        per_pixel = 2
    elif mode in ("I", "F") or len(mode) > 1:
        per_pixel = 4
    else:
        per_pixel = 1
    converts = mode not in ("RGB", "RGBA", "L", "I", "F") and not mode.startswith("I;16")
    converts = converts or "transparency" in im.info
    return w * h * (per_pixel + (4 if converts else 0))


def _decoded_fraction(im: Image.Image, band: int = 64) -> float:
    """Share of rows above the flat tail a decoder leaves where data ran out.

    Scans from the bottom in bands so a large image is never copied whole.
    """
    w, h = im.size
    if h == 0 or w == 0:
        return 0.0
    fill: Any = None
    flat = 0
    y1 = h
    while y1 > 0:
        y0 = max(0, y1 - band)
        rows = np.asarray(im.crop((0, y0, w, y1)))
        if fill is None:
            fill = rows[-1:, :1]
        same = (rows == fill).reshape(rows.shape[0], -1).all(axis=1)
        for is_fill in same[::-1]:
            if not is_fill:
                return 1.0 - flat / h
            flat += 1
        y1 = y0
    return 0.0


#: the filter that makes the working copy where OpenCV does not (alpha, 16-bit and float): Pillow's
#: antialiased bilinear (1.6x cheaper than bicubic at web sizes)
WORKING_RESAMPLE = Image.Resampling.BILINEAR
#: modes whose working copy OpenCV makes (8-bit samples, no alpha: Pillow resamples RGBA through
#: premultiplied alpha, which OpenCV does not)
_CV_MODES = {"RGB", "L"}


def thumbnail_size(size: tuple[int, int], working_size: int) -> tuple[int, int]:
    """The size ``Image.thumbnail((working_size, working_size))`` gives an image of ``size``."""
    width, height = size
    if working_size >= width and working_size >= height:
        return width, height
    aspect = width / height

    def round_aspect(number: float, key: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    x = y = working_size
    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _shrink(im: Image.Image, working_size: int) -> Image.Image:
    """The image scaled to fit ``working_size``, as ``thumbnail`` sizes it.

    8-bit images: first Pillow's ``reduce`` by the whole factor (a box filter, as ``thumbnail``
    applies it), then OpenCV's bilinear for the rest, a ratio under 2 (where a 2x2 bilinear still
    reads every source pixel). 6x cheaper than Pillow's antialiased bilinear at web sizes (0.4
    against 2.6 ms for a 640x500 photo); the detector and PDQ filter the copy again."""
    w, h = im.size
    size = thumbnail_size((w, h), working_size)
    if size == (w, h):
        return im
    if im.mode not in _CV_MODES:
        out = im.copy()
        out.thumbnail((working_size, working_size), WORKING_RESAMPLE)
        return out
    factor = min(w // size[0], h // size[1])
    if factor >= 2:
        im = im.reduce(factor)
    import cv2

    arr = np.asarray(im)
    small = cv2.resize(arr, size, interpolation=cv2.INTER_LINEAR)
    return Image.fromarray(small, im.mode)


def _working_copy(
    im: Image.Image, working_size: int, orientation: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    """Resample first and rotate after: transposing the small copy is the cheap order.

    Returns the RGB working copy and, when PDQ must hash other pixels, those (see
    :func:`pdq_pixels`).
    """
    work = _working_mode(im)
    if work.mode in ("RGBA", "LA"):
        work = _reduce_in_strips(work, working_size)
    work = _shrink(work, working_size)
    if orientation in _ORIENTATION_TRANSPOSE:
        work = work.transpose(_ORIENTATION_TRANSPOSE[orientation])
    return to_rgb_array(work), pdq_pixels(work)


def pdq_pixels(im: Image.Image) -> NDArray[np.uint8] | None:
    """The pixels PDQ hashes when they differ from :func:`to_rgb_array`'s, else None.

    The reference hashers (Meta's C++ ``pdq-photo-hasher``, python-threatexchange, the vPDQ and
    WebAssembly ports) drop the alpha channel and hash the colour samples as stored, transparent
    ones included. Hash lists made with them only match when heroes hashes the same pixels, so
    PDQ skips the white compositing that the models and thumbnails get.
    """
    if im.mode != "RGBA":
        return None
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)[..., :3])


def _reduce_in_strips(im: Image.Image, working_size: int, rows: int = 64) -> Image.Image:
    """``im.reduce`` as ``thumbnail`` would apply it, one strip of rows at a time.

    Pillow reduces and resizes images with alpha through a premultiplied full-size copy; strips
    aligned on the reduction factor give the same pixels with only one strip copied at a time.
    """
    w, h = im.size
    factor = int(max(w, h) / working_size / 2.0)
    if factor < 2:
        return im
    out = Image.new(im.mode, ((w + factor - 1) // factor, (h + factor - 1) // factor))
    step = factor * rows
    for y in range(0, h, step):
        strip = im.crop((0, y, w, min(h, y + step))).reduce(factor)
        out.paste(strip, (0, y // factor))
    return out


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO-BMFF boxes between ``start`` and ``end``: (type, payload start, box end)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _heif_has_transform(data: bytes) -> bool:
    """Whether a HEIF/AVIF file has a rotation or mirror property (``irot``/``imir`` in
    ``meta/iprp/ipco``): the transforms that decoders apply and viewers show."""
    try:
        for kind, start, end in _boxes(data, 0, len(data)):
            if kind != b"meta":
                continue
            for kind2, start2, end2 in _boxes(data, start + 4, end):  # meta is a full box
                if kind2 != b"iprp":
                    continue
                for kind3, start3, end3 in _boxes(data, start2, end2):
                    if kind3 == b"ipco":
                        return any(
                            k in (b"irot", b"imir") for k, _, _ in _boxes(data, start3, end3)
                        )
    except struct.error:
        return False
    return False


def _orientation_applied_by_plugin(im: Image.Image) -> int | None:
    """The stored orientation of formats whose Pillow plugin rotates the pixels itself.

    Pillow's TIFF plugin and pillow-heif apply the orientation while loading and then drop it from
    the EXIF they expose; the record should still show what the file said. A HEIF/AVIF file is
    shown as its own ``irot``/``imir`` transforms say (the HEIF standard makes the EXIF orientation
    informative only, and libheif, phones and browsers follow it): when the file has no transform
    but its EXIF names one, the pixels and size stay as stored and ``exif.orientation_applied`` is
    false, so that no reader rotates them a second time.
    """
    tags = getattr(im, "tag_v2", None)
    value = tags.get(0x0112) if tags is not None else im.info.get("original_orientation")
    return safe_read(lambda: _orientation(value)) if value is not None else None


def _identify(data: bytes) -> ImageFile.ImageFile:
    """Open an image header like ``Image.open`` does, minus its pixel-count check.

    Pillow's check would warn above 89 MP and fail above 179 MP before the caller's own limit is
    consulted; skipping it here makes ``max_pixels`` the one limit that applies.
    """
    Image.init()
    fp = io.BytesIO(data)
    prefix = data[:16]
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            verdict = True if accept is None else accept(prefix)
            if isinstance(verdict, str) or not verdict:
                continue
            fp.seek(0)
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
        except (Image.DecompressionBombError, MemoryError):
            raise
        except Exception as error:
            raise DecodeError(f"unreadable {fmt} header: {error}") from None
    raise DecodeError(f"cannot identify image ({len(data)} bytes, starting {prefix[:8].hex()!r})")


def _frame_count(im: Image.Image) -> int:
    """Frames of an animation or pages of a TIFF; a broken tail still counts what was found."""
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:
        try:
            im.seek(0)
        except Exception:
            pass
        return 1


def _working_mode(im: Image.Image) -> Image.Image:
    """Convert to a mode that resamples well (``thumbnail`` of P and 1 is nearest-neighbour)."""
    mode = im.mode
    if mode == "RGBA":
        return im  # converting to its own mode would copy the full-size image
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return im.convert("RGBA")
    if mode in ("RGB", "L", "I", "F") or mode.startswith("I;16"):
        return im
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")


def to_rgb_array(im: Image.Image) -> NDArray[np.uint8]:
    """RGB uint8 pixels of an image in any mode ``_working_mode`` yields.

    Alpha is composited on :data:`ALPHA_BACKGROUND`; 16-bit samples are scaled (``/257``) rather
    than clipped so a 16-bit copy of an 8-bit picture gives back the same pixels; 32-bit integer
    and float images are stretched to their own range when they do not fit 0..255.
    """
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if mode == "RGBA":
        rgba = np.asarray(im, dtype=np.uint16)
        alpha = rgba[..., 3:]
        mixed = (rgba[..., :3] * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
        return mixed.astype(np.uint8)
    if mode == "L":
        gray = np.asarray(im, dtype=np.uint8)
    elif mode.startswith("I;16"):
        gray = ((np.asarray(im).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif mode in ("I", "F"):
        gray = _stretch(np.asarray(im, dtype=np.float64), unit_range=mode == "F")
    else:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


def _stretch(values: NDArray[np.float64], *, unit_range: bool) -> NDArray[np.uint8]:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if unit_range and low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif not (low >= 0.0 and high <= 255.0):
        span = high - low
        values = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Silence Pillow's pixel-bomb warning (``max_pixels`` is enforced here instead) and its
    "corrupt EXIF" notices (bad fields are dropped instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


@contextmanager
def _truncated_images(*, allowed: bool) -> Iterator[None]:
    """Pillow only offers a process-wide switch, which other libraries flip at import (WeasyPrint
    sets it for good): set it for each decode, and restore it whatever happens."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allowed
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


# --- PDQ -------------------------------------------------------------------------------------


def pdq_hex(rgb: NDArray[np.uint8]) -> tuple[str, int]:
    """PDQ hash and quality of an RGB array, hex-encoded as ThreatExchange and vPDQ write it.

    Bit 0 of ``pdqhash.compute`` is the most significant bit of the first hex digit, which is what
    ``np.packbits`` produces.
    """
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


def pdq_dihedral_hex(rgb: NDArray[np.uint8]) -> tuple[list[str], int]:
    """PDQ hashes of an RGB array and of its 7 rotations and mirrors (:data:`PDQ_DIHEDRAL`
    order), hex-encoded, and their quality.

    The reference hasher derives all eight from one DCT (about 10 ms against 7 ms for one hash
    at 512 px), so a mirrored or rotated copy of a known image can be matched without hashing it
    again; the first is exactly :func:`pdq_hex`'s hash.
    """
    hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb, dtype=np.uint8))
    packed = np.packbits(np.asarray(hashes, dtype=np.uint8).reshape(len(PDQ_DIHEDRAL), 256), axis=1)
    return [row.tobytes().hex() for row in packed], int(quality)


def pdq_bytes(hashes: Iterable[str]) -> NDArray[np.uint8]:
    """Hex PDQ hashes as an (N, 32) byte matrix, the layout :func:`pdq_distances` scans."""
    rows = [bytes.fromhex(_check_pdq(h)) for h in hashes]
    if not rows:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance of two hex PDQ hashes (match when <= 31)."""
    return (int(_check_pdq(a), 16) ^ int(_check_pdq(b), 16)).bit_count()


def pdq_distances(query: str, table: NDArray[np.uint8]) -> NDArray[np.intp]:
    """Hamming distances from one hex hash to every row of a :func:`pdq_bytes` matrix."""
    q = np.frombuffer(bytes.fromhex(_check_pdq(query)), dtype=np.uint8)
    return np.bitwise_count(table ^ q).sum(axis=1, dtype=np.intp)


def _check_pdq(value: str) -> str:
    if len(value) != PDQ_HEX_LEN or not all(c in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"not a PDQ hash (64 hex digits): {value!r}")
    return value


# --- EXIF ------------------------------------------------------------------------------------


def read_exif(im: Image.Image) -> dict[str, Any] | None:
    """The EXIF fields the case record uses, or None when there are none (never raises).

    Fields that EXIF leaves empty are filled from the XMP packet and, in JPEGs, from IPTC
    (see :mod:`heroes.pipeline.xmp`).
    """
    exif = safe_read(im.getexif)
    fields = parse_exif(exif) if exif is not None else None
    xmp = safe_read(lambda: read_xmp(xmp_packet(im))) or {}
    iptc = (safe_read(lambda: read_iptc(im)) or {}) if im.format == "JPEG" else {}
    return fill_missing(fields, xmp, iptc)


def parse_exif(exif: Image.Exif) -> dict[str, Any] | None:
    """JSON-ready EXIF summary; a field that is missing or malformed is left out."""
    base: Mapping[int, Any] = safe_read(lambda: dict(exif)) or {}
    sub: Mapping[int, Any] = safe_read(lambda: dict(exif.get_ifd(_IFD_EXIF))) or {}
    gps_ifd: Mapping[int, Any] = safe_read(lambda: dict(exif.get_ifd(_IFD_GPS))) or {}

    def ex(tag: int) -> Any:
        """A tag of the EXIF IFD; some writers put these in IFD0, where exiftool finds them too."""
        value = sub.get(tag)
        return base.get(tag) if value is None else value

    out: dict[str, Any] = {}
    fields: list[tuple[str, Callable[[], Any]]] = [
        ("make", lambda: _text(base.get(0x010F))),
        ("model", lambda: _text(base.get(0x0110))),
        ("body_serial", lambda: _text(ex(0xA431)) or _text(base.get(0xC62F))),
        ("lens_make", lambda: _text(ex(0xA433))),
        ("lens_model", lambda: _text(ex(0xA434))),
        ("owner", lambda: _text(ex(0xA430))),
        ("software", lambda: _text(base.get(0x0131))),
        ("datetime_original", lambda: _datetime(ex(0x9003), ex(0x9291))),
        ("datetime_digitized", lambda: _datetime(ex(0x9004), ex(0x9292))),
        ("datetime", lambda: _datetime(base.get(0x0132), ex(0x9290))),
        ("offset_time", lambda: _offset(ex(0x9010))),
        ("offset_time_original", lambda: _offset(ex(0x9011))),
        ("offset_time_digitized", lambda: _offset(ex(0x9012))),
        ("orientation", lambda: _orientation(base.get(0x0112))),
        ("width", lambda: _dimension(ex(0xA002))),
        ("height", lambda: _dimension(ex(0xA003))),
        ("gps", lambda: _gps(gps_ifd)),
    ]
    for key, read in fields:
        value = safe_read(read)
        if value is not None:
            out[key] = value
    return out or None


def _text(value: Any) -> str | None:
    """EXIF ASCII text as exiftool reads it: up to the first NUL (``ION230\\x00F`` is ``ION230``),
    other control characters as spaces, at most ``_MAX_TEXT`` characters."""
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.split("\x00", 1)[0]
    value = "".join(c if c.isprintable() else " " for c in value[: 4 * _MAX_TEXT]).strip()
    return value[:_MAX_TEXT] or None


_EXIF_DATETIME = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+\-]\d{2}:\d{2}")


def _datetime(value: Any, subsec: Any = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ sub-seconds) as ISO 8601; placeholders such as zeros drop."""
    text = _text(value)
    match = _EXIF_DATETIME.match(text) if text else None
    if match is None:
        return None
    stamp = datetime(*(int(part) for part in match.groups()))
    digits = (_text(subsec) or "").strip()
    if digits.isdigit():
        stamp = stamp.replace(microsecond=int(digits[:6].ljust(6, "0")))
    return stamp.isoformat()


def _offset(value: Any) -> str | None:
    text = _text(value)
    return text if text and _OFFSET.fullmatch(text) else None


def _orientation(value: Any) -> int | None:
    number = int(value)
    return number if 1 <= number <= 8 else None


def _dimension(value: Any) -> int | None:
    number = int(value)
    return number if number > 0 else None


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _ref(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip("\x00 ").upper()[:1]


def _degrees(value: Any, ref: Any, negative: str, limit: float) -> float | None:
    parts = (
        [_finite(part) for part in value] if isinstance(value, tuple | list) else [_finite(value)]
    )
    if not 1 <= len(parts) <= 3:
        return None
    d, m, s = (parts + [0.0, 0.0])[:3]
    degrees = abs(d) + m / 60.0 + s / 3600.0
    if d < 0 or _ref(ref) == negative:
        degrees = -degrees
    return round(degrees, 7) if abs(degrees) <= limit else None


def _gps(ifd: Mapping[int, Any]) -> dict[str, Any] | None:
    """Decimal degrees (south and west negative), metres (below sea level negative), UTC time."""
    gps: dict[str, Any] = {}
    readers: list[tuple[str, Callable[[], Any]]] = [
        ("lat", lambda: _degrees(ifd[2], ifd.get(1), "S", 90.0)),
        ("lon", lambda: _degrees(ifd[4], ifd.get(3), "W", 180.0)),
        ("alt", lambda: _altitude(ifd[6], ifd.get(5))),
        ("timestamp", lambda: _gps_time(ifd.get(29), ifd.get(7))),
    ]
    for key, read in readers:
        value = safe_read(read)
        if value is not None:
            gps[key] = value
    if ("lat" in gps) != ("lon" in gps):
        gps.pop("lat", None)
        gps.pop("lon", None)
    return gps or None


def _altitude(value: Any, ref: Any) -> float:
    metres = _finite(value)
    below = ref in (1, b"\x01", "\x01") or (isinstance(ref, bytes | str) and _ref(ref) == "1")
    return round(-abs(metres) if below else metres, 3)


def _gps_time(date: Any, time: Any) -> str | None:
    clock = None
    if time is not None:
        h, m, s = (_finite(part) for part in time)
        if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 61):
            return None
        whole = int(s)
        clock = f"{int(h):02d}:{int(m):02d}:{whole:02d}"
        if s - whole >= 0.0005:
            clock += f".{int((s - whole) * 1000):03d}"
    text = _text(date)
    day = None
    if text:
        parsed = datetime.strptime(text.replace("-", ":"), "%Y:%m:%d")
        day = parsed.date().isoformat()
    if day and clock:
        return f"{day}T{clock}Z"
    return day or clock
