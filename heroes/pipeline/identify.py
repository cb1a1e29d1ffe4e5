"""Identify files by content: magic-byte sniffing and MD5/SHA-1/SHA-256 in one streaming read.

The name of a file says nothing about it in a seizure (an image renamed ``.txt`` is an image), so
the type comes from the first bytes only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import filetype

#: bytes of a file's head needed to sniff every type we know (tar's magic sits at offset 257)
SNIFF_BYTES = 512

MEDIA_IMAGE = "image"
MEDIA_VIDEO = "video"
MEDIA_ARCHIVE = "archive"
MEDIA_OTHER = "other"

# Archive formats the walker opens, by MIME type.
ARCHIVE_MIMES = {
    "application/zip": "zip",
    "application/x-tar": "tar",
    "application/gzip": "gz",
    "application/x-bzip2": "bz2",
    "application/x-xz": "xz",
    "application/x-7z-compressed": "7z",
}

_VIDEO_EXTRA = {"video/mp2t", "video/3gpp", "video/x-ms-asf"}


@dataclass(frozen=True, slots=True)
class Sniffed:
    media_type: str
    mime: str

    @property
    def archive_kind(self) -> str | None:
        return ARCHIVE_MIMES.get(self.mime)


def sniff(head: bytes) -> Sniffed:
    """Classify a file from its first bytes (at least :data:`SNIFF_BYTES` when available)."""
    if not head:
        return Sniffed(MEDIA_OTHER, "application/x-empty")
    if len(head) > 262 and head[257:262] == b"ustar":
        return Sniffed(MEDIA_ARCHIVE, "application/x-tar")
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM
        return Sniffed(MEDIA_VIDEO, "video/webm" if b"webm" in head[:64] else "video/x-matroska")
    if head[:4] == b"\x47\x40\x00\x10" or (
        len(head) > 188 and head[0] == 0x47 and head[188] == 0x47
    ):
        return Sniffed(MEDIA_VIDEO, "video/mp2t")
    kind = filetype.guess(head)
    if kind is None:
        if head[:4] == b"GIF8":
            return Sniffed(MEDIA_IMAGE, "image/gif")
        return Sniffed(MEDIA_OTHER, _text_or_binary(head))
    mime = kind.mime
    if mime in ARCHIVE_MIMES:
        return Sniffed(MEDIA_ARCHIVE, mime)
    if mime.startswith("image/") and mime not in {"image/vnd.adobe.photoshop", "image/x-icon"}:
        return Sniffed(MEDIA_IMAGE, mime)
    if mime.startswith("video/") or mime in _VIDEO_EXTRA:
        return Sniffed(MEDIA_VIDEO, mime)
    return Sniffed(MEDIA_OTHER, mime)


def _text_or_binary(head: bytes) -> str:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the end of the head is still text
        if exc.start < len(head) - 4 or b"\x00" in head:
            return "application/octet-stream"
    if b"\x00" in head:
        return "application/octet-stream"
    return "text/plain"


@dataclass(frozen=True, slots=True)
class Digests:
    md5: str
    sha1: str
    sha256: str
    size: int


class MultiHasher:
    """MD5, SHA-1 and SHA-256 fed from the same buffers.

    hashlib releases the GIL on large updates, so several files hash in parallel on threads."""

    __slots__ = ("_md5", "_sha1", "_sha256", "size")

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._md5.update(chunk)
        self._sha1.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    def digests(self) -> Digests:
        return Digests(
            self._md5.hexdigest(), self._sha1.hexdigest(), self._sha256.hexdigest(), self.size
        )


def hash_bytes(data: bytes | memoryview) -> Digests:
    h = MultiHasher()
    h.update(data)
    return h.digests()


def hash_stream(
    stream: BinaryIO, *, chunk: int = 1 << 20, keep_up_to: int = 0
) -> tuple[Digests, bytes, bytes | None]:
    """Hash a stream in one read.

    Returns the digests, the head (for sniffing) and, when the whole stream is at most
    ``keep_up_to`` bytes, its content, so that a small file is read from disk exactly once.
    """
    h = MultiHasher()
    kept: list[bytes] | None = [] if keep_up_to > 0 else None
    head = b""
    buf = bytearray(chunk)
    view = memoryview(buf)
    while True:
        n = stream.readinto(view) if hasattr(stream, "readinto") else _readinto(stream, view)
        if not n:
            break
        part = view[:n]
        h.update(part)
        if len(head) < SNIFF_BYTES:
            head += bytes(part[: SNIFF_BYTES - len(head)])
        if kept is not None:
            if h.size <= keep_up_to:
                kept.append(bytes(part))
            else:
                kept = None
    data = b"".join(kept) if kept is not None else None
    return h.digests(), head, data


def _readinto(stream: BinaryIO, view: memoryview) -> int:
    data = stream.read(len(view))
    view[: len(data)] = data
    return len(data)


def open_evidence(path: Path) -> BinaryIO:
    """Open a seized file read-only, without updating its access time where the OS allows it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    try:
        fd = os.open(path, flags | noatime)
    except PermissionError:
        if not noatime:
            raise
        fd = os.open(path, flags)  # O_NOATIME needs ownership of the file
    return os.fdopen(fd, "rb", buffering=0)


def hash_file(
    path: Path, *, chunk: int = 1 << 20, keep_up_to: int = 0
) -> tuple[Digests, bytes, bytes | None]:
    with open_evidence(path) as f:
        return hash_stream(f, chunk=chunk, keep_up_to=keep_up_to)
