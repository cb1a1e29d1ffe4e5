"""Enumerate every file of a seizure, on disk and inside archives, without writing anything.

A seizure is hostile input: zip bombs, symlink loops, fifos that block on open, names that are not
valid UTF-8, members called ``../../etc/passwd``. The walker therefore reads archives as streams
held in memory, never extracts to disk, never follows links, and turns every problem into an
:class:`Entry` carrying ``error`` or ``skipped`` so that the report can account for every file.
Only a missing root raises.
"""

from __future__ import annotations

import bz2
import calendar
import gzip
import io
import lzma
import os
import queue
import re
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import py7zr
import py7zr.exceptions
import py7zr.helpers
import py7zr.io

from heroes.config import DiskImageSettings, Limits, MiB, get_settings
from heroes.names import UNSAFE, escape
from heroes.pipeline.identify import SNIFF_BYTES, StreamSource, sniff

__all__ = [
    "OPENERS",
    "Archive",
    "Budget",
    "Entry",
    "LimitExceeded",
    "Member",
    "Opener",
    "Pool",
    "OCCURRENCE",
    "Unreadable",
    "content_source",
    "path_part",
    "open_item",
    "register_opener",
    "walk",
]

#: below this many expanded bytes a high expansion ratio is not suspicious (a small text compresses
#: far better than 100:1 and must not be flagged as a bomb)
RATIO_FLOOR = 1 * MiB

_CHUNK = 1 * MiB
_SYMLINK_TARGET_MAX = 4096


@dataclass(slots=True)
class Entry:
    """One file of the seizure, on disk or inside an archive, or the reason it could not be read.

    ``path`` is the evidence path shown to the examiner: relative to the root, ``/``-separated,
    archive members after ``!/`` (``a.zip!/b.tar.gz!/c.jpg``). Depth-0 files are not loaded: read
    them from ``fs_path``. Members come with their bytes in ``data``.
    """

    path: str
    size: int | None
    mtime: float | None
    depth: int
    fs_path: Path | None = None
    data: bytes | None = None
    container: str | None = None
    error: str | None = None
    skipped: str | None = None
    archive_kind: str | None = None
    members: int | None = None
    #: a file inside a forensic image too large to travel as bytes: reopened where it is read
    ref: StreamSource | None = None
    #: record fields a container adds (``deleted``, ``fs``, ``image``; see docs/records.md)
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class Member:
    """One item an opener found in an archive; the walker turns it into an :class:`Entry`.

    ``name`` is the name as stored in the archive, not resolved or sanitised.
    """

    name: str
    size: int | None = None
    mtime: float | None = None
    data: bytes | None = None
    error: str | None = None
    skipped: str | None = None
    ref: StreamSource | None = None
    extra: dict[str, Any] | None = None


class Unreadable(Exception):
    """Raised by an opener when the rest of an archive cannot be read; message shown as is."""


class LimitExceeded(Unreadable):
    """An archive went past one of the :class:`~heroes.config.Limits`."""


class Pool:
    """Expansion shared by several archives: everything nested in one file on disk, or every
    archive of one evidence root. Per-archive limits alone multiply through nesting (a 1.7 KB
    ``.tgz`` of archives of archives stays under each archive's limits and still expands to
    gigabytes); a pool that is spent stops every archive charging it, with ``what`` in the error.
    """

    __slots__ = ("max_bytes", "max_members", "members", "packed", "ratio", "total", "what")

    def __init__(
        self, what: str, max_bytes: int, max_members: int, packed: int | None, ratio: float
    ) -> None:
        self.what = what
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.packed = packed
        self.ratio = ratio
        self.total = 0
        self.members = 0

    def spent(self) -> str | None:
        """Why this pool allows no more expansion, or None."""
        if self.total > self.max_bytes:
            return f"{self.what} expansion budget spent: > {self.max_bytes} bytes expanded"
        if self.members > self.max_members:
            return f"{self.what} member budget spent: > {self.max_members} members"
        if self.packed is not None and self.total > RATIO_FLOOR:
            ratio = self.total / max(self.packed, 1)
            if ratio > self.ratio:
                shown = _ratio(ratio, self.ratio)
                return (
                    f"{self.what} expansion budget spent: expansion ratio {shown} "
                    f"> {self.ratio:g} over all nested archives"
                )
        return None

    def add(self, n: int) -> None:
        self.total += n
        why = self.spent()
        if why is not None:
            raise LimitExceeded(why)

    def add_member(self) -> None:
        self.members += 1
        why = self.spent()
        if why is not None:
            raise LimitExceeded(why)


