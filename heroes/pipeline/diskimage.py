"""Forensic images (E01/EWF, raw/dd, VHD/VHDX, VMDK, QCOW2) opened read-only through dfVFS.

An image is walked like an archive: its partitions and volumes are found by dfVFS, each file
system is listed, and every file becomes a :class:`~heroes.pipeline.discover.Member` named
``<volume>/<path in the file system>`` (``p1/Users/x/a.jpg``; no volume prefix when the image
holds a bare file system). File systems The Sleuth Kit reads (FAT, exFAT, NTFS, ext2/3/4) are
listed through pytsk3, which also lists the names a file system still keeps for deleted files;
the others (APFS, HFS+, XFS) through dfVFS's own back ends.

Nothing is copied: small files travel as bytes, larger ones as an :class:`ImageRef` (the image's
path, the dfVFS path specification of the file system and the file's inode) that whoever reads
the file (a hashing thread, a decode process, a Ray worker) reopens on its own. Encrypted
volumes (BitLocker, LUKS, FileVault) become one ``skipped`` member naming the encryption unless
one of the configured keys opens them; Volume Shadow Copies are listed on the image's record and
walked on request. An EWF image is read once more at the end to check the hashes it stores.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from heroes.config import DiskImageSettings
from heroes.pipeline.carve import carve, free_ranges
from heroes.pipeline.discover import Archive, Member, Unreadable, register_opener
from heroes.pipeline.identify import DISK_IMAGE_KINDS

__all__ = [
    "ImageRef",
    "dfvfs_available",
    "open_disk_image",
]

_CHUNK = 1 << 20
#: file systems per thread kept open for readers of :class:`ImageRef` (one EWF handle each)
_CACHE_SIZE = 4

_STORAGE_TYPES = {
    "ewf": "EWF",
    "raw": "RAW",
    "vhd": "VHDI",
    "vhdx": "VHDI",
    "vmdk": "VMDK",
    "qcow": "QCOW",
}
#: the first segment of a split raw image (``disk.001``, ``disk.raw.000``, ``xaa``)
_SPLIT_RAW = re.compile(r"(\.(000|001|aa)|^xaa)$", re.IGNORECASE)
_ENCRYPTION_NAMES = {
    "BDE": "BitLocker",
    "LUKSDE": "LUKS",
    "CS": "FileVault (Core Storage)",
    "APFS_CONTAINER": "APFS",
}
#: file systems listed through The Sleuth Kit (which keeps deleted names); others through dfVFS
_TSK_FILE_SYSTEMS = {"FAT", "NTFS", "EXT"}


def dfvfs_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("dfvfs", "pytsk3"))


def _require_dfvfs() -> None:
    if not dfvfs_available():
        raise Unreadable("forensic image support is not installed: pip install 'heroes[forensic]'")


# --------------------------------------------------------------------------------------------------
# references to files inside an image, reopened by whoever reads them


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A file inside a forensic image, small enough to pickle, reopened where it is read.

    ``spec`` is the JSON dfVFS path specification of the file system (``inode`` set: read with
    The Sleuth Kit) or of the file itself (``inode`` None). ``credentials`` holds the keys that
    opened an encrypted volume on the way, as (path spec JSON, identifier, key).
    """

    image: str
    spec: str
    inode: int | None
    size: int
    credentials: tuple[tuple[str, str, str], ...] = ()
    #: (attribute type, attribute id) of a named stream (an NTFS alternate data stream)
    attr: tuple[int, int] | None = None

    def open_stream(self) -> BinaryIO:
        """A seekable read-only stream of the file's content."""
        _require_dfvfs()
        if self.inode is not None:
            fs_info = _cached_fs(self.spec, self.credentials)
            try:
                tsk_file = fs_info.open_meta(inode=self.inode)
            except OSError as exc:
                raise OSError(f"cannot open inode {self.inode} in the image: {exc}") from exc
            return io.BufferedReader(_TskRaw(tsk_file, self.size, self.attr), _CHUNK)
        from dfvfs.resolver import resolver

        ctx = _thread_context()
        _set_credentials(self.credentials)
        spec = _deserialize(self.spec)
        try:
            fobj = resolver.Resolver.OpenFileObject(spec, resolver_context=ctx)
        except Exception as exc:
            raise OSError(f"cannot open file in the image: {exc}") from exc
        return io.BufferedReader(_DfvfsRaw(fobj, self.size), _CHUNK)


