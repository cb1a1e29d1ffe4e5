"""Forensic images: every file of every partition accounted for (deleted ones too) with the right
hashes, image hashes verified, encrypted volumes skipped by name, large files streamed by
reference, and ordinary files never taken for images."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diskimages import (
    MiB,
    converted,
    e01,
    ext_volume,
    fat_volume,
    luks_volume,
    ntfs_volume,
    partitioned,
    sha256,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from heroes.config import DiskImageSettings, Limits, Settings
from heroes.pipeline.discover import Entry, walk
from heroes.pipeline.diskimage import ImageRef
from heroes.pipeline.identify import SNIFF_BYTES, hash_source, raw_disk_image, sniff
from heroes.pipeline.report import RECORD_FIELDS, records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore


def _noise(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _photo(seed: int, size: int) -> bytes:
    """A synthetic JPEG (random colour blocks), large when ``size`` is large."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    img = Image.fromarray(a).resize((size, size), Image.Resampling.NEAREST)
    noise = rng.integers(0, 24, (size, size, 3), dtype=np.uint8)
    out = Image.fromarray(np.asarray(img) ^ noise)
    import io

    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _by_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def _content(e: Entry) -> bytes:
    if e.data is not None:
        return e.data
    assert e.ref is not None, e.path
    with e.ref.open_stream() as f:
        return f.read()


FAT_FILES = {
    "DCIM/photo.jpg": _photo(1, 256),
    "DCIM/sub/notes.txt": b"meeting at noon\n",
    "blob.bin": _noise(2, 30_000),
    "gone.bin": _noise(3, 5_000),
}