class Budget:
    """Expanded bytes of one archive, checked against the size and ratio limits as they grow,
    and charged to the :class:`Pool` s it belongs to (the file on disk, the evidence root).

    Checking while bytes are produced (not from header sizes, which lie) is what stops a bomb
    before it is fully expanded.
    """

    __slots__ = ("label", "limits", "packed", "pools", "total")

    def __init__(
        self, limits: Limits, packed: int, label: str, pools: tuple[Pool, ...] = ()
    ) -> None:
        self.limits = limits
        self.packed = packed
        self.label = label
        self.pools = pools
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_archive_bytes:
            raise LimitExceeded(
                f"archive too large: expands past {self.limits.max_archive_bytes} bytes"
            )
        ratio = self.total / max(self.packed, 1)
        if self.total > RATIO_FLOOR and ratio > self.limits.max_ratio:
            raise LimitExceeded(_bomb_text(self.label, ratio, self.limits.max_ratio))
        for pool in self.pools:
            pool.add(n)


@dataclass(slots=True)
class Archive:
    """What an opener gets: the archive as a seekable binary stream and the limits it must keep.

    ``name`` is the last component of the archive's evidence path (a plain ``.gz`` names its one
    member after it). Openers that read members themselves charge their bytes to ``budget``.
    """

    stream: BinaryIO
    name: str
    packed_size: int
    limits: Limits
    budget: Budget
    #: the container's path on disk (depth 0 only): what disk-image openers open
    fs_path: Path | None = None
    disk: DiskImageSettings | None = None
    #: record fields the opener sets on the container's own entry (``Entry.extra``)
    info: dict[str, Any] = field(default_factory=dict)


Opener = Callable[[Archive], Iterator[Member]]


def _ratio(ratio: float, limit: float) -> str:
    """A ratio with enough digits that it never reads as equal to the limit it passed."""
    for digits in range(7):
        text = f"{ratio:.{digits}f}"
        if float(text) > limit:
            return text
    return f"{ratio!r}"


def _bomb_text(label: str, ratio: float, limit: float) -> str:
    return f"{label} bomb: expansion ratio {_ratio(ratio, limit)} > {limit:g}"


def _too_large(cap: int) -> str:
    return f"member too large: > {cap} bytes"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "vanished during the walk"
    return f"cannot read: {exc.strerror or exc}"


def _describe(kind: str, exc: Exception) -> str:
    if isinstance(exc, Unreadable):
        return str(exc)
    if isinstance(exc, py7zr.exceptions.PasswordRequired):
        return "encrypted 7z archive"
    if isinstance(exc, OSError) and exc.errno is not None:
        return _os_reason(exc)
    if isinstance(exc, MemoryError):
        return f"{kind} needs more memory than is available"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, NotImplementedError | py7zr.exceptions.UnsupportedCompressionMethodError):
        return f"unsupported {kind}: {text}"
    return f"corrupt {kind}: {text}"


#: code points shown as ``\\xNN`` (their UTF-8 bytes) in paths and reasons: the unsafe ones (see
#: :data:`heroes.names.UNSAFE`), a literal backslash (so that ``\\x`` only ever introduces an
#: escape), and the bytes of undecodable names (``surrogateescape`` turns byte 0xNN into U+DCNN)
_ESCAPES: dict[int, str] = {c: escape(c) for c in (*UNSAFE, 0x5C)}
_ESCAPES.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
#: a ``!`` that ends a name or one of its ``/``-separated parts would read as the archive
#: separator ``!/`` (a folder ``a.zip!`` beside ``a.zip``); it is shown as ``\\x21``
_BANG = re.compile(r"!(?=/|$)")
#: the n-th (n >= 2) member of an archive whose name repeats an earlier one gets this suffix; a
#: literal backslash is always escaped, so the suffix cannot come from a name
OCCURRENCE = "\\#"