class _TskRaw(io.RawIOBase):
    """The default data attribute of a pytsk3 file as a raw stream (reads at an offset)."""

    def __init__(self, tsk_file: Any, size: int, attr: tuple[int, int] | None = None) -> None:
        self._f = tsk_file
        self._size = size
        self._pos = 0
        self._attr = attr

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        try:
            if self._attr is None:
                data = self._f.read_random(self._pos, n)
            else:
                data = self._f.read_random(self._pos, n, *self._attr)
        except OSError as exc:
            raise OSError(f"cannot read at offset {self._pos} in the image: {exc}") from exc
        if not data:
            return 0
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _DfvfsRaw(io.RawIOBase):
    """A dfVFS file object as a raw stream."""

    def __init__(self, fobj: Any, size: int) -> None:
        self._f = fobj
        self._size = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self._f.get_offset())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._f.seek(offset, whence)
        return int(self._f.get_offset())

    def readinto(self, b: Any) -> int:
        try:
            data = self._f.read(len(b))
        except Exception as exc:  # dfVFS back ends raise their own errors
            raise OSError(f"cannot read in the image: {exc}") from exc
        if not data:
            return 0
        b[: len(data)] = data
        return len(data)


_local = threading.local()


def _thread_context() -> Any:
    ctx = getattr(_local, "context", None)
    if ctx is None:
        from dfvfs.resolver import context

        ctx = _local.context = context.Context()
    return ctx


def _cached_fs(spec_json: str, credentials: tuple[tuple[str, str, str], ...]) -> Any:
    """The pytsk3 file system of ``spec_json``, opened once per thread (handles are not shared
    between threads: the walker reads its own while hashing threads read theirs)."""
    cache: OrderedDict[str, Any] | None = getattr(_local, "fs", None)
    if cache is None:
        cache = _local.fs = OrderedDict()
    fs = cache.get(spec_json)
    if fs is not None:
        cache.move_to_end(spec_json)
        return fs
    from dfvfs.resolver import resolver

    _set_credentials(credentials)
    try:
        fs = resolver.Resolver.OpenFileSystem(
            _deserialize(spec_json), resolver_context=_thread_context()
        ).GetFsInfo()
    except Exception as exc:
        raise OSError(f"cannot reopen the file system of the image: {exc}") from exc
    cache[spec_json] = fs
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return fs


def _serialize(spec: Any) -> str:
    from dfvfs.serializer.json_serializer import JsonPathSpecSerializer

    return str(JsonPathSpecSerializer.WriteSerialized(spec))


def _deserialize(text: str) -> Any:
    # every path specification type must be registered first: dfvfs.path registers most, and
    # the resolver helpers the rest (LUKSDE is registered only by its file system module)
    import dfvfs.resolver_helpers  # noqa: F401
    from dfvfs.path import luksde_path_spec  # noqa: F401
    from dfvfs.serializer.json_serializer import JsonPathSpecSerializer

    return JsonPathSpecSerializer.ReadSerialized(text)


def _set_credentials(credentials: tuple[tuple[str, str, str], ...]) -> None:
    if not credentials:
        return
    import dfvfs.credentials  # noqa: F401  (registers the credential types: BDE, LUKSDE, ...)
    from dfvfs.resolver import resolver

    for spec_json, ident, key in credentials:
        resolver.Resolver.key_chain.SetCredential(_deserialize(spec_json), ident, key)


# --------------------------------------------------------------------------------------------------
# the opener