@pytest.fixture(scope="module")
def fat_e01(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fat")
    raw = fat_volume(d / "fat.raw", FAT_FILES, deleted=("gone.bin",))
    ev = d / "evidence"
    ev.mkdir()
    return e01(raw, ev / "disk"), raw


def test_e01_of_a_fat_volume_accounts_for_every_file_deleted_included(
    fat_e01: tuple[Path, Path],
) -> None:
    image, raw = fat_e01
    entries = _by_path(list(walk(image)))
    files = {p: e for p, e in entries.items() if p != "disk.E01"}
    live = {"disk.E01!/DCIM/photo.jpg", "disk.E01!/DCIM/sub/notes.txt", "disk.E01!/blob.bin"}
    assert len(files) == 4 and live < set(files)
    # FAT overwrites the first letter of a deleted name
    (dead,) = set(files) - live
    assert dead.lower().endswith("one.bin")
    by_hash = {sha256(_content(e)): e for e in files.values()}
    assert set(by_hash) == {sha256(d) for d in FAT_FILES.values()}
    gone = by_hash[sha256(FAT_FILES["gone.bin"])]
    assert gone.extra is not None and gone.extra["deleted"] is True
    for name in ("DCIM/photo.jpg", "blob.bin"):
        e = entries[f"disk.E01!/{name}"]
        assert e.extra is not None and e.extra["deleted"] is False
        assert e.extra["fs"]["inode"] > 0 and e.extra["fs"]["modified"] is not None
        # written minutes ago (FAT keeps local time: a day either way covers any zone)
        assert abs(e.extra["fs"]["modified"] - time.time()) < 2 * 86400
        assert e.depth == 1 and e.container == "disk.E01"
    img = entries["disk.E01"]
    assert img.archive_kind == "ewf" and img.error is None and img.members == 4
    info = img.extra["image"]  # type: ignore[index]
    assert info["verified"] is True
    raw_bytes = raw.read_bytes()
    assert info["stored_hashes"]["md5"] == hashlib.md5(raw_bytes).hexdigest()
    assert info["read_hashes"]["sha1"] == hashlib.sha1(raw_bytes).hexdigest()
    assert info["media_size"] == len(raw_bytes)
    assert info["volumes"] == [{"label": "", "file_system": "FAT"}]


def test_e01_whose_media_was_altered_reports_a_hash_mismatch(tmp_path: Path) -> None:
    raw = fat_volume(tmp_path / "fat.raw", {"blob.bin": _noise(5, 40_000)})
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(raw, ev / "bad", compress="none")
    data = bytearray(image.read_bytes())
    # a byte of the file's tail: a chunk past the one holding the boot sector and the FAT
    at = data.find(_noise(5, 40_000)[-64:])
    assert at > 0
    data[at + 10] ^= 0xFF
    image.write_bytes(bytes(data))
    entries = _by_path(list(walk(image)))
    img = entries["bad.E01"]
    assert img.error is not None and img.error.startswith("image hash mismatch: stored MD5")
    assert img.extra is not None and img.extra["image"]["verified"] is False
    assert "bad.E01!/blob.bin" in entries  # what was listed stays listed


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_raw_disk_with_a_partition_table_holds_two_file_systems(tmp_path: Path, label: str) -> None:
    fat = {"a/one.jpg": _photo(7, 128), "two.bin": _noise(8, 9000)}
    ext = {"x.bin": _noise(9, 20_000), "sub/y.bin": _noise(10, 3000), "gone.bin": _noise(11, 4000)}
    p1 = fat_volume(tmp_path / "p1.raw", fat, size=4 * MiB)
    p2 = ext_volume(tmp_path / "p2.raw", ext, deleted=("gone.bin",))
    ev = tmp_path / "ev"
    ev.mkdir()
    disk = partitioned(ev / "disk.dd", label, [p1, p2])
    entries = _by_path(list(walk(disk)))
    expect = {f"disk.dd!/p1/{k}": v for k, v in fat.items()}
    expect |= {f"disk.dd!/p2/{k}": v for k, v in ext.items()}
    for path, data in expect.items():
        assert sha256(_content(entries[path])) == sha256(data), path
    assert entries["disk.dd!/p2/gone.bin"].extra["deleted"] is True  # type: ignore[index]
    assert entries["disk.dd!/p2/x.bin"].extra["deleted"] is False  # type: ignore[index]
    img = entries["disk.dd"]
    assert img.archive_kind == "raw" and img.error is None
    vols = {v["label"]: v.get("file_system") for v in img.extra["image"]["volumes"]}  # type: ignore[index]
    assert vols == {"p1": "FAT", "p2": "EXT"}
    assert set(entries) - set(expect) == {"disk.dd"}


@pytest.fixture(scope="module")
def ntfs_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ntfs")
    files = {"n.bin": _noise(12, 9000), "pic.jpg": _photo(13, 96), "n.bin:hidden": _photo(14, 64)}
    return ntfs_volume(d / "ntfs.raw", files)


@pytest.mark.parametrize(
    ("fmt", "name", "kind"),
    [
        ("vpc", "disk.vhd", "vhd"),
        ("vhdx", "disk.vhdx", "vhdx"),
        ("vmdk", "disk.vmdk", "vmdk"),
        ("qcow2", "disk.qcow2", "qcow"),
    ],
)
def test_virtual_disks_of_an_ntfs_volume_are_walked(
    ntfs_raw: Path, tmp_path: Path, fmt: str, name: str, kind: str
) -> None:
    disk = converted(ntfs_raw, fmt, tmp_path / name)
    entries = _by_path(list(walk(disk)))
    assert entries[name].archive_kind == kind and entries[name].error is None
    assert sha256(_content(entries[f"{name}!/n.bin"])) == sha256(_noise(12, 9000))
    assert sha256(_content(entries[f"{name}!/pic.jpg"])) == sha256(_photo(13, 96))
    # NTFS's own metadata files are files of the volume and get records too
    assert f"{name}!/$MFT" in entries
    # an alternate data stream is content of its own, named after its file
    stream = entries[f"{name}!/n.bin:hidden"]
    assert sha256(_content(stream)) == sha256(_photo(14, 64))
    assert stream.extra is not None and stream.extra["fs"]["stream"] == "hidden"
    by_ref = _by_path(list(walk(disk, disk=DiskImageSettings(inline_bytes=100))))
    for path, data in ((f"{name}!/n.bin:hidden", _photo(14, 64)), (f"{name}!/n.bin", None)):
        assert by_ref[path].ref is not None
        assert _content(by_ref[path]) == (data or _noise(12, 9000))


def test_encrypted_volume_is_skipped_naming_luks_unless_its_key_is_given(tmp_path: Path) -> None:
    vol = luks_volume(tmp_path / "secret.img", "correct horse")

    def walked(keys: list[str]) -> dict[str, Entry]:
        return _by_path(list(walk(vol, disk=DiskImageSettings(keys=keys))))

    locked = walked([])["secret.img!/volume"]
    assert locked.skipped == ("encrypted volume (LUKS): no key given; give a key with --volume-key")
    wrong = walked(["battery staple"])["secret.img!/volume"]
    assert wrong.skipped is not None and "none of the keys given opens it" in wrong.skipped
    opened = walked(["battery staple", "correct horse"])
    # unlocked: what lies inside is scanned (here random bytes, no file system)
    assert opened["secret.img!/volume"].skipped is not None
    assert "no file system" in opened["secret.img!/volume"].skipped
    vols = opened["secret.img"].extra["image"]["volumes"]  # type: ignore[index]
    assert vols[0]["encryption"] == "LUKS" and vols[0]["unlocked"] is True


def test_second_segment_of_a_split_e01_gets_a_record_and_is_not_opened_alone(
    tmp_path: Path,
) -> None:
    raw = fat_volume(tmp_path / "fat.raw", {"blob.bin": _noise(14, 3 * MiB)})
    ev = tmp_path / "ev"
    ev.mkdir()
    e01(raw, ev / "split", compress="none", segment="1MiB")
    names = sorted(p.name for p in ev.iterdir())
    assert names[:2] == ["split.E01", "split.E02"]
    entries = _by_path(list(walk(ev)))
    assert sha256(_content(entries["split.E01!/blob.bin"])) == sha256(_noise(14, 3 * MiB))
    second = entries["split.E02"]
    assert second.error is None and second.members == 0
    assert second.extra == {"image": {"format": "ewf", "segment": 2}}
    assert entries["split.E01"].extra["image"]["verified"] is True  # type: ignore[index]


def test_file_larger_than_the_member_cap_is_streamed_by_reference(tmp_path: Path) -> None:
    big = _noise(15, 16 * MiB)
    raw = fat_volume(tmp_path / "fat.raw", {"big.bin": big, "small.bin": b"x" * 100}, size=24 * MiB)
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(raw, ev / "disk")
    limits = Limits(max_member_bytes=1 * MiB)
    disk = DiskImageSettings(inline_bytes=256 * 1024)
    entries = _by_path(list(walk(image, limits, disk=disk)))
    member = entries["disk.E01!/big.bin"]
    assert member.data is None and member.error is None and isinstance(member.ref, ImageRef)
    assert entries["disk.E01!/small.bin"].data == b"x" * 100
    # the reference travels to other processes as a few hundred bytes, not the file
    ref = pickle.loads(pickle.dumps(member.ref))
    assert len(pickle.dumps(member.ref)) < 4096
    tracemalloc.start()
    try:
        digests, _head, kept = hash_source(ref, keep_up_to=0)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digests.sha256 == sha256(big) and kept is None
    assert peak < 6 * MiB, f"hashing a 16 MiB file held {peak} bytes at once"


def _triage_rows(
    evidence: Path, case: Path, **settings: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    s = Settings(engine="local", models=False, workers=1, **settings)
    summary = triage(evidence, case, settings=s)
    store = CaseStore(case, create=False)
    try:
        return {r["path"]: r for r in records(store)}, summary.to_dict()
    finally:
        store.close()


def test_triage_of_a_folder_with_an_image_writes_deleted_fs_and_image_fields(
    tmp_path: Path, fat_e01: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from heroes.pipeline import identify

    # files past KEEP_BYTES go to the decode processes as references, not bytes
    monkeypatch.setattr(identify, "KEEP_BYTES", 256 * 1024)
    image, _raw = fat_e01
    ev = tmp_path / "seizure"
    ev.mkdir()
    os.link(image, ev / "disk.E01")
    (ev / "loose.jpg").write_bytes(_photo(20, 64))
    big = _photo(21, 1400)
    assert len(big) > 600 * 1024
    raw2 = fat_volume(tmp_path / "f2.raw", {"DCIM/big.jpg": big}, size=8 * MiB)
    e01(raw2, ev / "phone")
    rows, summary = _triage_rows(
        ev,
        tmp_path / "case",
        limits=Limits(max_member_bytes=512 * 1024),
        disk=DiskImageSettings(inline_bytes=128 * 1024),
    )
    assert list(RECORD_FIELDS[-3:]) == ["deleted", "fs", "image"]
    photo = rows["disk.E01!/DCIM/photo.jpg"]
    assert photo["status"] == "ok" and photo["sha256"] == sha256(FAT_FILES["DCIM/photo.jpg"])
    assert photo["media_type"] == "image" and photo["pdq"] is not None
    assert photo["deleted"] is False and photo["fs"]["inode"] > 0
    gone = [r for r in rows.values() if r["sha256"] == sha256(FAT_FILES["gone.bin"])]
    assert len(gone) == 1 and gone[0]["deleted"] is True
    # a photo larger than the member cap, read by reference by the decode worker
    big_row = rows["phone.E01!/DCIM/big.jpg"]
    assert big_row["status"] == "ok" and big_row["sha256"] == sha256(big)
    assert big_row["width"] == 1400 and big_row["pdq"] is not None
    img = rows["disk.E01"]
    assert img["archive_kind"] == "ewf" and img["media_type"] == "archive"
    assert img["image"]["verified"] is True and img["deleted"] is None
    assert rows["loose.jpg"]["fs"] is None and rows["loose.jpg"]["deleted"] is None
    json.dumps(list(rows.values()))  # the export stays JSON
    assert summary["errors"] == {}
    # a second run resumes: the images are not opened again
    rows2, summary2 = _triage_rows(ev, tmp_path / "case")
    assert summary2["new"] == 0 and rows2.keys() == rows.keys()


def test_image_hash_mismatch_reaches_the_record_and_the_summary(tmp_path: Path) -> None:
    raw = fat_volume(tmp_path / "fat.raw", {"blob.bin": _noise(30, 40_000)})
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(raw, ev / "bad", compress="none")
    data = bytearray(image.read_bytes())
    at = data.find(_noise(30, 40_000)[-64:])
    data[at + 10] ^= 0xFF
    image.write_bytes(bytes(data))
    rows, summary = _triage_rows(image, tmp_path / "case")
    assert rows["bad.E01"]["status"] == "error"
    assert rows["bad.E01"]["error"].startswith("image hash mismatch")
    assert summary["errors"] == {"image hash mismatch": 1}


# --------------------------------------------------------------------------------------------------
# recognising images


def _sector(offset_bytes: dict[int, bytes], size: int = SNIFF_BYTES) -> bytes:
    buf = bytearray(size)
    for off, data in offset_bytes.items():
        buf[off : off + len(data)] = data
    return bytes(buf)


def test_volumes_and_partition_tables_are_recognised_as_raw_images(
    tmp_path: Path, ntfs_raw: Path
) -> None:
    fat = fat_volume(tmp_path / "f.raw", {"a.txt": b"a"}, size=2 * MiB)
    ext = ext_volume(tmp_path / "e.raw", {"a.txt": b"a"}, size=2 * MiB)
    disk = partitioned(tmp_path / "d.raw", "dos", [fat])
    gpt = partitioned(tmp_path / "g.raw", "gpt", [fat])
    luks = luks_volume(tmp_path / "l.raw", "pw", size=4 * MiB)
    for path in (fat, ext, disk, gpt, luks, ntfs_raw):
        with open(path, "rb") as f:
            assert sniff(f.read(SNIFF_BYTES)).archive_kind == "raw", path.name


def test_ordinary_files_are_not_taken_for_disk_images() -> None:
    import io
    import zipfile

    from skimage import data as samples

    buf = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buf, "JPEG")
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.txt", "x" * 5000)
    for head in (buf.getvalue(), z.getvalue(), b"plain text\n" * 400, bytes(SNIFF_BYTES)):
        assert sniff(head[:SNIFF_BYTES]).archive_kind not in ("raw", "ewf"), head[:8]
    # a boot signature alone, over junk where the partition table would be, is not enough
    junk = _sector({446: b"\x13" * 64, 510: b"\x55\xaa"})
    assert not raw_disk_image(junk)
    # nor one ext magic at 1080 with an impossible superblock around it
    assert not raw_disk_image(_sector({1080: b"\x53\xef", 1048: b"\xff\xff\xff\xff"}))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(min_size=0, max_size=SNIFF_BYTES))
def test_random_bytes_are_never_a_raw_disk_image(head: bytes) -> None:
    assert not raw_disk_image(head)


@pytest.mark.slow
def test_ray_engine_reads_files_inside_an_image_by_reference_like_the_local_engine(
    tmp_path: Path, fat_e01: tuple[Path, Path]
) -> None:
    pytest.importorskip("ray")
    from heroes.config import RaySettings

    ev = tmp_path / "seizure"
    ev.mkdir()
    big = _photo(40, 1400)
    raw = fat_volume(tmp_path / "f.raw", {"DCIM/big.jpg": big, "small.txt": b"hi"}, size=8 * MiB)
    e01(raw, ev / "phone")
    os.link(fat_e01[0], ev / "disk.E01")
    common: dict[str, Any] = dict(
        models=False,
        limits=Limits(max_member_bytes=512 * 1024),
        disk=DiskImageSettings(inline_bytes=128 * 1024),
    )
    keep = ("path", "status", "error", "sha256", "media_type", "pdq", "deleted", "fs", "image")
    out = {}
    for engine in ("local", "ray"):
        s = Settings(engine=engine, ray=RaySettings(cpus=2), **common)
        triage(ev, tmp_path / f"case-{engine}", settings=s)
        store = CaseStore(tmp_path / f"case-{engine}", create=False)
        try:
            out[engine] = sorted(
                tuple(json.dumps(r[k], sort_keys=True) for k in keep) for r in records(store)
            )
        finally:
            store.close()
    assert out["ray"] == out["local"]
    big_row = [r for r in out["ray"] if json.loads(r[0]) == "phone.E01!/DCIM/big.jpg"]
    assert json.loads(big_row[0][3]) == sha256(big) and json.loads(big_row[0][5]) is not None


def test_archives_inside_an_image_are_opened_small_or_referenced(tmp_path: Path) -> None:
    import io
    import zipfile

    def album(seed: int, n: int) -> bytes:
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("inner/pic.jpg", _photo(seed, 64))
            zf.writestr("inner/pad.bin", _noise(seed, n))
        return z.getvalue()

    small, large = album(50, 1000), album(51, 400_000)
    raw = fat_volume(tmp_path / "f.raw", {"small.zip": small, "docs/large.zip": large})
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(raw, ev / "disk")
    entries = _by_path(list(walk(image, disk=DiskImageSettings(inline_bytes=100_000))))
    assert entries["disk.E01!/docs/large.zip"].ref is not None
    for name, seed in (("small.zip", 50), ("docs/large.zip", 51)):
        arc = entries[f"disk.E01!/{name}"]
        assert arc.archive_kind == "zip" and arc.members == 2 and arc.error is None
        pic = entries[f"disk.E01!/{name}!/inner/pic.jpg"]
        assert pic.data == _photo(seed, 64) and pic.depth == 2


def test_file_systems_tsk_cannot_read_are_listed_through_dfvfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heroes.pipeline import diskimage

    fat = {"a/one.jpg": _photo(60, 96), "two.bin": _noise(61, 9000)}
    ext = {"x.bin": _noise(62, 20_000), "sub/y.bin": _noise(63, 3000)}
    p1 = fat_volume(tmp_path / "p1.raw", fat, size=4 * MiB)
    p2 = ext_volume(tmp_path / "p2.raw", ext)
    disk = partitioned(tmp_path / "disk.dd", "gpt", [p1, p2])
    via_tsk = _by_path(list(walk(disk)))
    monkeypatch.setattr(diskimage, "_TSK_FILE_SYSTEMS", set())
    entries = _by_path(list(walk(disk, disk=DiskImageSettings(inline_bytes=8000))))
    expect = {f"disk.dd!/p1/{k}": v for k, v in fat.items()}
    expect |= {f"disk.dd!/p2/{k}": v for k, v in ext.items()}
    for path, data in expect.items():
        e = entries[path]
        assert sha256(_content(e)) == sha256(data), path
        assert e.extra is not None and e.extra["deleted"] is False
        assert e.extra["fs"]["modified"] is not None
        tsk_fs = via_tsk[path].extra["fs"]  # type: ignore[index]
        # both back ends read the same ext times and inode numbers (dfVFS's FAT back end puts
        # FAT dates a month late here, one reason FAT goes through The Sleuth Kit)
        if path.startswith("disk.dd!/p2/"):
            assert e.extra["fs"]["inode"] == tsk_fs["inode"]
            assert e.extra["fs"]["modified"] == pytest.approx(tsk_fs["modified"], abs=1e-6)
    # references through dfVFS's own back ends work too (x.bin is larger than inline_bytes)
    assert isinstance(entries["disk.dd!/p2/x.bin"].ref, ImageRef)
    assert entries["disk.dd!/p2/x.bin"].ref.inode is None


def test_truncated_and_corrupt_images_become_records_not_crashes(tmp_path: Path) -> None:
    fat = {"keep.bin": _noise(70, 9000)}
    ext = {"x.bin": _noise(71, 20_000)}
    p1 = fat_volume(tmp_path / "p1.raw", fat, size=4 * MiB)
    p2 = ext_volume(tmp_path / "p2.raw", ext)
    ev = tmp_path / "ev"
    ev.mkdir()
    disk = partitioned(ev / "cut.dd", "dos", [p1, p2])
    # the acquisition stopped just inside the second partition: its superblock is missing
    with open(disk, "r+b") as f:
        f.truncate(6 * MiB + 512)
    (ev / "junk.E01").write_bytes(b"EVF\x09\x0d\x0a\xff\x00\x01\x01\x00" + _noise(72, 5000))
    entries = _by_path(list(walk(ev)))
    assert sha256(_content(entries["cut.dd!/p1/keep.bin"])) == sha256(fat["keep.bin"])
    p2 = [e for p, e in entries.items() if p.startswith("cut.dd!/p2")]
    assert [e.path for e in p2] == ["cut.dd!/p2"] and p2[0].error is not None
    assert p2[0].error.startswith("file system not readable")
    assert entries["cut.dd"].error is None
    junk = entries["junk.E01"]
    assert junk.archive_kind == "ewf" and junk.error is not None
    assert junk.error.startswith("corrupt ewf")


def _png(seed: int, size: int = 48) -> bytes:
    import io

    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_carving_finds_photos_and_videos_in_unallocated_space_once(tmp_path: Path) -> None:
    from test_video import make_video

    clip = make_video(seconds=2)
    live, gone = _photo(80, 64), _photo(81, 64)
    lost = {"jpeg": _photo(82, 300), "png": _png(83), "mp4": make_video(seconds=1, gop=5)}
    raw = fat_volume(
        tmp_path / "v.raw",
        {"live.jpg": live, "gone.jpg": gone, "clip.mp4": clip},
        deleted=("gone.jpg",),
    )
    # files whose names and metadata are gone: only their bytes remain, in free clusters
    with open(raw, "r+b") as f:
        for k, data in enumerate(lost.values()):
            f.seek((5 + k) * MiB + 77 * k)
            f.write(data)
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(raw, ev / "disk")
    rows, summary = _triage_rows(
        image, tmp_path / "case", disk=DiskImageSettings(carve=True, inline_bytes=16 * 1024)
    )
    carved = {r["sha256"]: r for r in rows.values() if (r["fs"] or {}).get("carved")}
    assert set(carved) == {sha256(d) for d in lost.values()}
    for kind, data in lost.items():
        r = carved[sha256(data)]
        assert r["path"].startswith("disk.E01!/$Carved/") and r["deleted"] is True
        assert r["status"] == "ok" and r["fs"]["offset"] > 0
        assert r["media_type"] == ("video" if kind == "mp4" else "image")
    # live and deleted files are not carved again
    assert sum(r["sha256"] == sha256(gone) for r in rows.values()) == 1
    assert sum(r["sha256"] == sha256(live) for r in rows.values()) == 1
    # a video larger than inline_bytes, decoded through its stream inside the image
    video = rows["disk.E01!/clip.mp4"]
    assert video["status"] == "ok" and video["media_type"] == "video"
    assert video["video"]["keyframes"] and video["video"]["duration"] == pytest.approx(2, abs=0.3)
    assert rows["disk.E01"]["image"]["volumes"][0]["carved"] == 3
    assert summary["errors"] == {}


def test_carving_keeps_complete_structures_only_across_window_edges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heroes.pipeline import carve as carving

    monkeypatch.setattr(carving, "_WINDOW", 4096)
    whole, cut = _photo(90, 120), _photo(91, 120)
    space = bytearray(_noise(92, 60_000))
    space[4090 : 4090 + len(whole)] = whole  # its signature straddles the first window edge
    at_cut = 4090 + len(whole) + 1000
    space[at_cut : at_cut + len(cut) - 50] = cut[:-50]  # no end-of-image marker
    space = bytes(space)

    def read(offset: int, length: int) -> bytes:
        return space[offset : offset + length]

    found = list(carving.carve(read, [(0, len(space))], cap=1 * MiB))
    assert [(c.offset, c.kind, c.data) for c in found] == [(4090, "jpeg", whole)]
    # a cap smaller than the file: not carved rather than cut
    assert list(carving.carve(read, [(0, len(space))], cap=len(whole) - 1)) == []
    assert carving.free_ranges([(10, 5), (12, 10), (40, 10)], 60) == [(0, 10), (22, 40), (50, 60)]


def test_cli_triage_of_an_e01_leaves_it_untouched_and_never_stores_the_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heroes.cli import app

    p1 = fat_volume(tmp_path / "p1.raw", {"DCIM/a.jpg": _photo(100, 96)}, size=4 * MiB)
    p2 = luks_volume(tmp_path / "p2.raw", "tr0ub4dor&3", size=4 * MiB)
    disk = partitioned(tmp_path / "disk.raw", "gpt", [p1, p2])
    ev = tmp_path / "ev"
    ev.mkdir()
    image = e01(disk, ev / "laptop")
    before = (sha256(image.read_bytes()), image.stat().st_mtime_ns)
    case = tmp_path / "case"
    args = ["triage", str(image), "--case", str(case), "--engine", "local", "--no-models"]
    result = CliRunner().invoke(app, [*args, "--json", "--volume-key", "tr0ub4dor&3", "--carve"])
    assert result.exit_code == 0, result.output
    # the summary counts reasons of skipped records too: only the unlocked, empty volume
    assert json.loads(result.stdout)["errors"] == {
        "no file system recognised in this volume (unallocated or unknown)": 1
    }
    out = tmp_path / "items.jsonl"
    exported = CliRunner().invoke(app, ["export", str(case), "--format", "jsonl", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["laptop.E01!/p1/DCIM/a.jpg"]["sha256"] == sha256(_photo(100, 96))
    vols = {v["label"]: v for v in rows["laptop.E01"]["image"]["volumes"]}
    assert vols["p2"]["encryption"] == "LUKS" and vols["p2"]["unlocked"] is True
    assert rows["laptop.E01!/p2"]["status"] == "skipped"  # unlocked, but random bytes inside
    assert rows["laptop.E01"]["image"]["verified"] is True
    assert (sha256(image.read_bytes()), image.stat().st_mtime_ns) == before
    for f in case.rglob("*"):
        if f.is_file():
            assert b"tr0ub4dor" not in f.read_bytes(), f


def test_files_inside_a_luks_volume_are_read_with_its_key_in_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diskimages import luks_holding

    from heroes.pipeline import identify

    # files past KEEP_BYTES go to the decode processes as references, not bytes
    monkeypatch.setattr(identify, "KEEP_BYTES", 1024)

    big, small = _photo(110, 700), b"notes inside\n"
    inner = fat_volume(tmp_path / "inner.raw", {"DCIM/big.jpg": big, "notes.txt": small})
    ev = tmp_path / "ev"
    ev.mkdir()
    # no extension: a raw image is recognised by its content, whatever its name
    luks_holding(ev / "sdb", inner, "hunter2")
    rows, summary = _triage_rows(
        ev / "sdb",
        tmp_path / "case",
        disk=DiskImageSettings(keys=["wrong", "hunter2"], inline_bytes=64 * 1024),
    )
    assert summary["errors"] == {}, [r["error"] for r in rows.values()]
    # decoded in a worker process that reopened the volume with the key from the reference
    assert rows["sdb!/DCIM/big.jpg"]["sha256"] == sha256(big) and len(big) > 64 * 1024
    assert rows["sdb!/DCIM/big.jpg"]["width"] == 700 and rows["sdb!/DCIM/big.jpg"]["pdq"]
    assert rows["sdb!/notes.txt"]["sha256"] == sha256(small)
    vol = rows["sdb"]["image"]["volumes"][0]
    assert vol == {"label": "", "encryption": "LUKS", "unlocked": True, "file_system": "FAT"}


def test_split_raw_image_is_joined_from_its_first_segment(tmp_path: Path) -> None:
    data = _noise(120, 3 * MiB)
    raw = fat_volume(tmp_path / "v.raw", {"big.bin": data}, size=8 * MiB)
    whole = raw.read_bytes()
    ev = tmp_path / "ev"
    ev.mkdir()
    half = len(whole) // 2
    (ev / "usb.001").write_bytes(whole[:half])
    (ev / "usb.002").write_bytes(whole[half:])
    entries = _by_path(list(walk(ev)))
    assert sha256(_content(entries["usb.001!/big.bin"])) == sha256(data)
    assert entries["usb.001"].extra["image"]["media_size"] == len(whole)  # type: ignore[index]
    # the second segment is a file of its own (hashed), not an image
    assert entries["usb.002"].archive_kind is None and entries["usb.002"].error is None