def _clean(name: str) -> str:
    """A printable, valid Unicode form of a stored name: undecodable bytes, backslashes and
    control characters become ``\\xNN``, so different names never get the same text."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "surrogateescape").translate(_ESCAPES)


def path_part(name: str) -> str:
    """A name as it appears in an evidence path: :func:`_clean`, and a ``!`` that ends a part is
    escaped, so ``!/`` in a path only ever separates an archive from its members."""
    return _BANG.sub("\\\\x21", _clean(name))


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_upto(stream: _Reader, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_member(
    stream: _Reader,
    limits: Limits,
    *,
    budget: Budget | None = None,
    packed: int | None = None,
    label: str = "zip",
) -> tuple[bytes | None, str | None]:
    """Read one member with a cap of ``max_member_bytes + 1``, never trusting a header size.

    Returns the bytes, or ``None`` and the reason when the member is too large or (given its
    ``packed`` size) expands like a bomb. Archive-wide limits raise :class:`LimitExceeded`.
    """
    cap = limits.max_member_bytes
    buf = bytearray()
    while True:
        chunk = stream.read(min(_CHUNK, cap + 1 - len(buf)))
        if not chunk:
            return bytes(buf), None
        buf += chunk
        if budget is not None:
            budget.add(len(chunk))
        if packed is not None and len(buf) > RATIO_FLOOR:
            ratio = len(buf) / max(packed, 1)
            if ratio > limits.max_ratio:
                return None, _bomb_text(label, ratio, limits.max_ratio)
        if len(buf) > cap:
            return None, _too_large(cap)


class _Metered:
    """A decompressed stream charging every byte to a :class:`Budget`, with a pushed-back head."""

    def __init__(self, raw: _Reader, budget: Budget) -> None:
        self._raw = raw
        self._budget = budget
        self._pending = b""
        self.total = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        if self._pending:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        data = self._raw.read(size)
        self.total += len(data)
        self._budget.add(len(data))
        return data

    def peek_head(self, n: int) -> bytes:
        head = _read_upto(self._raw, n)
        self.total += len(head)
        self._budget.add(len(head))
        self._pending = head
        return head


# --- zip ----------------------------------------------------------------------------------------

_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")


def _dos_time(date_time: tuple[int, int, int, int, int, int]) -> float | None:
    # DOS times carry no zone; they are read as UTC so results do not depend on the examiner's TZ.
    try:
        return float(calendar.timegm((*date_time, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    extra = info.extra
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            return float(struct.unpack_from("<i", body, 1)[0])
        pos += 4 + size
    return _dos_time(info.date_time)


def _zip_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _open_zip(arc: Archive) -> Iterator[Member]:
    limits = arc.limits
    try:
        zf = zipfile.ZipFile(arc.stream)
    except Exception as exc:
        yield from _salvage_zip(arc)
        raise Unreadable(_describe("zip", exc)) from exc
    with zf:
        for info in zf.infolist():
            if info.filename.endswith("/"):  # is_dir() raises on an empty name
                continue
            name, size, mtime = info.orig_filename, info.file_size, _zip_mtime(info)
            if info.flag_bits & 0x1:
                yield Member(name, size, mtime, error="encrypted archive member")
                continue
            ratio = size / max(info.compress_size, 1)
            if size > RATIO_FLOOR and ratio > limits.max_ratio:
                yield Member(name, size, mtime, error=_bomb_text("zip", ratio, limits.max_ratio))
                continue
            if size > limits.max_member_bytes:
                yield Member(name, size, mtime, error=_too_large(limits.max_member_bytes))
                continue
            try:
                with zf.open(info) as f:
                    if _zip_symlink(info):
                        target = f.read(_SYMLINK_TARGET_MAX)
                        arc.budget.add(len(target))
                        text = _clean(target.decode("utf-8", "surrogateescape"))
                        yield Member(name, size, mtime, skipped=f"symlink -> {text}")
                        continue
                    data, error = _read_member(
                        f, limits, budget=arc.budget, packed=info.compress_size
                    )
            except LimitExceeded as exc:
                yield Member(name, size, mtime, error=str(exc))
                raise
            except Exception as exc:
                yield Member(name, size, mtime, error=_describe("zip", exc))
                continue
            yield Member(name, size if data is None else len(data), mtime, data=data, error=error)


def _salvage_zip(arc: Archive) -> Iterator[Member]:
    """Read members from local headers when the central directory is missing (a truncated zip).

    Only what the local headers describe is recovered: stored and deflated members with sizes
    in the header. The caller reports the archive as corrupt whatever is found here.
    """
    src, limits = arc.stream, arc.limits
    src.seek(0)
    while True:
        header = _read_upto(src, _ZIP_LOCAL.size)
        if len(header) < _ZIP_LOCAL.size or header[:4] != b"PK\x03\x04":
            return
        _, _, flags, method, dtime, ddate, crc, csize, usize, nlen, elen = _ZIP_LOCAL.unpack(header)
        raw_name = _read_upto(src, nlen)
        _read_upto(src, elen)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "surrogateescape")
        mtime = _dos_time(
            (
                (ddate >> 9) + 1980,
                (ddate >> 5) & 0xF,
                ddate & 0x1F,
                dtime >> 11,
                (dtime >> 5) & 0x3F,
                (dtime & 0x1F) * 2,
            )
        )
        if name.endswith("/"):
            src.seek(csize, io.SEEK_CUR)
            continue
        if flags & 0x8:
            return
        if flags & 0x1:
            yield Member(name, usize, mtime, error="encrypted archive member")
            src.seek(csize, io.SEEK_CUR)
            continue
        if method not in (0, 8):
            yield Member(name, usize, mtime, error=f"unsupported zip: compression method {method}")
            src.seek(csize, io.SEEK_CUR)
            continue
        if csize > limits.max_member_bytes:
            yield Member(name, usize, mtime, error=_too_large(limits.max_member_bytes))
            src.seek(csize, io.SEEK_CUR)
            continue
        packed = _read_upto(src, csize)
        if len(packed) < csize:
            yield Member(name, usize, mtime, error="corrupt zip: member truncated")
            return
        if method == 0:
            stream: _Reader = io.BytesIO(packed)
        else:
            stream = _InflateReader(packed)
        try:
            data, error = _read_member(stream, limits, budget=arc.budget, packed=csize)
        except LimitExceeded as exc:
            yield Member(name, usize, mtime, error=str(exc))
            raise
        except zlib.error as exc:
            yield Member(name, usize, mtime, error=f"corrupt zip: {exc}")
            continue
        if data is not None and zlib.crc32(data) != crc:
            yield Member(name, usize, mtime, error=f"corrupt zip: Bad CRC-32 for file {name!r}")
            continue
        yield Member(name, usize if data is None else len(data), mtime, data=data, error=error)


class _InflateReader:
    """Raw deflate data read out in bounded pieces, so a bomb is never expanded in one call."""

    def __init__(self, packed: bytes) -> None:
        self._d = zlib.decompressobj(-15)
        self._tail = packed

    def read(self, size: int) -> bytes:
        if self._d.eof:
            return b""
        out = self._d.decompress(self._tail, size)
        self._tail = self._d.unconsumed_tail
        if not out and not self._tail:
            out = self._d.flush()
        return out


# --- tar and single-file compression -------------------------------------------------------------

_TAR_SKIPPED = (
    (tarfile.TarInfo.isfifo, "fifo"),
    (tarfile.TarInfo.ischr, "character device"),
    (tarfile.TarInfo.isblk, "block device"),
)


def _tar_members(stream: _Metered, limits: Limits, budget: Budget) -> Iterator[Member]:
    """Members of a tar read as a stream (``r|``): a compressed tar is never seeked or buffered.

    A sparse member's holes are zeros that are not in the stream: its bytes are charged to the
    budget and checked against the ratio limit, against the data it really stores.
    """
    tf = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
    while True:
        ti = tf.next()
        if ti is None:
            break
        tf.members.clear()
        name, size, mtime = ti.name, ti.size, float(ti.mtime)
        if ti.isdir():
            continue
        if ti.issym():
            yield Member(name, None, mtime, skipped=f"symlink -> {_clean(ti.linkname)}")
            continue
        if ti.islnk():
            yield Member(name, None, mtime, skipped=f"hardlink -> {_clean(ti.linkname)}")
            continue
        if not ti.isreg():
            kind = next((text for test, text in _TAR_SKIPPED if test(ti)), "special file")
            yield Member(name, None, mtime, skipped=kind)
            continue
        if size > limits.max_member_bytes:
            yield Member(name, size, mtime, error=_too_large(limits.max_member_bytes))
            continue
        try:
            f = tf.extractfile(ti)
            if f is None:
                data, error = b"", None
            elif ti.issparse():
                stored = sum(n for _, n in ti.sparse or ())
                data, error = _read_member(
                    f, limits, budget=budget, packed=stored, label="sparse tar member"
                )
            else:
                data, error = _read_member(f, limits)
        except LimitExceeded as exc:
            yield Member(name, size, mtime, error=str(exc))
            raise
        except Exception as exc:
            yield Member(name, size, mtime, error=_describe("tar", exc))
            continue
        yield Member(name, size if data is None else len(data), mtime, data=data, error=error)
    # a tar cut at a header boundary ends without an end-of-archive block and tarfile says nothing
    if stream.total < getattr(tf, "offset", 0) + tarfile.BLOCKSIZE:
        raise Unreadable("corrupt tar: truncated (no end-of-archive marker)")


def _open_tar(arc: Archive) -> Iterator[Member]:
    return _tar_members(_Metered(arc.stream, arc.budget), arc.limits, arc.budget)


_DECOMPRESSORS: dict[str, Callable[[BinaryIO], io.BufferedIOBase]] = {
    "gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    "bz2": lambda f: bz2.BZ2File(f, mode="rb"),
    "xz": lambda f: lzma.LZMAFile(f, mode="rb"),
}

_SUFFIXES = {
    ".gz": "",
    ".gzip": "",
    ".z": "",
    ".bz2": "",
    ".bz": "",
    ".xz": "",
    ".lzma": "",
    ".tgz": ".tar",
    ".taz": ".tar",
    ".tbz": ".tar",
    ".tbz2": ".tar",
    ".txz": ".tar",
}


def _decompressed_name(name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    replacement = _SUFFIXES.get(f".{suffix.lower()}") if dot else None
    if replacement is None or not stem:
        return "data"
    return stem + replacement


def _compressed_opener(kind: str) -> Opener:
    """Opener for a single compressed stream: a tar inside is walked as tar, else one member."""

    def open_compressed(arc: Archive) -> Iterator[Member]:
        raw = _DECOMPRESSORS[kind](arc.stream)
        with raw:
            stream = _Metered(raw, arc.budget)
            name = _decompressed_name(arc.name)
            try:
                head = stream.peek_head(SNIFF_BYTES)
            except Exception as exc:
                yield Member(name, error=_describe(kind, exc))
                raise
            if sniff(head).archive_kind == "tar":
                yield from _tar_members(stream, arc.limits, arc.budget)
                return
            stamp = getattr(raw, "mtime", None)
            mtime = float(stamp) if stamp else None
            try:
                data, error = _read_member(stream, arc.limits)
            except Exception as exc:
                yield Member(name, None, mtime, error=_describe(kind, exc))
                raise
            yield Member(name, None if data is None else len(data), mtime, data=data, error=error)

    return open_compressed


# --- 7z ------------------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


_DONE = object()


class _SevenZipSink(py7zr.io.Py7zIO):
    """One 7z member from py7zr's decompressor, keeping ``max_member_bytes + 1`` at most."""

    def __init__(self, run: _SevenZipRun, info: py7zr.py7zr.ArchiveFile) -> None:
        self._run = run
        self.info = info
        self.buf = bytearray()
        self.written = 0
        self.done = False

    def write(self, s: bytes | bytearray) -> int:
        run = self._run
        if run.cancel.is_set():
            raise _Cancelled
        run.budget.add(len(s))
        self.written += len(s)
        room = run.limits.max_member_bytes + 1 - len(self.buf)
        if room > 0:
            self.buf += s[:room]
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.written

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self._run.current = None
        self._run.emit(self._run.member(self))