def _posix_time(value: Any) -> float | None:
    """POSIX seconds from a dfVFS/dfDateTime value or a TSK (seconds, nanoseconds) pair."""
    if value is None:
        return None
    if isinstance(value, tuple):
        sec, nano = value
        if not sec:
            return None
        return float(sec) + (nano or 0) / 1e9
    try:
        micros = value.GetPlasoTimestamp()  # POSIX microseconds, whatever the precision
    except (ValueError, AttributeError, OverflowError):
        return None
    return None if micros is None else micros / 1e6


@dataclass(slots=True)
class _Volume:
    """A place in the image where a file system may live."""

    label: str
    spec: Any
    credentials: tuple[tuple[str, str, str], ...] = ()


class _ImageWalk:
    def __init__(self, arc: Archive, kind: str, path: Path, disk: DiskImageSettings) -> None:
        from dfvfs.helpers import source_scanner
        from dfvfs.resolver import context

        self.arc = arc
        self.kind = kind
        self.path = path
        self.disk = disk
        self.ctx = context.Context()
        self.scanner = source_scanner.SourceScanner(resolver_context=self.ctx)
        self.info: dict[str, Any] = {"format": kind, "volumes": []}
        self.cap = disk.inline_bytes

    # -- volumes ------------------------------------------------------------------------------
    def storage_spec(self) -> Any:
        from dfvfs.lib import definitions
        from dfvfs.path import factory

        os_spec = factory.Factory.NewPathSpec(
            definitions.TYPE_INDICATOR_OS, location=str(self.path)
        )
        if self.kind == "raw" and not _SPLIT_RAW.search(self.path.name):
            # one file is the whole image: read it as it is (dfVFS's RAW layer only knows the
            # names of split images, and refuses a name like ``sdb`` or ``usb.bin``)
            return os_spec
        return factory.Factory.NewPathSpec(_STORAGE_TYPES[self.kind], parent=os_spec)

    def volumes(self, spec: Any, label: str, creds: tuple[Any, ...]) -> Iterator[_Volume | Member]:
        """File-system candidates below ``spec``: partitions, logical volumes, unlocked volumes;
        a skipped member for what cannot be opened (an encrypted volume without its key)."""
        from dfvfs.lib import definitions
        from dfvfs.resolver import resolver

        try:
            found = self.scanner.ScanForVolumeSystem(spec)
        except Exception as exc:
            found = None
            self.note(label, error=f"volume system not readable: {exc}")
        if found is None:
            yield _Volume(label, spec, creds)
            return
        kind = found.type_indicator
        if kind in _ENCRYPTION_NAMES and kind != "APFS_CONTAINER":
            yield from self.encrypted(found, label, creds)
            return
        if kind == definitions.TYPE_INDICATOR_VSHADOW:
            yield _Volume(label, spec, creds)
            yield from self.shadow_copies(found, label, creds)
            return
        if kind == "APFS_CONTAINER":
            yield from self.apfs_container(found, label, creds)
            return
        try:
            entry = resolver.Resolver.OpenFileEntry(found, resolver_context=self.ctx)
            subs = list(entry.sub_file_entries) if entry is not None else []
        except Exception as exc:
            self.note(label, error=f"{kind} volume system not readable: {exc}")
            yield _Volume(label, spec, creds)
            return
        if not subs:
            yield _Volume(label, spec, creds)
            return
        for sub in subs:
            loc = (getattr(sub.path_spec, "location", None) or "").strip("/")
            if not loc:
                # a partition table or space no partition holds: listed for the examiner (and
                # for carving), not walked as a volume
                self.info.setdefault("unallocated", []).append(
                    {
                        "volume": label,
                        "offset": getattr(sub.path_spec, "start_offset", None),
                        "size": sub.size,
                    }
                )
                continue
            yield from self.volumes(sub.path_spec, _join(label, loc), creds)

    def encrypted(self, spec: Any, label: str, creds: tuple[Any, ...]) -> Iterator[Any]:
        from dfvfs.resolver import context, resolver

        name = _ENCRYPTION_NAMES[spec.type_indicator]
        idents = ["password", "recovery_password"] if spec.type_indicator == "BDE" else ["password"]
        keys = [k.get_secret_value() for k in self.disk.keys]
        spec_json = _serialize(spec)
        for key in keys:
            for ident in idents:
                try:
                    resolver.Resolver.key_chain.SetCredential(spec, ident, key)
                    entry = resolver.Resolver.OpenFileEntry(
                        spec, resolver_context=context.Context()
                    )
                    unlocked = entry is not None and (not entry.IsLocked() or entry.Unlock())
                except Exception:
                    unlocked = False
                if unlocked:
                    self.note(label, encryption=name, unlocked=True)
                    self.ctx.Empty()
                    yield from self.volumes(spec, label, (*creds, (spec_json, ident, key)))
                    return
        why = "no key given" if not keys else "none of the keys given opens it"
        self.note(label, encryption=name, unlocked=False)
        yield Member(
            label or "volume",
            skipped=f"encrypted volume ({name}): {why}; give a key with --volume-key",
        )

    def apfs_container(self, spec: Any, label: str, creds: tuple[Any, ...]) -> Iterator[Any]:
        from dfvfs.lib import definitions
        from dfvfs.path import factory
        from dfvfs.resolver import resolver

        entry = resolver.Resolver.OpenFileEntry(spec, resolver_context=self.ctx)
        for sub in entry.sub_file_entries:
            loc = (getattr(sub.path_spec, "location", None) or "").strip("/")
            sub_label = _join(label, loc)
            if sub.IsLocked():
                unlocked = False
                for key in [k.get_secret_value() for k in self.disk.keys]:
                    resolver.Resolver.key_chain.SetCredential(sub.path_spec, "password", key)
                    if sub.Unlock():
                        creds = (*creds, (_serialize(sub.path_spec), "password", key))
                        unlocked = True
                        break
                if not unlocked:
                    self.note(sub_label, encryption="APFS", unlocked=False)
                    yield Member(
                        sub_label,
                        skipped="encrypted volume (APFS): no key given or none opens it; "
                        "give a key with --volume-key",
                    )
                    continue
            fs_spec = factory.Factory.NewPathSpec(
                definitions.TYPE_INDICATOR_APFS, location="/", parent=sub.path_spec
            )
            yield _Volume(sub_label, fs_spec, creds)

    def shadow_copies(self, spec: Any, label: str, creds: tuple[Any, ...]) -> Iterator[Any]:
        from dfvfs.resolver import resolver

        entry = resolver.Resolver.OpenFileEntry(spec, resolver_context=self.ctx)
        copies = []
        for sub in entry.sub_file_entries:
            loc = (getattr(sub.path_spec, "location", None) or "").strip("/")
            created = _posix_time(getattr(sub, "creation_time", None))
            copies.append({"name": loc, "created": created})
            if self.disk.shadow_copies:
                yield _Volume(_join(label, loc), sub.path_spec, creds)
        self.info.setdefault("shadow_copies", []).append(
            {"volume": label, "copies": copies, "walked": self.disk.shadow_copies}
        )

    def note(self, label: str, **fields: Any) -> None:
        for vol in self.info["volumes"]:
            if vol["label"] == label:
                vol.update(fields)
                return
        self.info["volumes"].append({"label": label, **fields})

    # -- file systems -------------------------------------------------------------------------
    def file_system(self, vol: _Volume) -> Iterator[Member]:
        from dfvfs.path import factory

        spec = vol.spec
        if spec.type_indicator == "APFS":
            fs_spec = spec
        else:
            try:
                fs_spec = self.scanner.ScanForFileSystem(spec)
            except Exception as exc:
                self.note(vol.label, error=f"file system not readable: {exc}")
                yield Member(vol.label or "volume", error=f"file system not readable: {exc}")
                return
        if fs_spec is None:
            self.note(vol.label, file_system=None)
            yield Member(
                vol.label or "volume",
                skipped="no file system recognised in this volume (unallocated or unknown)",
            )
            return
        fs_type = fs_spec.type_indicator
        self.note(vol.label, file_system=fs_type)
        if fs_type in _TSK_FILE_SYSTEMS:
            tsk_spec = factory.Factory.NewPathSpec("TSK", location="/", parent=fs_spec.parent)
            try:
                yield from self.tsk_files(vol, tsk_spec, streams=fs_type == "NTFS")
                return
            except _TskUnavailable:
                pass  # The Sleuth Kit cannot read this one: dfVFS's own back end lists it
        yield from self.dfvfs_files(vol, fs_spec)

    def tsk_files(self, vol: _Volume, tsk_spec: Any, *, streams: bool = False) -> Iterator[Member]:
        """Every file of a volume The Sleuth Kit reads, deleted ones included; with ``streams``
        (NTFS) also each named data stream, as ``name:stream``."""
        from dfvfs.resolver import resolver

        _set_credentials(vol.credentials)
        try:
            fs_info = resolver.Resolver.OpenFileSystem(
                tsk_spec, resolver_context=self.ctx
            ).GetFsInfo()
            root = fs_info.info.root_inum
        except Exception as exc:
            raise _TskUnavailable from exc
        spec_json = _serialize(tsk_spec)
        used: list[tuple[int, int]] | None = [] if self.disk.carve else None
        seen: set[int] = {root}
        stack: list[tuple[int, str, bool]] = [(root, "", False)]
        while stack:
            inode, prefix, in_deleted = stack.pop()
            try:
                listing = sorted(
                    fs_info.open_dir(inode=inode),
                    key=lambda f: getattr(getattr(f.info, "name", None), "name", b"") or b"",
                )
            except OSError as exc:
                yield Member(
                    _join(vol.label, prefix) or "/",
                    error=f"directory not readable in the image: {exc}",
                )
                continue
            subdirs: list[tuple[int, str, bool]] = []
            for f in listing:
                if used is not None:
                    _note_runs(f, fs_info.info.block_size, used)
                try:
                    found = self.tsk_entry(f, prefix, in_deleted, vol, spec_json)
                except Exception as exc:  # one odd entry costs its record, not the volume
                    raw = getattr(getattr(f.info, "name", None), "name", b"") or b""
                    name = _join(vol.label, prefix + raw.decode("utf-8", "backslashreplace"))
                    found = Member(name or "?", error=f"cannot read in the image: {exc}")
                if isinstance(found, Member):
                    yield found
                    if streams and found.error is None and found.skipped is None:
                        yield from self.named_streams(f, found, vol, spec_json)
                elif found is not None and found[0] not in seen:
                    seen.add(found[0])
                    subdirs.append(found)
            stack.extend(reversed(subdirs))
        if used is not None:
            total = int(fs_info.info.block_count) * int(fs_info.info.block_size)
            yield from self.carved(vol, tsk_spec, free_ranges(used, total))

    def carved(
        self, vol: _Volume, tsk_spec: Any, ranges: list[tuple[int, int]]
    ) -> Iterator[Member]:
        """Files carved from the space no file (live or deleted) of the volume holds."""
        from dfvfs.resolver import resolver

        fobj = resolver.Resolver.OpenFileObject(tsk_spec.parent, resolver_context=self.ctx)

        def read(offset: int, length: int) -> bytes:
            fobj.seek(offset)
            return bytes(fobj.read(length))

        count = 0
        for item in carve(read, ranges, self.arc.limits.max_member_bytes):
            count += 1
            name = _join(
                vol.label, f"$Carved/{item.offset:012x}.{item.kind.replace('jpeg', 'jpg')}"
            )
            extra = {"deleted": True, "fs": {"inode": None, "carved": True, "offset": item.offset}}
            yield Member(name, len(item.data), None, data=item.data, extra=extra)
        self.note(vol.label, carved=count, unallocated_bytes=sum(b - a for a, b in ranges))

    def named_streams(
        self, f: Any, member: Member, vol: _Volume, spec_json: str
    ) -> Iterator[Member]:
        """NTFS alternate data streams of a file: content a file's name does not show."""
        import pytsk3

        inode = int(f.info.meta.addr)
        for attr in f:
            raw = attr.info.name
            if int(attr.info.type) != int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA) or not raw:
                continue
            name = f"{member.name}:{raw.decode('utf-8', 'backslashreplace')}"
            size, key = int(attr.info.size), (int(attr.info.type), int(attr.info.id))
            ref = ImageRef(str(self.path), spec_json, inode, size, vol.credentials, key)
            extra = {**(member.extra or {}), "fs": {**(member.extra or {}).get("fs", {})}}
            extra["fs"]["stream"] = raw.decode("utf-8", "backslashreplace")
            yield self.content(
                name, size, member.mtime, extra, ref, lambda k=key, n=size: _tsk_all(f, n, k)
            )

    def tsk_entry(
        self, f: Any, prefix: str, in_deleted: bool, vol: _Volume, spec_json: str
    ) -> Member | tuple[int, str, bool] | None:
        """One directory entry: its member, a folder to list (inode, prefix, deleted), or None
        for what is not a file (``.``, a FAT volume label, The Sleuth Kit's virtual files)."""
        import pytsk3

        name_info = getattr(f.info, "name", None)
        if name_info is None:
            return None
        raw = name_info.name or b""
        name = raw.decode("utf-8", "backslashreplace") if raw else ""
        if name in ("", ".", "..") or name.endswith(" (Volume Label Entry)"):
            return None
        rel = f"{prefix}{name}"
        full = _join(vol.label, rel)
        meta = getattr(f.info, "meta", None)
        name_deleted = bool(int(name_info.flags) & pytsk3.TSK_FS_NAME_FLAG_UNALLOC)
        deleted = name_deleted or in_deleted
        if meta is None:
            if not deleted:
                return None
            return Member(
                full,
                skipped="deleted; its metadata entry is gone, content not recoverable",
                extra={"deleted": True, "fs": {"inode": None}},
            )
        mtype = meta.type
        if mtype == pytsk3.TSK_FS_META_TYPE_VIRT:
            return None  # views of metadata ($MBR, $FAT1), not files
        if mtype in (pytsk3.TSK_FS_META_TYPE_DIR, pytsk3.TSK_FS_META_TYPE_VIRT_DIR):
            orphans = mtype == pytsk3.TSK_FS_META_TYPE_VIRT_DIR  # $OrphanFiles
            return (int(meta.addr), rel + "/", deleted or orphans)
        extra: dict[str, Any] = {"deleted": deleted, "fs": _tsk_times(meta)}
        mtime = extra["fs"]["modified"]
        if name_deleted and int(meta.flags) & pytsk3.TSK_FS_META_FLAG_ALLOC:
            return Member(
                full,
                None,
                mtime,
                skipped="deleted; its metadata entry now belongs to another file",
                extra={"deleted": True, "fs": {"inode": int(meta.addr)}},
            )
        if mtype == pytsk3.TSK_FS_META_TYPE_LNK:
            return Member(full, None, mtime, skipped="symlink", extra=extra)
        if mtype != pytsk3.TSK_FS_META_TYPE_REG:
            return Member(full, None, mtime, skipped="special file", extra=extra)
        size = int(meta.size)
        ref = ImageRef(str(self.path), spec_json, int(meta.addr), size, vol.credentials)
        return self.content(full, size, mtime, extra, ref, lambda: _tsk_all(f, size))

    def dfvfs_files(self, vol: _Volume, fs_spec: Any) -> Iterator[Member]:
        from dfvfs.resolver import resolver

        _set_credentials(vol.credentials)
        try:
            root = resolver.Resolver.OpenFileEntry(fs_spec, resolver_context=self.ctx)
        except Exception as exc:
            yield Member(vol.label or "volume", error=f"file system not readable: {exc}")
            return
        stack: list[tuple[Any, str]] = [(root, "")]
        while stack:
            entry, prefix = stack.pop()
            try:
                subs = sorted(entry.sub_file_entries, key=lambda e: e.name or "")
            except Exception as exc:
                yield Member(
                    _join(vol.label, prefix) or "/",
                    error=f"directory not readable in the image: {exc}",
                )
                continue
            subdirs: list[tuple[Any, str]] = []
            for sub in subs:
                rel = f"{prefix}{sub.name}"
                try:
                    if sub.IsDirectory():
                        subdirs.append((sub, rel + "/"))
                        continue
                    found = self.dfvfs_entry(sub, _join(vol.label, rel), vol)
                except Exception as exc:  # one odd entry costs its record, not the volume
                    found = Member(_join(vol.label, rel), error=f"cannot read in the image: {exc}")
                yield found
            stack.extend(reversed(subdirs))

    def dfvfs_entry(self, sub: Any, full: str, vol: _Volume) -> Member:
        stat = sub.GetStatAttribute()
        times = {
            "inode": getattr(stat, "inode_number", None),
            "created": _posix_time(sub.creation_time),
            "modified": _posix_time(sub.modification_time),
            "accessed": _posix_time(sub.access_time),
            "changed": _posix_time(sub.change_time),
        }
        extra = {"deleted": not sub.IsAllocated(), "fs": times}
        if sub.IsLink():
            return Member(full, None, times["modified"], skipped="symlink", extra=extra)
        if not sub.IsFile():
            return Member(full, None, times["modified"], skipped="special file", extra=extra)
        size = int(sub.size or 0)
        ref = ImageRef(str(self.path), _serialize(sub.path_spec), None, size, vol.credentials)
        return self.content(full, size, times["modified"], extra, ref, lambda: _dfvfs_all(sub))

    def content(
        self,
        name: str,
        size: int,
        mtime: float | None,
        extra: dict[str, Any],
        ref: ImageRef,
        read_all: Any,
    ) -> Member:
        """A file's member: its bytes when small, else the reference a reader reopens."""
        if size > self.cap:
            return Member(name, size, mtime, ref=ref, extra=extra)
        try:
            data = read_all()
        except Exception as exc:
            return Member(name, size, mtime, error=f"cannot read in the image: {exc}", extra=extra)
        return Member(name, len(data), mtime, data=data, extra=extra)

    # -- the whole image ----------------------------------------------------------------------
    def members(self) -> Iterator[Member]:
        storage = self.storage_spec()
        try:
            from dfvfs.resolver import resolver

            media = resolver.Resolver.OpenFileObject(storage, resolver_context=self.ctx)
            self.info["media_size"] = int(media.get_size())
        except Exception as exc:
            raise Unreadable(f"corrupt {self.kind} image: {exc}") from exc
        if not self.info["media_size"]:
            raise Unreadable(f"corrupt {self.kind} image: no media data")
        for vol in self.volumes(storage, "", ()):
            if isinstance(vol, Member):
                yield vol
                continue
            try:
                yield from self.file_system(vol)
            except Exception as exc:  # the other volumes are still walked
                self.note(vol.label, error=f"volume not readable: {exc}")
                yield Member(vol.label or "volume", error=f"volume not readable: {exc}")
        self.arc.info["image"] = self.info
        if self.kind == "ewf" and self.disk.verify:
            self.verify_ewf()

    def verify_ewf(self) -> None:
        """Read the media once and compare with the hashes stored at acquisition."""
        import pyewf

        handle = pyewf.handle()
        handle.open(pyewf.glob(str(self.path)))
        try:
            stored = {
                k.lower(): handle.get_hash_value(k)
                for k in ("MD5", "SHA1", "SHA256")
                if handle.get_hash_value(k)
            }
            hashers = {k: hashlib.new(k) for k in stored}
            if "md5" not in hashers:
                hashers["md5"] = hashlib.md5(usedforsecurity=False)
            while True:
                chunk = handle.read(4 * _CHUNK)
                if not chunk:
                    break
                for h in hashers.values():
                    h.update(chunk)
        except OSError as exc:
            self.info["verified"] = False
            raise Unreadable(f"image hash mismatch: reading the media failed: {exc}") from exc
        finally:
            handle.close()
        read = {k: h.hexdigest() for k, h in hashers.items()}
        self.info["stored_hashes"] = stored
        self.info["read_hashes"] = read
        if not stored:
            self.info["verified"] = None
            return
        bad = [k for k, v in stored.items() if read.get(k) != v.lower()]
        self.info["verified"] = not bad
        if bad:
            k = bad[0]
            raise Unreadable(f"image hash mismatch: stored {k.upper()} {stored[k]}, read {read[k]}")


