"""Carving JPEG, PNG and MP4 files out of unallocated space, by their own structure.

A carved file has no name and no metadata: only a start signature and, to know where it ends,
the structure that follows (JPEG segments up to the end-of-image marker after the scan data, PNG
chunks up to ``IEND``, MP4 top-level boxes with ``ftyp``, ``moov`` and ``mdat``). A candidate whose
structure breaks or runs past the space being carved is dropped, so carving never invents bytes.
Space is read in bounded windows: nothing of a volume is held whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Carved", "carve", "free_ranges"]

_WINDOW = 4 * 1024 * 1024
_SIGNATURES = re.compile(rb"\xff\xd8\xff[\xc0-\xfe]|\x89PNG\r\n\x1a\n|ftyp", re.DOTALL)
_MP4_TOP = {
    b"ftyp",
    b"moov",
    b"mdat",
    b"free",
    b"skip",
    b"wide",
    b"uuid",
    b"meta",
    b"pdin",
    b"moof",
    b"mfra",
    b"styp",
    b"sidx",
    b"udta",
    b"pnot",
}

Reader = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class Carved:
    offset: int
    kind: str
    data: bytes


def free_ranges(used: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of ``[0, total)`` that no (start, length) in ``used`` holds."""
    out: list[tuple[int, int]] = []
    pos = 0
    for start, length in sorted(used):
        if start > pos:
            out.append((pos, min(start, total)))
        pos = max(pos, start + length)
        if pos >= total:
            break
    if pos < total:
        out.append((pos, total))
    return [(a, b) for a, b in out if b > a]


def _be(buf: bytes, at: int, n: int) -> int:
    return int.from_bytes(buf[at : at + n], "big")


#: a parser's answer when the structure goes on past the bytes it was given
MORE = -1


def jpeg_end(buf: bytes) -> int | None:
    """Length of the JPEG at the start of ``buf`` (segments, scans, up to EOI); None when the
    structure is broken, :data:`MORE` when it runs past ``buf``."""
    i, n = 2, len(buf)
    while True:
        if i + 4 > n:
            return MORE
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return i + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        length = _be(buf, i + 2, 2)
        if length < 2:
            return None
        i += 2 + length
        if marker != 0xDA:
            continue
        # entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a
        # restart marker
        while True:
            j = buf.find(b"\xff", i)
            if j < 0 or j + 1 >= n:
                return MORE
            nxt = buf[j + 1]
            if nxt == 0xFF:
                i = j + 1
                continue
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                i = j + 2
                continue
            i = j
            break


def png_end(buf: bytes) -> int | None:
    i, n = 8, len(buf)
    while True:
        if i + 12 > n:
            return MORE
        length = _be(buf, i, 4)
        kind = buf[i + 4 : i + 8]
        if not kind.isalpha() or length > 1 << 31:
            return None
        i += 12 + length
        if kind == b"IEND":
            return i if i <= n else MORE


def mp4_end(buf: bytes) -> int | None:
    i, n, seen = 0, len(buf), set()
    while i + 16 <= n:
        size, kind = _be(buf, i, 4), buf[i + 4 : i + 8]
        if kind not in _MP4_TOP or (i == 0 and kind != b"ftyp"):
            break
        if size == 1:
            size = _be(buf, i + 8, 8)
        if size < 8:
            return None
        if i + size > n:
            return MORE
        seen.add(kind)
        i += size
    else:
        if i < n and seen:
            return MORE
    return i if {b"ftyp", b"moov", b"mdat"} <= seen else None


_PARSERS = {"jpeg": jpeg_end, "png": png_end, "mp4": mp4_end}


def carve(read: Reader, ranges: list[tuple[int, int]], cap: int) -> Iterator[Carved]:
    """Files carved from ``ranges`` (start, end) of a volume read with ``read(offset, length)``.

    Only complete structures of at most ``cap`` bytes are carved; the scan goes on after each
    carved file, in windows, so memory stays bounded by ``cap`` and the window."""
    for start, end in ranges:
        pos = start
        while pos < end:
            window = read(pos, min(_WINDOW, end - pos))
            if not window:
                break
            nxt = pos + max(1, len(window) - 16)
            for m in _SIGNATURES.finditer(window):
                at = pos + m.start()
                kind = {b"\xff": "jpeg", b"\x89": "png"}.get(m.group()[:1], "mp4")
                if kind == "mp4":
                    at -= 4
                    if at < start:
                        continue
                found = _carve_one(read, at, kind, min(cap, end - at))
                if found is not None:
                    yield found
                    nxt = at + len(found.data)
                    break
            pos = nxt


def _carve_one(read: Reader, at: int, kind: str, room: int) -> Carved | None:
    step = 1 << 16
    while True:
        buf = read(at, min(step, room))
        end = _PARSERS[kind](buf)
        if end is None:
            return None
        if end != MORE:
            return Carved(at, kind, buf[:end])
        if len(buf) >= room:
            return None  # larger than the space (or the cap): not a complete file here
        step *= 4