class _SevenZipRun(py7zr.io.WriterFactory):
    """py7zr drives the decompression in a thread; finished members come back through a queue.

    The thread exists so that members are handed on one at a time instead of all of a large
    archive sitting in memory; the queue holds one, and cancelling stops the decompressor at its
    next write.
    """

    def __init__(
        self, archive: py7zr.SevenZipFile, files: dict[int, py7zr.py7zr.ArchiveFile], arc: Archive
    ) -> None:
        self.archive = archive
        self.files = files
        self.limits = arc.limits
        self.budget = arc.budget
        self.queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self.cancel = threading.Event()
        self.current: _SevenZipSink | None = None

    def create(self, filename: str) -> py7zr.io.Py7zIO:
        self.current = _SevenZipSink(self, self.files[int(filename)])
        return self.current

    def member(self, sink: _SevenZipSink, error: str | None = None) -> Member:
        info = sink.info
        name, mtime = info.filename, _7z_mtime(info)
        if error is not None:
            return Member(name, info.uncompressed, mtime, error=error)
        if len(sink.buf) > self.limits.max_member_bytes:
            return Member(
                name, info.uncompressed, mtime, error=_too_large(self.limits.max_member_bytes)
            )
        data = bytes(sink.buf)
        if info.is_symlink:
            target = _clean(data[:_SYMLINK_TARGET_MAX].decode("utf-8", "surrogateescape"))
            return Member(name, None, mtime, skipped=f"symlink -> {target}")
        return Member(name, len(data), mtime, data=data)

    def emit(self, item: object) -> None:
        while not self.cancel.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def work(self) -> None:
        try:
            worker = self.archive.worker
            for file_id in self.files:
                worker.register_filelike(file_id, py7zr.io.MemIO(str(file_id), self))
            worker.extract(self.archive.fp, None, parallel=False)
        except BaseException as exc:  # handed to the consumer thread, which decides
            sink = self.current
            if sink is not None and not sink.done and not isinstance(exc, _Cancelled):
                sink.done = True
                text = _describe("7z", exc) if isinstance(exc, Exception) else repr(exc)
                self.emit(self.member(sink, text))
            self.emit(exc)
            return
        self.emit(_DONE)

    def members(self) -> Iterator[Member]:
        thread = threading.Thread(target=self.work, name="heroes-7z", daemon=True)
        thread.start()
        try:
            while True:
                item = self.queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Member)
                yield item
        finally:
            self.cancel.set()
            thread.join()