class _TskUnavailable(Exception):
    pass


def _note_runs(tsk_file: Any, block_size: int, used: list[tuple[int, int]]) -> None:
    """Add the byte ranges a file's (or folder's) data runs hold to ``used``."""
    import pytsk3

    if getattr(tsk_file.info, "meta", None) is None:
        return
    skip = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE | pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER
    try:
        for attr in tsk_file:
            for run in attr:
                if int(run.flags) & int(skip) or not run.len:
                    continue
                used.append((int(run.addr) * block_size, int(run.len) * block_size))
    except Exception:
        return  # no runs to read (a resident or unreadable attribute): nothing to exclude


def _tsk_times(meta: Any) -> dict[str, Any]:
    def t(name: str) -> float | None:
        return _posix_time((getattr(meta, name, 0), getattr(meta, f"{name}_nano", 0)))

    return {
        "inode": int(meta.addr),
        "created": t("crtime"),
        "modified": t("mtime"),
        "accessed": t("atime"),
        "changed": t("ctime"),
    }


def _tsk_all(tsk_file: Any, size: int, attr: tuple[int, int] | None = None) -> bytes:
    parts: list[bytes] = []
    pos = 0
    while pos < size:
        n = min(_CHUNK, size - pos)
        data = tsk_file.read_random(pos, n) if attr is None else tsk_file.read_random(pos, n, *attr)
        if not data:
            raise OSError(f"short read at offset {pos} of {size}")
        parts.append(data)
        pos += len(data)
    return b"".join(parts)


