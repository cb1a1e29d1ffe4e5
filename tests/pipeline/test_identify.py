"""Sniffing by content and one-read hashing."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from heroes.pipeline.identify import SNIFF_BYTES, hash_bytes, hash_file, hash_stream, sniff


def _img(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_images_are_recognised_by_magic_bytes_whatever_their_name() -> None:
    for fmt, mime in [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ]:
        s = sniff(_img(fmt)[:512])
        assert (s.media_type, s.mime) == ("image", mime)


def test_archives_are_recognised_with_their_kind() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a", b"x")
    assert sniff(buf.getvalue()[:512]).archive_kind == "zip"
    tb = io.BytesIO()
    with tarfile.open(fileobj=tb, mode="w") as t:
        info = tarfile.TarInfo("a")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    assert sniff(tb.getvalue()[:512]).archive_kind == "tar"


def test_text_empty_and_random_bytes_are_other() -> None:
    assert sniff(b"hello world\n").mime == "text/plain"
    assert sniff(b"").mime == "application/x-empty"
    noise = np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes()
    assert sniff(noise).media_type == "other"


def test_three_digests_in_one_read_equal_hashlib(tmp_path) -> None:
    data = np.random.default_rng(2).integers(0, 256, 3_000_001, dtype=np.uint8).tobytes()
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    d, head, kept = hash_file(p, chunk=65536, keep_up_to=10_000_000)
    assert d.md5 == hashlib.md5(data).hexdigest()
    assert d.sha1 == hashlib.sha1(data).hexdigest()
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.size == len(data) and head == data[:SNIFF_BYTES] and kept == data
    _, _, not_kept = hash_file(p, keep_up_to=1000)
    assert not_kept is None


@given(st.binary(max_size=5000), st.integers(min_value=4096, max_value=9000))
def test_streamed_hashes_equal_whole_buffer_hashes(data: bytes, chunk: int) -> None:
    d, head, kept = hash_stream(io.BytesIO(data), chunk=chunk, keep_up_to=len(data) + 1)
    assert d == hash_bytes(data)
    assert head == data[:SNIFF_BYTES] and kept == data
    sniff(head)