def _7z_mtime(info: py7zr.py7zr.ArchiveFile) -> float | None:
    stamp = info.lastwritetime
    if stamp is None:
        return None
    try:
        return float(py7zr.helpers.ArchiveTimestamp(stamp).totimestamp())
    except (ValueError, OverflowError, OSError):
        return None


def _open_7z(arc: Archive) -> Iterator[Member]:
    """7z members in memory.

    py7zr's public ``extract`` refuses ``..`` names and rewrites absolute ones, but members are
    recorded as stored, so its worker is given in-memory writers keyed by member id instead.
    """
    with py7zr.SevenZipFile(arc.stream, mode="r") as archive:
        files = {f.id: f for f in archive.files if not f.is_directory}
        if archive.needs_password():
            for f in files.values():
                yield Member(
                    f.filename, f.uncompressed, _7z_mtime(f), error="encrypted archive member"
                )
            raise Unreadable("encrypted 7z archive")
        yield from _SevenZipRun(archive, files, arc).members()


# --- registry ------------------------------------------------------------------------------------

#: archive kind (as :func:`~heroes.pipeline.identify.sniff` names it) -> function yielding members.
#: Kept as a registry so that container formats other than archives (disk images such as E01, raw
#: or VHD read through dfVFS) can be plugged in with :func:`register_opener` once identify knows
#: their kind, without touching the walker.
OPENERS: dict[str, Opener] = {
    "zip": _open_zip,
    "tar": _open_tar,
    "gz": _compressed_opener("gz"),
    "bz2": _compressed_opener("bz2"),
    "xz": _compressed_opener("xz"),
    "7z": _open_7z,
}


#: kind -> members allowed per container, for containers (disk images) that hold more files than
#: ``Limits.max_members`` allows an archive
MEMBER_CAPS: dict[str, Callable[[DiskImageSettings | None], int]] = {}


