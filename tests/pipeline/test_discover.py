from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import struct
import tarfile
import tempfile
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import py7zr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heroes.config import Limits, MiB
from heroes.pipeline.discover import Entry, walk

JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 4
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", **kw: object) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, **kw) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sevenz_bytes(members: dict[str, bytes], password: str | None = None, **kw: object) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password, **kw) as z:  # type: ignore[arg-type]
        for name, data in members.items():
            z.writestr(data, name)
    return buf.getvalue()


def by_path(entries: Iterable[Entry]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for e in entries:
        assert e.path not in out, f"duplicate path {e.path}"
        out[e.path] = e
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every name under root with its mode, mtime and content hash (links and fifos not opened)."""
    state: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            digest = ""
            if stat.S_ISREG(st_.st_mode):
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st_.st_mode):
                digest = os.readlink(full)
            state[full] = (st_.st_mode, st_.st_mtime_ns, digest)
    state[str(root)] = (0, os.lstat(root).st_mtime_ns, "")
    return state


LIMITS = Limits()


@pytest.fixture
def seizure(tmp_path: Path) -> tuple[Path, int]:
    """A small seizure with one of each kind of thing; returns the root and its file count."""
    root = tmp_path / "seizure"
    (root / "docs" / "deeper").mkdir(parents=True)
    (root / "docs" / "deeper" / "photo.jpg").write_bytes(JPEG)
    (root / "docs" / "notes.txt").write_text("notes")
    (root / "empty.bin").write_bytes(b"")
    (root / "album.zip").write_bytes(
        zip_bytes({"a.jpg": JPEG, "b/c.png": PNG, "b/": b"", "renamed.txt": JPEG})
    )
    (root / "backup.tar.gz").write_bytes(tar_bytes({"x.txt": b"x", "y/z.jpg": JPEG}))
    (root / "nested.zip").write_bytes(zip_bytes({"inner.zip": zip_bytes({"leaf.txt": b"leaf"})}))
    (root / "broken.zip").write_bytes(b"PK\x03\x04" + b"\xff" * 10)
    os.symlink("docs", root / "link-to-docs")
    os.mkfifo(root / "pipe")
    on_disk = 9  # photo, notes, empty, album, backup, nested, broken, link, pipe
    members = 3 + 2 + 2  # album (its directory entry is not a member), backup, nested + its leaf
    return root, on_disk + members


# --- naming and ordering ----------------------------------------------------------------------


def test_nested_zip_in_tar_gz_in_zip_is_named_with_bang_paths_members_first(tmp_path: Path) -> None:
    deep = zip_bytes({"photo.jpg": JPEG})
    inner = tar_bytes({"sub/deep.zip": deep})
    (tmp_path / "outer.zip").write_bytes(zip_bytes({"dir/inner.tar.gz": inner}))

    entries = list(walk(tmp_path, LIMITS))

    assert [e.path for e in entries] == [
        "outer.zip!/dir/inner.tar.gz!/sub/deep.zip!/photo.jpg",
        "outer.zip!/dir/inner.tar.gz!/sub/deep.zip",
        "outer.zip!/dir/inner.tar.gz",
        "outer.zip",
    ]
    assert [e.depth for e in entries] == [3, 2, 1, 0]
    assert [e.container for e in entries] == [
        "outer.zip!/dir/inner.tar.gz!/sub/deep.zip",
        "outer.zip!/dir/inner.tar.gz",
        "outer.zip",
        None,
    ]
    assert [e.archive_kind for e in entries] == [None, "zip", "gz", "zip"]
    assert [e.members for e in entries] == [None, 1, 1, 1]
    assert entries[0].data == JPEG and entries[0].size == len(JPEG)
    assert entries[2].data == inner
    outer = entries[3]
    assert outer.fs_path == tmp_path / "outer.zip" and outer.data is None
    assert outer.size == (tmp_path / "outer.zip").stat().st_size
    assert all(e.error is None and e.skipped is None for e in entries)


def test_root_that_is_a_file_is_named_by_its_name(tmp_path: Path) -> None:
    target = tmp_path / "single.zip"
    target.write_bytes(zip_bytes({"a.txt": b"a"}))

    assert [e.path for e in walk(target, LIMITS)] == ["single.zip!/a.txt", "single.zip"]


def test_missing_root_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        walk(tmp_path / "nope", LIMITS)


def test_directory_order_is_sorted_and_directories_are_not_entries(tmp_path: Path) -> None:
    for name in ["b.txt", "a/z.txt", "a/b/c.txt", "c.txt", "A.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)

    entries = list(walk(tmp_path, LIMITS))

    assert [e.path for e in entries] == ["A.txt", "a/b/c.txt", "a/z.txt", "b.txt", "c.txt"]
    assert all(e.depth == 0 and e.fs_path is not None and e.data is None for e in entries)
    assert entries[0].size == 5 and entries[0].mtime == (tmp_path / "A.txt").stat().st_mtime


def test_member_mtimes_come_from_the_archive(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("old.txt", date_time=(2001, 2, 3, 4, 5, 6))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, b"old")
    (tmp_path / "t.zip").write_bytes(buf.getvalue())
    (tmp_path / "t.tgz").write_bytes(tar_bytes({"x": b"x"}))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["t.zip!/old.txt"].mtime == 981173106.0
    assert got["t.tgz!/x"].mtime == 1_600_000_000.0


# --- hostile names -------------------------------------------------------------------------------


def _patch_7z_name(raw: bytes, old: str, new: str) -> bytes:
    """Rename a member in an unencoded 7z header in place and fix both header CRCs."""
    data = bytearray(raw)
    at = data.find(old.encode("utf-16-le"))
    assert at > 0 and len(old) == len(new)
    data[at : at + 2 * len(old)] = new.encode("utf-16-le")
    offset, size = struct.unpack_from("<QQ", data, 12)
    struct.pack_into("<I", data, 28, zlib.crc32(data[32 + offset : 32 + offset + size]))
    struct.pack_into("<I", data, 8, zlib.crc32(data[12:32]))
    return bytes(data)


def test_traversal_and_absolute_member_names_are_kept_verbatim_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "deep" / "er" / "root"
    root.mkdir(parents=True)
    names = {"../../etc/passwd": b"root:x:0:0", "/abs/evil.txt": b"evil", "ok.txt": b"ok"}
    (root / "evil.zip").write_bytes(zip_bytes(names))
    (root / "evil.tar").write_bytes(tar_bytes(names, mode="w"))
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        z.set_encoded_header_mode(False)
        z.writestr(b"seven", "xx/xx/evil.txt")
    (root / "evil.7z").write_bytes(_patch_7z_name(buf.getvalue(), "xx/xx/evil", "../../evil"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)

    got = by_path(walk(root, LIMITS))

    assert got["evil.zip!/../../etc/passwd"].data == b"root:x:0:0"
    assert got["evil.zip!//abs/evil.txt"].data == b"evil"
    assert got["evil.tar!/../../etc/passwd"].data == b"root:x:0:0"
    assert got["evil.tar!//abs/evil.txt"].data == b"evil"
    assert got["evil.7z!/../../evil.txt"].data == b"seven"
    assert snapshot(tmp_path) == before


def test_unicode_long_and_undecodable_names_become_valid_strings(tmp_path: Path) -> None:
    long_name = "é" * 60 + "x" * 120 + ".txt"
    (tmp_path / "café ☕.txt").write_text("u")
    (tmp_path / long_name).write_text("long")
    fd = os.open(os.fsencode(tmp_path) + b"/bad\xff\xfe.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    (tmp_path / "names.zip").write_bytes(zip_bytes({"日本/写真.jpg": JPEG, long_name: b"l"}))
    (tmp_path / "names.tar").write_bytes(
        tar_bytes({"bad\udcff.jpg": JPEG}, mode="w", format=tarfile.GNU_FORMAT)
    )

    got = by_path(walk(tmp_path, LIMITS))

    assert set(got) == {
        "bad\\xff\\xfe.txt",
        "café ☕.txt",
        long_name,
        "names.tar!/bad\\xff.jpg",
        "names.tar",
        "names.zip!/日本/写真.jpg",
        f"names.zip!/{long_name}",
        "names.zip",
    }
    for path in got:
        path.encode("utf-8")
    assert got["bad\\xff\\xfe.txt"].fs_path is not None
    assert got["bad\\xff\\xfe.txt"].fs_path.exists()
    assert got["names.tar!/bad\\xff.jpg"].data == JPEG


def test_image_renamed_txt_inside_zip_is_yielded_with_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(zip_bytes({"holiday.txt": JPEG}))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["a.zip!/holiday.txt"].data == JPEG
    assert got["a.zip!/holiday.txt"].archive_kind is None


def test_archives_are_detected_by_content_not_by_extension(tmp_path: Path) -> None:
    (tmp_path / "innocent.jpg").write_bytes(zip_bytes({"hidden.png": PNG}))
    (tmp_path / "fake.zip").write_bytes(b"just text, not a zip")

    got = by_path(walk(tmp_path, LIMITS))

    assert got["innocent.jpg!/hidden.png"].data == PNG
    assert got["innocent.jpg"].archive_kind == "zip"
    assert got["fake.zip"].archive_kind is None and got["fake.zip"].error is None


# --- bombs and limits ----------------------------------------------------------------------------


def test_zip_bomb_becomes_error_record_and_walk_goes_on(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a_bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.bin", "w") as f:
            zeros = bytes(MiB)
            for _ in range(200):
                f.write(zeros)
        zf.writestr("after.txt", b"still here")
    (tmp_path / "b_next.txt").write_text("next")

    tracemalloc.start()
    try:
        got = by_path(walk(tmp_path, LIMITS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    bomb = got["a_bomb.zip!/bomb.bin"]
    assert bomb.error is not None and bomb.error.startswith("zip bomb: expansion ratio ")
    assert bomb.error.endswith(" > 100 (header claims 209715200 bytes)")
    assert bomb.data is None and bomb.size is None
    assert got["a_bomb.zip!/after.txt"].data == b"still here"
    assert got["a_bomb.zip"].error is None and got["a_bomb.zip"].members == 2
    assert "b_next.txt" in got
    assert peak < 32 * MiB


def test_many_small_members_that_add_up_to_a_bomb_stop_the_archive(tmp_path: Path) -> None:
    (tmp_path / "spread.zip").write_bytes(
        zip_bytes({f"m{i:02}.bin": bytes(MiB) for i in range(20)})
    )

    entries = list(walk(tmp_path, LIMITS))

    archive = entries[-1]
    assert archive.path == "spread.zip"
    assert archive.error is not None and archive.error.startswith("zip bomb: expansion ratio")
    assert 0 < archive.members < 20  # type: ignore[operator]
    assert entries[-2].error == f"{archive.error} (header claims {MiB} bytes)"
    assert entries[-2].data is None and entries[-2].size is None
    assert all(e.data == bytes(MiB) for e in entries[:-2])


def test_tar_gz_bomb_is_stopped_while_streaming(tmp_path: Path) -> None:
    class Zeros(io.RawIOBase):
        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            b[:] = bytes(len(b))
            return len(b)

    with tarfile.open(tmp_path / "bomb.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 256 * MiB
        tf.addfile(info, Zeros())
    (tmp_path / "z_after.txt").write_text("after")

    tracemalloc.start()
    try:
        got = by_path(walk(tmp_path, LIMITS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    member, archive = got["bomb.tar.gz!/zeros.bin"], got["bomb.tar.gz"]
    assert archive.error is not None
    assert archive.error.startswith("decompression bomb: expansion ratio")
    assert member.error == f"{archive.error} (header claims {256 * MiB} bytes)"
    assert member.data is None and member.size is None
    assert "z_after.txt" in got
    assert peak < 32 * MiB


def test_member_over_max_member_bytes_gets_an_error_and_no_data(tmp_path: Path) -> None:
    limits = Limits(max_member_bytes=1000)
    big, small = os.urandom(5000), b"small"
    (tmp_path / "a.zip").write_bytes(zip_bytes({"big.bin": big, "small.txt": small}))
    (tmp_path / "b.tar").write_bytes(tar_bytes({"big.bin": big, "small.txt": small}, mode="w"))
    (tmp_path / "c.bin.gz").write_bytes(gzip.compress(big))
    (tmp_path / "d.7z").write_bytes(sevenz_bytes({"big.bin": big, "small.txt": small}))

    got = by_path(walk(tmp_path, limits))

    for path in ["a.zip!/big.bin", "b.tar!/big.bin", "c.bin.gz!/c.bin", "d.7z!/big.bin"]:
        assert got[path].error.startswith("member too large: > 1000 bytes"), path
        assert got[path].data is None and got[path].size is None
    for path in ["a.zip!/small.txt", "b.tar!/small.txt", "d.7z!/small.txt"]:
        assert got[path].data == small
    assert got["a.zip!/big.bin"].error.endswith("(header claims 5000 bytes)")


def test_archive_with_more_than_max_members_stops_with_an_error(tmp_path: Path) -> None:
    members = {f"{i}.txt": b"x" for i in range(5)}
    (tmp_path / "many.zip").write_bytes(zip_bytes(members))
    (tmp_path / "many.tar").write_bytes(tar_bytes(members, mode="w"))

    got = by_path(walk(tmp_path, Limits(max_members=3)))

    for archive in ("many.zip", "many.tar"):
        assert got[archive].error == "too many members: > 3"
        assert got[archive].members == 3
        assert sorted(p for p in got if p.startswith(archive + "!/")) == [
            f"{archive}!/{i}.txt" for i in range(3)
        ]


def test_archive_past_the_depth_limit_is_kept_with_its_bytes_but_not_opened(
    tmp_path: Path,
) -> None:
    inner = zip_bytes({"leaf.txt": b"leaf"})
    (tmp_path / "outer.zip").write_bytes(zip_bytes({"inner.zip": inner}))

    entries = list(walk(tmp_path, Limits(max_depth=1)))

    assert [e.path for e in entries] == ["outer.zip!/inner.zip", "outer.zip"]
    assert entries[0].error == "archive depth limit 1 reached; not opened"
    assert entries[0].data == inner and entries[0].archive_kind == "zip"
    assert entries[0].members is None

    (only,) = walk(tmp_path, Limits(max_depth=0))
    assert only.error == "archive depth limit 0 reached; not opened"


# --- encryption and corruption -------------------------------------------------------------------


def _encrypt_flag(raw: bytes, name: str) -> bytes:
    """Set the 'encrypted' bit of one member in its local and central headers."""
    data = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        local = zf.getinfo(name).header_offset
    data[local + 6] |= 1
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        (nlen,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + nlen] == name.encode():
            data[pos + 8] |= 1
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(data)


def test_encrypted_zip_member_is_an_error_record_and_the_rest_is_read(tmp_path: Path) -> None:
    raw = zip_bytes({"secret.jpg": JPEG, "open.txt": b"open"})
    (tmp_path / "locked.zip").write_bytes(_encrypt_flag(raw, "secret.jpg"))

    got = by_path(walk(tmp_path, LIMITS))

    secret = got["locked.zip!/secret.jpg"]
    assert secret.error == f"encrypted archive member (header claims {len(JPEG)} bytes)"
    assert secret.size is None and secret.data is None
    assert got["locked.zip!/open.txt"].data == b"open"
    assert got["locked.zip"].error is None


def test_encrypted_7z_is_an_error_on_the_archive(tmp_path: Path) -> None:
    (tmp_path / "data.7z").write_bytes(sevenz_bytes({"x.txt": b"x"}, password="pw"))
    (tmp_path / "hidden.7z").write_bytes(
        sevenz_bytes({"y.txt": b"y"}, password="pw", header_encryption=True)
    )

    got = by_path(walk(tmp_path, LIMITS))

    assert got["data.7z"].error == "encrypted 7z archive"
    assert got["data.7z!/x.txt"].error == "encrypted archive member (header claims 1 bytes)"
    assert got["hidden.7z"].error == "encrypted 7z archive"
    assert got["hidden.7z"].members == 0


def test_truncated_zip_yields_members_before_the_cut_and_an_archive_error(tmp_path: Path) -> None:
    raw = zip_bytes({"one.txt": b"1" * 100, "two.jpg": JPEG, "three.bin": os.urandom(4000)})
    (tmp_path / "cut.zip").write_bytes(raw[: len(raw) - 2500])

    got = by_path(walk(tmp_path, LIMITS))

    assert got["cut.zip!/one.txt"].data == b"1" * 100
    assert got["cut.zip!/two.jpg"].data == JPEG
    assert got["cut.zip!/three.bin"].error == (
        "corrupt zip: member truncated (header claims 4000 bytes)"
    )
    assert got["cut.zip"].error == "corrupt zip: File is not a zip file"
    assert got["cut.zip"].members == 3


def test_zip_with_broken_central_directory_is_read_from_local_headers(tmp_path: Path) -> None:
    members = {"a.txt": b"a" * 500, "b.txt": b"bbb", "c.txt": b"ccc"}
    raw = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    central = raw.find(b"PK\x01\x02")
    raw[central : central + 2] = b"XX"
    raw[raw.find(b"bbb")] = ord("X")
    (tmp_path / "bad.zip").write_bytes(bytes(raw))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["bad.zip!/a.txt"].data == b"a" * 500 and got["bad.zip!/c.txt"].data == b"ccc"
    assert got["bad.zip!/b.txt"].error == (
        "corrupt zip: Bad CRC-32 for file 'b.txt' (header claims 3 bytes)"
    )
    assert got["bad.zip"].error == "corrupt zip: Bad magic number for central directory"


def test_corrupt_zip_member_is_an_error_and_the_next_member_is_read(tmp_path: Path) -> None:
    payload = os.urandom(3000)
    raw = bytearray(zip_bytes({"x.bin": payload, "y.txt": b"y"}, zipfile.ZIP_STORED))
    at = raw.find(payload)
    raw[at + 10] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(raw))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["crc.zip!/x.bin"].error == (
        "corrupt zip: Bad CRC-32 for file 'x.bin' (header claims 3000 bytes)"
    )
    assert got["crc.zip!/y.txt"].data == b"y"


def test_truncated_tar_yields_members_before_the_cut_and_an_archive_error(tmp_path: Path) -> None:
    raw = tar_bytes({"first.txt": b"first", "second.bin": os.urandom(5000)}, mode="w")
    (tmp_path / "cut.tar").write_bytes(raw[:3000])
    aligned = tar_bytes({"first.txt": b"f" * 512, "second.txt": b"s"}, mode="w")
    (tmp_path / "edge.tar").write_bytes(aligned[:1024])

    got = by_path(walk(tmp_path, LIMITS))

    assert got["cut.tar!/first.txt"].data == b"first"
    assert got["cut.tar!/second.bin"].error == (
        "corrupt tar: unexpected end of data (header claims 5000 bytes)"
    )
    assert got["cut.tar"].error == "corrupt tar: unexpected end of data"
    assert got["edge.tar!/first.txt"].data == b"f" * 512
    assert got["edge.tar"].error == "corrupt tar: truncated (no end-of-archive marker)"


def test_truncated_gz_is_an_error_on_the_member_and_the_archive(tmp_path: Path) -> None:
    raw = gzip.compress(os.urandom(5000))
    (tmp_path / "cut.bin.gz").write_bytes(raw[:2000])

    got = by_path(walk(tmp_path, LIMITS))

    assert got["cut.bin.gz!/cut.bin"].error is not None
    assert got["cut.bin.gz!/cut.bin"].error.startswith("corrupt gz: ")
    assert got["cut.bin.gz"].error == got["cut.bin.gz!/cut.bin"].error


# --- single-file compression and 7z --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("photo.jpg.gz", gzip.compress),
        ("photo.jpg.bz2", bz2.compress),
        ("photo.jpg.xz", lzma.compress),
    ],
)
def test_single_compressed_file_has_one_member_named_without_the_suffix(
    tmp_path: Path, name: str, compress: object
) -> None:
    (tmp_path / name).write_bytes(compress(JPEG))  # type: ignore[operator]
    (tmp_path / "blob").write_bytes(compress(b"no suffix"))  # type: ignore[operator]

    got = by_path(walk(tmp_path, LIMITS))

    member = got[f"{name}!/photo.jpg"]
    assert member.data == JPEG and member.depth == 1 and member.size == len(JPEG)
    assert got[name].members == 1 and got[name].archive_kind == name.rsplit(".", 1)[1]
    assert got["blob!/data"].data == b"no suffix"


def test_gzip_member_carries_the_time_stored_in_the_gzip_header(tmp_path: Path) -> None:
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"a", mtime=1_234_567_890))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["a.txt.gz!/a.txt"].mtime == 1_234_567_890.0


def test_7z_members_are_read_in_memory_with_nested_archives(tmp_path: Path) -> None:
    (tmp_path / "box.7z").write_bytes(
        sevenz_bytes({"a/photo.jpg": JPEG, "empty.txt": b"", "in.zip": zip_bytes({"p.png": PNG})})
    )
    before = snapshot(tmp_path)

    got = by_path(walk(tmp_path, LIMITS))

    assert got["box.7z!/a/photo.jpg"].data == JPEG
    assert got["box.7z!/empty.txt"].data == b""
    assert got["box.7z!/in.zip!/p.png"].data == PNG
    assert got["box.7z!/in.zip"].members == 1
    assert got["box.7z"].members == 3 and got["box.7z"].error is None
    assert got["box.7z!/a/photo.jpg"].mtime is not None
    assert snapshot(tmp_path) == before


def test_abandoning_the_walk_inside_a_7z_stops_its_decompressor(tmp_path: Path) -> None:
    (tmp_path / "many.7z").write_bytes(
        sevenz_bytes({f"{i}.bin": os.urandom(2000) for i in range(20)})
    )

    walker = walk(tmp_path, LIMITS)
    first = next(walker)
    walker.close()  # type: ignore[attr-defined]

    assert first.path.startswith("many.7z!/")


def test_corrupt_7z_keeps_what_was_read_and_reports_the_archive(tmp_path: Path) -> None:
    raw = bytearray(sevenz_bytes({"a.txt": b"a" * 100}))
    raw[40] ^= 0xFF
    (tmp_path / "bad.7z").write_bytes(bytes(raw))

    got = by_path(walk(tmp_path, LIMITS))

    assert got["bad.7z"].error is not None and got["bad.7z"].error.startswith("corrupt 7z: ")


# --- archive members that are not files ----------------------------------------------------------


def test_links_and_devices_inside_tar_are_skipped_with_a_reason(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, link in [
            ("d", tarfile.DIRTYPE, ""),
            ("sym", tarfile.SYMTYPE, "/etc/shadow"),
            ("hard", tarfile.LNKTYPE, "d/file"),
            ("dev", tarfile.CHRTYPE, ""),
            ("fifo", tarfile.FIFOTYPE, ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tf.addfile(info)
    (tmp_path / "special.tar").write_bytes(buf.getvalue())

    got = by_path(walk(tmp_path, LIMITS))

    assert "special.tar!/d" not in got
    assert got["special.tar!/sym"].skipped == "symlink -> /etc/shadow"
    assert got["special.tar!/hard"].skipped == "hardlink -> d/file"
    assert got["special.tar!/dev"].skipped == "character device"
    assert got["special.tar!/fifo"].skipped == "fifo"
    assert got["special.tar"].members == 4


def test_zip_directory_entries_are_not_members_and_zip_symlinks_are_skipped(
    tmp_path: Path,
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("folder/", b"")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("folder/file.txt", b"f")
    (tmp_path / "z.zip").write_bytes(buf.getvalue())

    got = by_path(walk(tmp_path, LIMITS))

    assert set(got) == {"z.zip!/link", "z.zip!/folder/file.txt", "z.zip"}
    assert got["z.zip!/link"].skipped == "symlink -> /etc/passwd"


# --- the file system ----------------------------------------------------------------------------


def test_symlinks_are_never_followed_so_loops_and_escapes_cannot_hang(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "real.txt").write_text("real")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("outside")
    os.symlink("..", root / "a" / "loop")
    os.symlink(tmp_path / "outside", root / "escape")
    os.symlink("nowhere", root / "dangling")
    os.symlink("real.txt", root / "a" / "file-link")

    got = by_path(walk(root, LIMITS))

    assert set(got) == {"a/file-link", "a/loop", "a/real.txt", "dangling", "escape"}
    assert got["a/loop"].skipped == "symlink -> .."
    assert got["escape"].skipped == f"symlink -> {tmp_path / 'outside'}"
    assert got["dangling"].skipped == "symlink -> nowhere"
    assert got["a/file-link"].skipped == "symlink -> real.txt"
    assert all(got[p].fs_path is None and got[p].error is None for p in got if p != "a/real.txt")


def test_fifo_is_skipped_without_being_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "z.txt").write_text("z")

    got = by_path(walk(tmp_path, LIMITS))

    assert got["pipe"].skipped == "fifo" and got["pipe"].fs_path is None
    assert got["z.txt"].error is None


def test_unreadable_directory_and_file_become_error_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "hidden.txt").write_text("h")
    (tmp_path / "private.zip").write_bytes(zip_bytes({"x": b"x"}))
    (tmp_path / "public.txt").write_text("p")
    real_scandir, real_open = os.scandir, os.open

    def scandir(path: object) -> object:
        if Path(str(path)) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    def fake_open(path: object, flags: int, *args: object) -> int:
        if Path(str(path)) == tmp_path / "private.zip":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", fake_open)

    got = by_path(walk(tmp_path, LIMITS))

    assert set(got) == {"locked", "private.zip", "public.txt"}
    assert got["locked"].error == "permission denied"
    assert got["private.zip"].error == "permission denied"
    assert got["private.zip"].size == (tmp_path / "private.zip").stat().st_size
    assert got["public.txt"].error is None


def test_skip_archive_callback_yields_the_archive_without_descending(tmp_path: Path) -> None:
    (tmp_path / "done.zip").write_bytes(zip_bytes({"a.txt": b"a"}))
    (tmp_path / "todo.zip").write_bytes(zip_bytes({"b.txt": b"b"}))
    asked: list[str] = []

    def skip(entry: Entry) -> bool:
        asked.append(entry.path)
        return entry.path == "done.zip"

    entries = list(walk(tmp_path, LIMITS, skip_archive=skip))

    assert [e.path for e in entries] == ["done.zip", "todo.zip!/b.txt", "todo.zip"]
    assert asked == ["done.zip", "todo.zip"]
    assert entries[0].archive_kind == "zip" and entries[0].members is None
    assert entries[0].error is None


def test_every_file_is_accounted_for(seizure: tuple[Path, int]) -> None:
    root, expected = seizure

    entries = list(walk(root, LIMITS))

    got = by_path(entries)
    assert len(entries) == expected
    assert got["pipe"].skipped == "fifo"
    assert got["link-to-docs"].skipped == "symlink -> docs"
    assert got["broken.zip"].error is not None
    assert got["album.zip!/renamed.txt"].data == JPEG
    assert got["backup.tar.gz!/y/z.jpg"].data == JPEG
    assert got["nested.zip!/inner.zip!/leaf.txt"].data == b"leaf"


def test_walking_leaves_the_seizure_unchanged(seizure: tuple[Path, int]) -> None:
    root, _ = seizure
    before = snapshot(root)

    for _ in walk(root, LIMITS):
        pass

    assert snapshot(root) == before


# --- fuzzing -------------------------------------------------------------------------------------

_MAGICS = [
    b"PK\x03\x04",
    b"\x1f\x8b\x08\x00",
    b"BZh9",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"\x00" * 257 + b"ustar\x0000",
]

_VALID = [
    zip_bytes({"a.txt": b"a" * 300, "b/c.jpg": JPEG}),
    tar_bytes({"a.txt": b"a" * 300}),
    tar_bytes({"a.txt": b"a" * 300}, mode="w"),
    gzip.compress(JPEG),
    bz2.compress(JPEG),
    lzma.compress(JPEG),
    sevenz_bytes({"a.txt": b"a" * 300, "b.jpg": JPEG}),
]


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=1024))
    if choice == 1:
        return draw(st.sampled_from(_MAGICS)) + draw(st.binary(max_size=1024))
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=hostile_bytes())
def test_arbitrary_bytes_never_make_the_walk_raise(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "blob.bin").write_bytes(payload)
        (root / "wrap.zip").write_bytes(zip_bytes({"inner.bin": payload}))

        entries = list(walk(root, Limits(max_member_bytes=1 * MiB, max_archive_bytes=8 * MiB)))

    paths = [e.path for e in entries]
    assert {"blob.bin", "wrap.zip", "wrap.zip!/inner.bin"} <= set(paths)
    assert len(paths) == len(set(paths))
    for e in entries:
        assert isinstance(e.path, str)
        e.path.encode("utf-8")
        assert e.error is None or isinstance(e.error, str)
