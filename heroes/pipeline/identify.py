"""Identify files by content: magic-byte sniffing and MD5/SHA-1/SHA-256 in one streaming read.

The name of a file says nothing about it in a seizure (an image renamed ``.txt`` is an image), so
the type comes from the first bytes only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import filetype

#: bytes of a file's head needed to sniff every type we know (tar's magic sits at offset 257, an
#: ext superblock's at 1080)
SNIFF_BYTES = 4096

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
    # forensic images, opened by heroes.pipeline.diskimage
    "application/x-ewf": "ewf",
    "application/x-raw-disk-image": "raw",
    "application/x-vhd": "vhd",
    "application/x-vhdx": "vhdx",
    "application/x-vmdk": "vmdk",
    "application/x-qemu-disk": "qcow",
}

#: archive kinds that are forensic images (partitions and file systems, not members)
DISK_IMAGE_KINDS = ("ewf", "raw", "vhd", "vhdx", "vmdk", "qcow")
_DISK_MIMES = {kind: mime for mime, kind in ARCHIVE_MIMES.items() if kind in DISK_IMAGE_KINDS}

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
    image_kind = disk_image_kind(head)
    if image_kind is not None:
        return Sniffed(MEDIA_ARCHIVE, _DISK_MIMES[image_kind])
    kind = filetype.guess(head)
    if kind is None:
        if head[:4] == b"GIF8":
            return Sniffed(MEDIA_IMAGE, "image/gif")
        if raw_disk_image(head):
            return Sniffed(MEDIA_ARCHIVE, _DISK_MIMES["raw"])
        return Sniffed(MEDIA_OTHER, _text_or_binary(head))
    mime = kind.mime
    if mime in ARCHIVE_MIMES:
        return Sniffed(MEDIA_ARCHIVE, mime)
    if mime.startswith("image/") and mime not in {"image/vnd.adobe.photoshop", "image/x-icon"}:
        return Sniffed(MEDIA_IMAGE, mime)
    if mime.startswith("video/") or mime in _VIDEO_EXTRA:
        return Sniffed(MEDIA_VIDEO, mime)
    return Sniffed(MEDIA_OTHER, mime)


def disk_image_kind(head: bytes) -> str | None:
    """The kind of a forensic image container named by its magic bytes (``raw`` excluded)."""
    if head[:8] in (b"EVF\x09\x0d\x0a\xff\x00", b"EVF2\x0d\x0a\x81\x00"):
        return "ewf"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix":
        return "vhd"
    if head[:4] in (b"KDMV", b"COWD") or head[:21] == b"# Disk DescriptorFile":
        return "vmdk"
    if head[:4] == b"QFI\xfb":
        return "qcow"
    return None


def raw_disk_image(head: bytes) -> bool:
    """Whether a head with no other known type is a raw (dd) image of a disk or a volume.

    A raw image has no magic of its own, so it is recognised by structures at fixed offsets: a
    partition table (GPT header, or an MBR whose four entries are all well formed), the header of
    an encrypted volume (BitLocker, LUKS), or the boot sector or superblock of a file system
    (FAT, exFAT, NTFS, ext2/3/4, HFS+, APFS), each checked
    on several fields, so that an ordinary file is not taken for an image by one lucky byte pair.
    """
    if head[:6] == b"LUKS\xba\xbe":  # an encrypted volume (LUKS1/2 header)
        return True
    if len(head) < 512:
        return False
    boot_sig = head[510:512] == b"\x55\xaa"
    if boot_sig and head[3:11] == b"-FVE-FS-":  # a BitLocker volume
        return True
    if boot_sig and head[512:520] == b"EFI PART":
        return True
    if boot_sig and head[3:11] in (b"NTFS    ", b"EXFAT   "):
        return True
    if (
        boot_sig
        and head[0] in (0xEB, 0xE9)
        and (head[54:59] in (b"FAT12", b"FAT16") or head[82:87] == b"FAT32")
        and int.from_bytes(head[11:13], "little") in (512, 1024, 2048, 4096)
    ):
        return True
    if boot_sig and _mbr_table(head[446:510]):
        return True
    if len(head) >= 1024 + 1024 and head[1080:1082] == b"\x53\xef":
        log_block = int.from_bytes(head[1048:1052], "little")
        rev = int.from_bytes(head[1100:1104], "little")
        inodes = int.from_bytes(head[1024:1028], "little")
        if log_block <= 6 and rev in (0, 1) and inodes > 0:
            return True
    if len(head) >= 1028 and head[1024:1026] in (b"H+", b"HX"):
        return int.from_bytes(head[1026:1028], "big") in (4, 5)
    return head[32:36] == b"NXSB"


def _mbr_table(table: bytes) -> bool:
    used = 0
    for k in range(4):
        e = table[16 * k : 16 * k + 16]
        status, ptype = e[0], e[4]
        start = int.from_bytes(e[8:12], "little")
        count = int.from_bytes(e[12:16], "little")
        if status not in (0x00, 0x80):
            return False
        if ptype == 0:
            if any(e):
                return False
            continue
        if start == 0 or count == 0:
            return False
        used += 1
    return used > 0


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


@runtime_checkable
class StreamSource(Protocol):
    """Something a file's content is read from that is not a path on disk (a file inside a
    forensic image); picklable, so that it travels to worker processes and reopens there."""

    size: int

    def open_stream(self) -> BinaryIO: ...


def open_source(source: Path | str | StreamSource) -> BinaryIO:
    """Open evidence content read-only: a file on disk, or a :class:`StreamSource`."""
    if isinstance(source, StreamSource):
        return source.open_stream()
    return open_evidence(Path(source))


def hash_source(
    source: Path | str | StreamSource, *, chunk: int = 1 << 20, keep_up_to: int = 0
) -> tuple[Digests, bytes, bytes | None]:
    with open_source(source) as f:
        return hash_stream(f, chunk=chunk, keep_up_to=keep_up_to)


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


#: files on disk up to this size are read once and kept in memory for decoding
KEEP_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Identified:
    """What hashing and sniffing one file found; ``data`` holds its bytes when they were kept."""

    digests: Digests | None
    media_type: str
    mime: str | None
    data: bytes | None = None
    error: str | None = None

    def without_data(self) -> Identified:
        return Identified(self.digests, self.media_type, self.mime, None, self.error)


def identify_source(
    data: bytes | None, fs_path: Path | str | StreamSource | None, is_archive: bool, chunk: int
) -> Identified:
    """Hash and sniff one file (its bytes, its path read once with ``O_NOATIME``, or a file
    inside a forensic image read through its reference)."""
    try:
        if data is not None:
            digests = hash_bytes(data)
            head = data[:512]
        else:
            assert fs_path is not None
            digests, head, data = hash_source(fs_path, chunk=chunk, keep_up_to=KEEP_BYTES)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Identified(None, MEDIA_OTHER, None, None, f"unreadable: {reason}")
    sniffed = sniff(head)
    # a picture or video with an archive appended (a polyglot) is analysed as what it shows; its
    # members were walked all the same
    polyglot = sniffed.media_type in (MEDIA_IMAGE, MEDIA_VIDEO)
    media = MEDIA_ARCHIVE if is_archive and not polyglot else sniffed.media_type
    return Identified(digests, media, sniffed.mime, data)