def register_opener(
    kind: str,
    opener: Opener,
    *,
    member_cap: Callable[[DiskImageSettings | None], int] | None = None,
) -> None:
    """Make the walker open containers of ``kind`` with ``opener`` (replacing any existing one);
    ``member_cap`` replaces ``Limits.max_members`` for them."""
    OPENERS[kind] = opener
    if member_cap is not None:
        MEMBER_CAPS[kind] = member_cap


# --- the walk ------------------------------------------------------------------------------------


_EOCD = struct.Struct("<4sHHHHIIH")
#: an end-of-central-directory record sits in the last 22 bytes plus a comment of at most 64 KiB
_ZIP_TAIL = _EOCD.size + 0xFFFF


def _appended_zip(tail: bytes) -> bool:
    """Whether ``tail`` (the last bytes of a file whose head is not an archive) ends with a zip:
    a JPEG with a zip appended opens as both. The end record must close the file exactly and point
    back at a central directory, so random bytes that happen to contain ``PK\\5\\6`` do not turn
    an image into a corrupt archive."""
    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            *_, entries, cd_size, _cd_offset, comment = _EOCD.unpack_from(tail, pos)
            start = pos - cd_size
            if (
                pos + _EOCD.size + comment == len(tail)
                and entries > 0
                and start >= 0
                and tail[start : start + 4] == b"PK\x01\x02"
            ):
                return True
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    return False


def _kind(head: bytes, tail: Callable[[], bytes]) -> str | None:
    """The archive kind of a file from its head, or ``zip`` for a zip appended to anything."""
    kind = sniff(head).archive_kind
    if kind is None and len(head) >= 4 and _appended_zip(tail()):
        return "zip"
    return kind


