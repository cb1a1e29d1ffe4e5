"""Items are read again from the evidence the walker's way: below the root only, no symlinks or
fifos, archive members through the same openers; and a video's frame at a given time."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heroes.demo import jpeg_bytes, sample_photos, video_bytes
from heroes.pipeline.discover import Unreadable, open_item, walk
from heroes.pipeline.video import frame_at


@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    root = tmp_path / "ev"
    (root / "dir").mkdir(parents=True)
    photos = sample_photos()
    (root / "dir" / "a.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        data = jpeg_bytes(photos["chelsea"])
        ti = tarfile.TarInfo("deep/c.jpg")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with zipfile.ZipFile(root / "b.zip", "w") as zf:
        zf.writestr("x/inner.tar.gz", inner.getvalue())
        zf.writestr("../../up.txt", b"a name pointing outside")
    os.symlink("/etc/hostname", root / "link.jpg")
    os.mkfifo(root / "pipe.jpg")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    return root


def test_every_item_the_walker_read_can_be_opened_again(evidence: Path) -> None:
    entries = [e for e in walk(evidence) if e.error is None and e.skipped is None]
    assert {e.path for e in entries} >= {
        "dir/a.jpg",
        "b.zip!/x/inner.tar.gz!/deep/c.jpg",
        "b.zip!/../../up.txt",
    }
    for e in entries:
        with open_item(evidence, e.path) as f:
            data = f.read()
        want = e.data if e.data is not None else (evidence / e.path).read_bytes()
        assert data == want, e.path


@pytest.mark.parametrize(
    "path",
    [
        "../outside.jpg",
        "dir/../../outside.jpg",
        "/etc/hostname",
        "link.jpg",
        "pipe.jpg",
        "dir",
        "",
        "b.zip!/nope.jpg",
        "dir/missing.jpg",
    ],
)
def test_nothing_outside_the_root_or_not_a_regular_file_is_opened(
    evidence: Path, path: str
) -> None:
    with pytest.raises(FileNotFoundError):
        open_item(evidence, path).close()


def test_a_member_of_something_that_is_not_an_archive_is_unreadable(evidence: Path) -> None:
    with pytest.raises(Unreadable):
        open_item(evidence, "dir/a.jpg!/inner.jpg").close()


def test_a_single_file_root_is_its_own_item(evidence: Path) -> None:
    with open_item(evidence / "dir" / "a.jpg", "a.jpg") as f:
        assert f.read(3) == b"\xff\xd8\xff"
    with pytest.raises(FileNotFoundError):
        open_item(evidence / "dir" / "a.jpg", "other.jpg")


def test_reading_again_leaves_the_evidence_as_it_was(evidence: Path) -> None:
    target = evidence / "dir" / "a.jpg"
    before = os.stat(target)
    with open_item(evidence, "dir/a.jpg") as f:
        f.read()
    after = os.stat(target)
    assert (after.st_mtime_ns, after.st_size, after.st_atime_ns) == (
        before.st_mtime_ns,
        before.st_size,
        before.st_atime_ns,
    )


def test_frame_at_gives_the_frame_shown_at_that_time(tmp_path: Path) -> None:
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((64, 96, 3), np.uint8)
    blue[..., 2] = 220
    clip = video_bytes([(red, 1.0), (blue, 1.0)])
    for t, channel in ((0.0, 0), (0.5, 0), (1.5, 2), (5.0, 2)):
        rgb = frame_at(io.BytesIO(clip), t, working_size=48)
        assert max(rgb.shape[:2]) <= 48
        assert int(np.argmax(rgb.reshape(-1, 3).mean(0))) == channel, t
    with pytest.raises(ValueError):
        frame_at(io.BytesIO(b"not a video"), 0.0)
    Image.fromarray(frame_at(io.BytesIO(clip), 1.5)).verify()
