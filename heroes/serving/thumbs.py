"""Thumbnails made from the evidence on demand: small, blurred unless revealed, never stored clear.

The picture of an item is read again from the evidence (read-only, through the walker's opener;
archive members through the archive openers). For a video it is the frame that set its priority:
the nudity frame, else the first frame with a face, else the first kept keyframe. Only blurred
thumbnails are cached, under ``CASE/thumbs/``.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter, ImageOps

from heroes.config import Limits
from heroes.pipeline.decode import DecodeError, load_rgb
from heroes.pipeline.discover import Unreadable, open_item
from heroes.pipeline.video import frame_at

THUMBS_DIR = "thumbs"


class NoPictureError(LookupError):
    """The item has no picture to show (not an image or video, or it cannot be read any more)."""


def priority_frame(
    video: dict[str, Any] | None, nudity: dict[str, Any] | None, faces: list[dict[str, Any]] | None
) -> float:
    """Seconds into a video of the frame that set its priority."""
    if nudity and nudity.get("frame_time") is not None:
        return float(nudity["frame_time"])
    for face in faces or []:
        if face.get("frame_time") is not None:
            return float(face["frame_time"])
    for kf in (video or {}).get("keyframes") or []:
        if kf.get("time") is not None:
            return float(kf["time"])
    return 0.0


def _check_roots(evidence: str, evidence_roots: Sequence[Path]) -> None:
    if evidence_roots:
        real = Path(os.path.realpath(evidence))
        allowed = [Path(os.path.realpath(r)) for r in evidence_roots]
        if not any(real == r or r in real.parents for r in allowed):
            raise NoPictureError("the evidence is outside the folders this server may read")


def evidence_bytes(
    evidence: str, path: str, limits: Limits, evidence_roots: Sequence[Path] = ()
) -> bytes:
    """The item's bytes, read again from the evidence (at most the decode limit)."""
    _check_roots(evidence, evidence_roots)
    try:
        with open_item(Path(evidence), path, limits) as f:
            data = f.read(limits.max_member_bytes + 1)
    except (OSError, Unreadable) as exc:
        raise NoPictureError(f"cannot read the file again: {exc}") from exc
    if len(data) > limits.max_member_bytes:
        raise NoPictureError("the file is larger than the decode limit")
    return data


def picture(
    evidence: str,
    path: str,
    media_type: str,
    *,
    time: float,
    size: int,
    limits: Limits,
    evidence_roots: Sequence[Path] = (),
) -> NDArray[np.uint8]:
    """The item's picture (RGB, longest side <= ``size``), read again from the evidence; with
    ``evidence_roots``, only from evidence below one of them (a case store names its evidence
    root, and the service does not take that on trust)."""
    if media_type not in ("image", "video"):
        raise NoPictureError(f"a {media_type} item has no picture")
    _check_roots(evidence, evidence_roots)
    try:
        if media_type == "video":
            with open_item(Path(evidence), path, limits) as f:
                return frame_at(f, time, working_size=size)
        data = evidence_bytes(evidence, path, limits)
        rgb, _info = load_rgb(data, working_size=size, max_pixels=limits.max_pixels)
        return rgb
    except (OSError, Unreadable, DecodeError) as exc:
        raise NoPictureError(f"cannot read the picture again: {exc}") from exc


def render(
    rgb: NDArray[np.uint8], *, blur: bool, greyscale: bool, radius: float, quality: int = 80
) -> bytes:
    """WebP bytes of the picture, Gaussian-blurred (radius scaled to the picture) unless not."""
    im = Image.fromarray(rgb)
    if blur:
        r = max(4.0, radius * max(im.size) / 256)
        im = im.filter(ImageFilter.GaussianBlur(r))
    if greyscale:
        im = ImageOps.grayscale(im)
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=quality)
    return buf.getvalue()


def cache_path(case_dir: Path, item_id: int, greyscale: bool, size: int) -> Path:
    return case_dir / THUMBS_DIR / f"{item_id}-{size}-blur{'-grey' if greyscale else ''}.webp"


def save_blurred(path: Path, data: bytes) -> None:
    """Atomically store a blurred thumbnail (a clear one is never passed here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