class _Walker:
    def __init__(
        self,
        limits: Limits,
        skip_archive: Callable[[Entry], bool] | None,
        disk: DiskImageSettings | None = None,
    ) -> None:
        self.limits = limits
        self.skip_archive = skip_archive
        self.disk = disk
        self.evidence = Pool(
            "evidence root", limits.max_evidence_bytes, limits.max_evidence_members, None, 0.0
        )
        #: the pool of the file on disk being walked (set by :meth:`file`)
        self.nested: Pool | None = None

    def pools(self) -> tuple[Pool, ...]:
        return (self.evidence,) if self.nested is None else (self.nested, self.evidence)

    def descend(self, entry: Entry, stream: BinaryIO, packed: int) -> Iterator[Entry]:
        """Yield the members of archive ``entry``, recursively; set its ``members``, ``error``."""
        kind = entry.archive_kind
        assert kind is not None
        if entry.depth >= self.limits.max_depth:
            entry.error = f"archive depth limit {self.limits.max_depth} reached; not opened"
            return
        if self.skip_archive is not None and self.skip_archive(entry):
            return
        opener = OPENERS.get(kind)
        if opener is None:
            entry.error = f"no opener for {kind} archives"
            return
        cap_of = MEMBER_CAPS.get(kind)
        max_members = cap_of(self.disk) if cap_of is not None else self.limits.max_members
        # A forensic image is evidence laid out, not an expansion: its files count against the
        # evidence root's member budget only. Archives inside it share the image's nested pool.
        pools = self.pools() if cap_of is None else (self.evidence,)
        for pool in pools:
            why = pool.spent()
            if why is not None:
                entry.error = f"not opened: {why}"
                return
        label = "zip" if kind == "zip" else "decompression"
        arc = Archive(
            stream,
            entry.path.rpartition("/")[2],
            packed,
            self.limits,
            Budget(self.limits, packed, label, pools),
            fs_path=entry.fs_path if entry.depth == 0 else None,
            disk=self.disk,
        )
        members = opener(arc)
        count = 0
        # paths must be unique: a repeated name (``tar -r`` appends a newer copy under the same
        # name) gets an occurrence suffix; bounded like the members by ``max_members``
        names: dict[str, int] = {}
        try:
            while True:
                try:
                    member = next(members)
                except StopIteration:
                    break
                except Exception as exc:
                    entry.error = _describe(kind, exc)
                    break
                if count >= max_members:
                    entry.error = f"too many members: > {max_members}"
                    break
                try:
                    for pool in pools:
                        pool.add_member()
                except LimitExceeded as exc:
                    entry.error = str(exc)
                    break
                count += 1
                path = f"{entry.path}!/{path_part(member.name)}"
                seen = names.get(path, 0) + 1
                names[path] = seen
                if seen > 1:
                    path = f"{path}{OCCURRENCE}{seen}"
                yield from self.member(entry, member, path)
        finally:
            if isinstance(members, Generator):
                members.close()
            entry.members = count
            if arc.info:
                entry.extra = {**(entry.extra or {}), **arc.info}

    def member(self, parent: Entry, member: Member, path: str) -> Iterator[Entry]:
        # ``size`` is bytes read: a member that was not read has none, whatever its header claims
        size, error = member.size, member.error
        if member.data is None:
            size = None
            if error is not None and member.size is not None:
                error = f"{error} (header claims {member.size} bytes)"
        entry = Entry(
            path=path,
            size=size,
            mtime=member.mtime,
            depth=parent.depth + 1,
            data=member.data,
            container=parent.path,
            error=error,
            skipped=member.skipped,
            ref=member.ref,
            extra=member.extra,
        )
        data = member.data
        if data is not None and member.error is None:
            entry.archive_kind = _kind(data[:SNIFF_BYTES], lambda: data[-_ZIP_TAIL:])
            if entry.archive_kind is not None:
                yield from self.descend(entry, io.BytesIO(data), len(data))
        elif member.ref is not None and member.error is None:
            yield from self.referenced(entry, member.ref)
        yield entry

    def referenced(self, entry: Entry, ref: StreamSource) -> Iterator[Entry]:
        """Open an archive that is too large to travel as bytes through its reference."""
        try:
            stream = ref.open_stream()
        except OSError as exc:
            entry.error = _os_reason(exc)
            return
        with stream:
            try:
                head = _read_upto(stream, SNIFF_BYTES)
                stream.seek(0)
            except OSError as exc:
                entry.error = _os_reason(exc)
                return
            entry.archive_kind = sniff(head).archive_kind
            if entry.archive_kind is not None:
                yield from self.descend(entry, stream, entry.size or 0)

    def file(self, rel: str, full: Path, st: os.stat_result) -> Iterator[Entry]:
        entry = Entry(path=rel, size=st.st_size, mtime=st.st_mtime, depth=0, fs_path=full)
        limits = self.limits
        self.nested = Pool(
            "nested-archive",
            limits.max_nested_bytes,
            limits.max_nested_members,
            st.st_size,
            limits.max_ratio,
        )
        try:
            f = _open_regular(full)
        except _NotRegular as exc:
            entry.fs_path, entry.size, entry.skipped = None, None, str(exc)
            yield entry
            return
        except OSError as exc:
            entry.error = _os_reason(exc)
            yield entry
            return
        with f:

            def tail() -> bytes:
                f.seek(max(0, st.st_size - _ZIP_TAIL))
                return _read_upto(f, _ZIP_TAIL)

            try:
                head = _read_upto(f, SNIFF_BYTES)
                entry.archive_kind = _kind(head, tail)
                f.seek(0)
            except OSError as exc:
                entry.error = _os_reason(exc)
                yield entry
                return
            if entry.archive_kind is not None:
                yield from self.descend(entry, f, st.st_size)
        yield entry

    def tree(self, root: Path) -> Iterator[Entry]:
        """Depth-first over sorted names with an explicit stack, so depth cannot hit recursion."""
        seen: dict[tuple[int, int], str] = {}
        stack: list[Iterator[os.DirEntry[str]]] = []
        prefixes: list[str] = []
        listing = self.listing(root, ".", seen)
        if isinstance(listing, Entry):
            yield listing
            return
        stack.append(listing)
        prefixes.append("")
        while stack:
            de = next(stack[-1], None)
            if de is None:
                stack.pop()
                prefixes.pop()
                continue
            rel = prefixes[-1] + path_part(de.name)
            full = Path(de.path)
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                yield Entry(path=rel, size=None, mtime=None, depth=0, error=_os_reason(exc))
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                sub = self.listing(full, rel, seen, st)
                if isinstance(sub, Entry):
                    yield sub
                else:
                    stack.append(sub)
                    prefixes.append(rel + "/")
            elif stat.S_ISREG(mode):
                yield from self.file(rel, full, st)
            else:
                yield Entry(
                    path=rel,
                    size=None,
                    mtime=st.st_mtime,
                    depth=0,
                    skipped=_special_reason(full, mode),
                )

    def listing(
        self,
        full: Path,
        rel: str,
        seen: dict[tuple[int, int], str],
        st: os.stat_result | None = None,
    ) -> Iterator[os.DirEntry[str]] | Entry:
        mtime = st.st_mtime if st is not None else None
        try:
            if st is None:
                st = os.stat(full)
                mtime = st.st_mtime
            key = (st.st_dev, st.st_ino)
            if key in seen:
                return Entry(
                    path=rel,
                    size=None,
                    mtime=mtime,
                    depth=0,
                    skipped=f"directory-link: same directory as {seen[key]}",
                )
            seen[key] = rel
            with os.scandir(full) as it:
                entries = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            return Entry(path=rel, size=None, mtime=mtime, depth=0, error=_os_reason(exc))
        return iter(entries)


class _NotRegular(Exception):
    pass


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)


