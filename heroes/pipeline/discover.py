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
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import py7zr
import py7zr.exceptions
import py7zr.helpers
import py7zr.io

from heroes.config import Limits, MiB, get_settings
from heroes.pipeline.identify import SNIFF_BYTES, sniff

__all__ = [
    "OPENERS",
    "Archive",
    "Budget",
    "Entry",
    "LimitExceeded",
    "Member",
    "Opener",
    "Unreadable",
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


class Unreadable(Exception):
    """Raised by an opener when the rest of an archive cannot be read; message shown as is."""


class LimitExceeded(Unreadable):
    """An archive went past one of the :class:`~heroes.config.Limits`."""


class Budget:
    """Expanded bytes of one archive, checked against the size and ratio limits as they grow.

    Checking while bytes are produced (not from header sizes, which lie) is what stops a bomb
    before it is fully expanded.
    """

    __slots__ = ("label", "limits", "packed", "total")

    def __init__(self, limits: Limits, packed: int, label: str) -> None:
        self.limits = limits
        self.packed = packed
        self.label = label
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


Opener = Callable[[Archive], Iterator[Member]]


def _bomb_text(label: str, ratio: float, limit: float) -> str:
    return f"{label} bomb: expansion ratio {ratio:.0f} > {limit:g}"


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


def _clean(name: str) -> str:
    """A printable, valid Unicode form of a stored name: undecodable bytes become ``\\xNN``."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


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
                return None, _bomb_text("zip", ratio, limits.max_ratio)
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
            if info.is_dir():
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


def _tar_members(stream: _Metered, limits: Limits) -> Iterator[Member]:
    """Members of a tar read as a stream (``r|``): a compressed tar is never seeked or buffered."""
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
            data, error = _read_member(f, limits) if f is not None else (b"", None)
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
    return _tar_members(_Metered(arc.stream, arc.budget), arc.limits)


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
                yield from _tar_members(stream, arc.limits)
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


def register_opener(kind: str, opener: Opener) -> None:
    """Make the walker open containers of ``kind`` with ``opener`` (replacing any existing one)."""
    OPENERS[kind] = opener


# --- the walk ------------------------------------------------------------------------------------


class _Walker:
    def __init__(self, limits: Limits, skip_archive: Callable[[Entry], bool] | None) -> None:
        self.limits = limits
        self.skip_archive = skip_archive

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
        label = "zip" if kind == "zip" else "decompression"
        arc = Archive(
            stream,
            entry.path.rpartition("/")[2],
            packed,
            self.limits,
            Budget(self.limits, packed, label),
        )
        members = opener(arc)
        count = 0
        try:
            while True:
                try:
                    member = next(members)
                except StopIteration:
                    break
                except Exception as exc:
                    entry.error = _describe(kind, exc)
                    break
                if count >= self.limits.max_members:
                    entry.error = f"too many members: > {self.limits.max_members}"
                    break
                count += 1
                yield from self.member(entry, member)
        finally:
            if isinstance(members, Generator):
                members.close()
            entry.members = count

    def member(self, parent: Entry, member: Member) -> Iterator[Entry]:
        entry = Entry(
            path=f"{parent.path}!/{_clean(member.name)}",
            size=member.size,
            mtime=member.mtime,
            depth=parent.depth + 1,
            data=member.data,
            container=parent.path,
            error=member.error,
            skipped=member.skipped,
        )
        data = member.data
        if data is not None and member.error is None:
            entry.archive_kind = sniff(data[:SNIFF_BYTES]).archive_kind
            if entry.archive_kind is not None:
                yield from self.descend(entry, io.BytesIO(data), len(data))
        yield entry

    def file(self, rel: str, full: Path, st: os.stat_result) -> Iterator[Entry]:
        entry = Entry(path=rel, size=st.st_size, mtime=st.st_mtime, depth=0, fs_path=full)
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
            try:
                head = _read_upto(f, SNIFF_BYTES)
                f.seek(0)
            except OSError as exc:
                entry.error = _os_reason(exc)
                yield entry
                return
            entry.archive_kind = sniff(head).archive_kind
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
            rel = prefixes[-1] + _clean(de.name)
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


def walk(
    root: Path,
    limits: Limits | None = None,
    *,
    skip_archive: Callable[[Entry], bool] | None = None,
) -> Iterator[Entry]:
    """Yield one :class:`Entry` per file and archive member under ``root``; nothing is written.

    An archive's members come before the archive's own entry, so that entry can say how many
    members it had and why its walk stopped (corrupt, encrypted, past a limit); members already
    yielded stay valid. ``skip_archive`` is asked before an archive is opened (on resume the caller
    already has its members); when it answers True the archive is yielded without descending.
    ``archive_kind`` is set on every entry detected as an archive, opened or not.

    ``root`` itself may be a symlink (the examiner chose it) and is followed; nothing below it is.
    Raises :class:`FileNotFoundError` only when ``root`` does not exist; any other problem becomes
    an entry's ``error`` or ``skipped``.
    """
    name = _clean(Path(os.path.abspath(root)).name) or "."
    real = Path(os.path.realpath(root))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return iter([Entry(path=name, size=None, mtime=None, depth=0, error=_os_reason(exc))])
    walker = _Walker(limits if limits is not None else get_settings().limits, skip_archive)
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


def open_item(root: Path, path: str, limits: Limits | None = None) -> BinaryIO:
    """Open one item of an earlier walk again, read-only, as a binary stream.

    ``root`` is the evidence root of the walk and ``path`` the item's evidence path
    (``a.zip!/b.tar.gz!/c.jpg``). Files on disk are opened the walker's way (no symlink, no fifo,
    no access-time update) and only below ``root``; archive members are found again through the
    same openers and limits and returned in memory. Raises :class:`FileNotFoundError` when the item
    is no longer there (or names a place outside ``root``), :class:`Unreadable` when a container on
    the way cannot be read.
    """
    limits = limits if limits is not None else get_settings().limits
    real = Path(os.path.realpath(root))
    outer, *members = path.split("!/")
    if real.is_dir():
        parts = outer.split("/")
        if not outer or any(p in ("", ".", "..") for p in parts):
            raise FileNotFoundError(f"not a path below the evidence root: {outer!r}")
        full = real.joinpath(*parts)
        if os.path.realpath(full) != str(full):
            raise FileNotFoundError(f"not a plain file below the evidence root: {outer!r}")
    elif outer == _clean(real.name):
        full = real
    else:
        raise FileNotFoundError(f"{outer!r} is not the evidence file {real.name!r}")
    try:
        stream: BinaryIO = _open_regular(full)
    except _NotRegular as exc:
        raise FileNotFoundError(f"{outer}: {exc}") from None
    label = outer.rpartition("/")[2]
    for name in members:
        try:
            data = _find_member(stream, label, name, limits)
        finally:
            stream.close()
        stream, label = io.BytesIO(data), name.rpartition("/")[2]
    return stream


def _find_member(stream: BinaryIO, label: str, name: str, limits: Limits) -> bytes:
    head = _read_upto(stream, SNIFF_BYTES)
    stream.seek(0, os.SEEK_END)
    packed = stream.tell()
    stream.seek(0)
    kind = sniff(head).archive_kind
    opener = OPENERS.get(kind) if kind else None
    if opener is None:
        raise Unreadable(f"{label} is not an archive the walker opens")
    arc = Archive(
        stream,
        label,
        packed,
        limits,
        Budget(limits, packed, "zip" if kind == "zip" else "decompression"),
    )
    found = opener(arc)
    try:
        for member in found:
            if _clean(member.name) != name:
                continue
            if member.data is None:
                raise Unreadable(member.error or member.skipped or f"{name}: no content")
            return member.data
    except Unreadable:
        raise
    except Exception as exc:
        raise Unreadable(_describe(kind or "archive", exc)) from exc
    finally:
        if isinstance(found, Generator):
            found.close()
    raise FileNotFoundError(f"{name!r} is not in {label!r}")
