"""Hostile seizures: every file one record with a unique path, bounded work, evidence untouched.

Each seizure is built inside its test from a few bytes; nothing here is a large fixture.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from seizures import jpeg

from heroes.config import Limits, Settings
from heroes.pipeline.discover import walk
from heroes.pipeline.report import records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore

HERE = Path(__file__).resolve().parent


def _rows(case: Path) -> list[dict]:
    store = CaseStore(case, create=False)
    try:
        return list(records(store))
    finally:
        store.close()


def _settings(**kw: object) -> Settings:
    return Settings(workers=1, models=False, **kw)  # type: ignore[arg-type]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def _colliding_seizure(ev: Path) -> tuple[Path, bytes]:
    """A tar with a repeated member (as ``tar -r`` leaves it), ``a.zip!/b`` on disk beside member
    ``b`` of ``a.zip``, and a name with byte 0xff beside one spelled ``\\xff``. Returns the root
    and the content of the repeated member's second copy (the one a resume used to drop)."""
    ev.mkdir()
    newer = b"second copy, known bad"
    (ev / "r.tar").write_bytes(_tar([("x.txt", b"first copy"), ("x.txt", newer)]))
    (ev / "a.zip").write_bytes(_zip([("b", b"member b")]))
    (ev / "a.zip!").mkdir()
    (ev / "a.zip!" / "b").write_bytes(b"disk b")
    (ev / "n").mkdir()
    raw = os.fsencode(ev / "n") + b"/\xff"
    os.mkdir(raw)
    with open(raw + b"/f", "wb") as f:
        f.write(b"byte ff")
    (ev / "n" / "\\xff").mkdir()
    (ev / "n" / "\\xff" / "f").write_bytes(b"backslash x f f")
    return ev, newer


def test_colliding_names_each_get_a_record_with_a_distinct_path(tmp_path: Path) -> None:
    ev, newer = _colliding_seizure(tmp_path / "ev")
    hs = tmp_path / "bad.txt"
    hs.write_text(hashlib.md5(newer).hexdigest() + "\n")
    case = tmp_path / "case"
    first = triage(ev, case, settings=_settings(), hashsets=[hs])
    rows = _rows(case)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))
    assert sorted(paths) == sorted(
        [
            "r.tar",
            "r.tar!/x.txt",
            "r.tar!/x.txt\\#2",
            "a.zip",
            "a.zip!/b",
            "a.zip\\x21/b",
            "n/\\xff/f",
            "n/\\x5cxff/f",
        ]
    )
    by_path = {r["path"]: r for r in rows}
    assert by_path["r.tar!/x.txt\\#2"]["known_match"]["method"] == "md5"
    assert by_path["r.tar!/x.txt"]["known_match"] is None
    assert by_path["a.zip\\x21/b"]["container"] is None
    assert by_path["a.zip!/b"]["container"] == "a.zip"
    assert first.new == len(rows)
    again = triage(ev, case, settings=_settings())
    assert again.new == 0 and again.updated == 0
    assert len(_rows(case)) == len(rows)


def test_a_repeated_member_is_walked_in_both_copies_when_resumed_after_a_partial_run(
    tmp_path: Path,
) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "r.tar").write_bytes(_tar([("x", b"1"), ("x", b"2"), ("x", b"3")]))
    case = tmp_path / "case"
    triage(ev, case, settings=_settings())
    store = CaseStore(case)
    try:
        # as after a kill: the archive is not marked complete and one member is missing
        with store.session() as s, s.begin():
            from sqlalchemy import delete, update

            from heroes.store.schema import ItemRow

            s.execute(update(ItemRow).values(archive_complete=False))
            s.execute(delete(ItemRow).where(ItemRow.path == "r.tar!/x\\#2"))
    finally:
        store.close()
    again = triage(ev, case, settings=_settings())
    assert again.new == 1
    sizes = {r["path"]: r["sha256"] for r in _rows(case)}
    assert sizes["r.tar!/x\\#2"] == hashlib.sha256(b"2").hexdigest()
    assert sizes["r.tar!/x\\#3"] == hashlib.sha256(b"3").hexdigest()


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("dir!/x", "dir\\x21/x"),
        ("end!", "end\\x21"),
        ("mid!dle", "mid!dle"),
        ("back\\slash", "back\\x5cslash"),
        ("bell\x07\x1b[2J", "bell\\x07\\x1b[2J"),
        ("csi\u009b", "csi\\xc2\\x9b"),
    ],
)
def test_member_names_are_escaped_so_separators_and_escapes_mean_one_thing(
    tmp_path: Path, name: str, shown: str
) -> None:
    arc = tmp_path / "m.zip"
    arc.write_bytes(_zip([(name, b"x")]))
    paths = [e.path for e in walk(arc)]
    assert paths == [f"m.zip!/{shown}", "m.zip"]