def _open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only if it is (still) a regular file.

    ``O_NONBLOCK`` keeps a fifo swapped in since the ``lstat`` from blocking the walk,
    ``O_NOFOLLOW`` refuses a symlink, and ``O_NOATIME`` (where permitted) leaves access times of
    the evidence as they were.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegular(_special_reason(path, mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _special_reason(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        try:
            return f"symlink -> {_clean(os.readlink(path))}"
        except OSError:
            return "symlink -> ?"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def content_source(entry: Entry) -> str | StreamSource | None:
    """Where a reader gets an entry's content when ``entry.data`` is not loaded: its path on
    disk, or the reference to a file inside a forensic image; picklable either way."""
    if entry.fs_path is not None:
        return str(entry.fs_path)
    return entry.ref


def walk(
    root: Path,
    limits: Limits | None = None,
    *,
    skip_archive: Callable[[Entry], bool] | None = None,
    disk: DiskImageSettings | None = None,
) -> Iterator[Entry]:
    """Yield one :class:`Entry` per file and archive member under ``root``; nothing is written.

    An archive's members come before the archive's own entry, so that entry can say how many
    members it had and why its walk stopped (corrupt, encrypted, past a limit); members already
    yielded stay valid. ``skip_archive`` is asked before an archive is opened (on resume the caller
    already has its members); when it answers True the archive is yielded without descending.
    ``disk`` says how forensic images are opened (keys, shadow copies; see
    :mod:`heroes.pipeline.diskimage`).
    ``archive_kind`` is set on every entry detected as an archive, opened or not.

    ``root`` itself may be a symlink (the examiner chose it) and is followed; nothing below it is.
    Raises :class:`FileNotFoundError` only when ``root`` does not exist; any other problem becomes
    an entry's ``error`` or ``skipped``.
    """
    name = path_part(Path(os.path.abspath(root)).name) or "."
    real = Path(os.path.realpath(root))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return iter([Entry(path=name, size=None, mtime=None, depth=0, error=_os_reason(exc))])
    walker = _Walker(
        limits if limits is not None else get_settings().limits, skip_archive, disk=disk
    )
    if stat.S_ISDIR(st.st_mode):
        return walker.tree(real)
    if stat.S_ISREG(st.st_mode):
        return walker.file(name, real, st)
    return iter(
        [
            Entry(
                path=name,
                size=None,
                mtime=st.st_mtime,
                depth=0,
                skipped=_special_reason(real, st.st_mode),
            )
        ]
    )


def open_item(
    root: Path,
    path: str,
    limits: Limits | None = None,
    disk: DiskImageSettings | None = None,
) -> BinaryIO:
    """Open one item of an earlier walk again, read-only, as a binary stream.

    ``root`` is the evidence root of the walk and ``path`` the item's evidence path
    (``a.zip!/b.tar.gz!/c.jpg``, ``disk.E01!/p1/DCIM/a.jpg``). The file on disk is found by the
    names the walk gave it (escaped names and all), below ``root`` only, without following a
    symlink, and opened the walker's way (no fifo, no access-time update). A member is found by
    walking its file again with the same openers and limits, opening only the containers on its
    path, so repeated names, appended zips and forensic images resolve exactly as in the walk.
    Raises :class:`FileNotFoundError` when the item is no longer there (or names a place outside
    ``root``), :class:`Unreadable` when it or a container on the way cannot be read.
    """
    limits = limits if limits is not None else get_settings().limits
    real = Path(os.path.realpath(root))
    outer = path.split("!/", 1)[0]
    if real.is_dir():
        full = _below(real, outer)
    elif outer == (path_part(real.name) or "."):
        full = real
    else:
        raise FileNotFoundError(f"{outer!r} is not the evidence file {real.name!r}")
    if outer == path:
        try:
            return _open_regular(full)
        except _NotRegular as exc:
            raise FileNotFoundError(f"{outer}: {exc}") from None
    walker = _Walker(limits, lambda e: not path.startswith(e.path + "!/"), disk)
    entries = walker.file(outer, full, os.stat(full, follow_symlinks=False))
    try:
        for entry in entries:
            if entry.path == path:
                if entry.data is not None:
                    return io.BytesIO(entry.data)
                if entry.ref is not None:
                    return entry.ref.open_stream()
                raise Unreadable(entry.error or entry.skipped or f"{path}: no content")
            if path.startswith(entry.path + "!/"):
                # a container on the way, yielded after its members: the item was not among them
                if entry.archive_kind is None:
                    raise Unreadable(f"{entry.path} is not an archive the walker opens")
                if entry.error:
                    raise Unreadable(entry.error)
    finally:
        entries.close()  # type: ignore[attr-defined]
    raise FileNotFoundError(f"{path!r} is not in {outer!r}")


def _below(root: Path, rel: str) -> Path:
    """The file on disk that the walk named ``rel`` under ``root``: each part matched against the
    escaped names of its folder, no symlink followed on the way."""
    here = root
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise FileNotFoundError(f"not a path below the evidence root: {rel!r}")
        with os.scandir(here) as it:
            found = next((de for de in it if path_part(de.name) == part), None)
        if found is None:
            raise FileNotFoundError(f"{rel!r} is not below the evidence root")
        if found.is_symlink():
            raise FileNotFoundError(f"not a plain file below the evidence root: {rel!r}")
        here = Path(found.path)
    return here