def _dfvfs_all(entry: Any) -> bytes:
    fobj = entry.GetFileObject()
    if fobj is None:
        raise OSError("no data stream")
    return bytes(fobj.read())


def _join(label: str, rel: str) -> str:
    return f"{label}/{rel}" if label and rel else label or rel


def _ewf_segment(path: Path) -> int | None:
    """The segment number an EWF file says it is (1 for the first), or None when unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(13)
    except OSError:
        return None
    if head[:8] == b"EVF\x09\x0d\x0a\xff\x00" and len(head) >= 11:
        return int.from_bytes(head[9:11], "little")
    if head[:8] == b"EVF2\x0d\x0a\x81\x00" and len(head) >= 13:
        return int.from_bytes(head[9:13], "little")
    return 1


def open_disk_image(kind: str, arc: Archive) -> Iterator[Member]:
    """Members of a forensic image of ``kind`` (one of
    :data:`~heroes.pipeline.identify.DISK_IMAGE_KINDS`) found on disk at ``arc.fs_path``."""
    if arc.fs_path is None:
        raise Unreadable(
            f"{kind} disk image inside an archive or image: not opened (extract it and triage it "
            "as evidence of its own)"
        )
    _require_dfvfs()
    if kind == "ewf":
        segment = _ewf_segment(arc.fs_path)
        if segment is not None and segment != 1:
            arc.info["image"] = {"format": kind, "segment": segment}
            return
    disk = arc.disk if arc.disk is not None else DiskImageSettings()
    yield from _ImageWalk(arc, kind, arc.fs_path, disk).members()


def _member_cap(disk: DiskImageSettings | None) -> int:
    return (disk or DiskImageSettings()).max_files


for _kind in DISK_IMAGE_KINDS:
    _opener = partial(open_disk_image, _kind)
    register_opener(_kind, _opener, member_cap=_member_cap)