def test_an_empty_member_name_does_not_stop_the_walk_of_its_zip(tmp_path: Path) -> None:
    arc = tmp_path / "e.zip"
    arc.write_bytes(_zip([("a", b"1"), ("", b"2"), ("c", b"3")]))
    entries = list(walk(arc))
    assert [e.path for e in entries] == ["e.zip!/a", "e.zip!/", "e.zip!/c", "e.zip"]
    assert entries[-1].error is None and entries[-1].members == 3
    assert entries[1].data == b"2"


def test_walk_limits_default_is_used_when_none_given(tmp_path: Path) -> None:
    arc = tmp_path / "t.tar"
    arc.write_bytes(_tar([("a", b"1")]))
    assert [e.path for e in walk(arc, Limits())] == ["t.tar!/a", "t.tar"]


def test_a_jpeg_with_a_zip_appended_is_an_image_and_its_members_are_recorded(
    tmp_path: Path,
) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "poly.jpg").write_bytes(jpeg(1) + _zip([("inner.txt", b"hidden"), ("i.jpg", jpeg(2))]))
    case = tmp_path / "case"
    triage(ev, case, settings=_settings())
    rows = {r["path"]: r for r in _rows(case)}
    assert set(rows) == {"poly.jpg", "poly.jpg!/inner.txt", "poly.jpg!/i.jpg"}
    poly = rows["poly.jpg"]
    assert poly["media_type"] == "image" and poly["status"] == "ok" and poly["pdq"]
    assert poly["archive_kind"] == "zip" and poly["members"] == 2
    assert rows["poly.jpg!/i.jpg"]["pdq"]


def test_ctrl_c_never_commits_a_copy_whose_original_is_still_decoding(tmp_path: Path) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys

    from crash_hook import SLOW_MARKER
    from PIL import Image
    from seizures import first_rows

    ev = tmp_path / "ev"
    ev.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "JPEG", comment=SLOW_MARKER)
    (ev / "a_original.jpg").write_bytes(buf.getvalue())
    (ev / "b_copy.jpg").write_bytes(buf.getvalue())
    # enough quick files after the copy that a batch of rows is committed while the original
    # is still in its (slow) decode
    for i in range(600):
        (ev / f"c{i:04d}.txt").write_bytes(f"note {i}".encode())
    case = tmp_path / "case"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])]),
        "HEROES_DECODE_HOOK": "crash_hook:slow_on_marker",
        "HEROES_MODELS": "false",
        "HEROES_ENGINE": "local",
    }
    cmd = [sys.executable, "-m", "heroes.cli", "triage", str(ev), "--case", str(case), "--json"]
    cmd += ["--workers", "1"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert first_rows(proc, case / "case.db", timeout=60) > 0
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with sqlite3.connect(case / "case.db") as c:
        dangling = c.execute(
            "select path from items where duplicate_of is not null "
            "and duplicate_of not in (select id from items)"
        ).fetchall()
    assert dangling == []
    env.pop("HEROES_DECODE_HOOK")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = {r["path"]: r for r in _rows(case)}
    assert len(rows) == 602
    assert rows["a_original.jpg"]["status"] == "ok" and rows["a_original.jpg"]["pdq"]
    assert rows["b_copy.jpg"]["duplicate_of"] == rows["a_original.jpg"]["item_id"]
