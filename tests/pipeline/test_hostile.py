"""Hostile seizures: every file one record with a unique path, bounded work, evidence untouched.

Each seizure is built inside its test from a few bytes; nothing here is a large fixture.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
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


@pytest.mark.parametrize("sent_to", ["process group", "driver alone"])
def test_ctrl_c_never_commits_a_copy_whose_original_is_still_decoding(
    tmp_path: Path, sent_to: str
) -> None:
    """Ctrl-C on a terminal reaches every process of the group; a scheduler's SIGINT may reach
    the driver alone, whose decode workers must then be stopped, not waited for."""
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
        if sent_to == "process group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
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


# --- expansion budgets ----------------------------------------------------------------------------


def _tgz(members: list[tuple[str, bytes]]) -> bytes:
    import gzip

    return gzip.compress(_tar(members), 9)


def _peak(fn: object) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()  # type: ignore[operator]
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sparse_tar_members_are_charged_and_stopped_by_the_ratio_limit(tmp_path: Path) -> None:
    buf = io.BytesIO()
    real = 500 * 1024 * 1024
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(13):
            ti = tarfile.TarInfo(f"hole{i}.bin")
            ti.size = 512
            ti.pax_headers = {"GNU.sparse.map": f"{real - 512},512", "GNU.sparse.size": str(real)}
            tf.addfile(ti, io.BytesIO(b"x" * 512))
        tf.addfile(tarfile.TarInfo("after.txt"), io.BytesIO(b""))
    import gzip

    (tmp_path / "sparse.tgz").write_bytes(gzip.compress(buf.getvalue(), 9))
    assert (tmp_path / "sparse.tgz").stat().st_size < 1000

    entries, peak = _peak(lambda: list(walk(tmp_path / "sparse.tgz")))
    got = {e.path: e for e in entries}  # type: ignore[attr-defined]
    # the holes count as expansion: the first one reaches the archive's ratio limit
    first, archive = got["sparse.tgz!/hole0.bin"], got["sparse.tgz"]
    assert archive.error.startswith("decompression bomb: expansion ratio ")
    assert first.error == f"{archive.error} (header claims {real} bytes)"
    assert first.data is None and first.size is None
    assert peak < 48 * 1024 * 1024


def test_a_sparse_member_alone_is_stopped_by_its_own_ratio(tmp_path: Path) -> None:
    buf = io.BytesIO()
    real = 64 * 1024 * 1024
    stored = b"x" * 512
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        # a large ordinary member keeps the archive as a whole under the ratio limit
        ti = tarfile.TarInfo("filler.bin")
        ti.size = 3 * 1024 * 1024
        tf.addfile(ti, io.BytesIO(os.urandom(ti.size)))
        ti = tarfile.TarInfo("hole.bin")
        ti.size = len(stored)
        ti.pax_headers = {
            "GNU.sparse.map": f"{real - len(stored)},{len(stored)}",
            "GNU.sparse.size": str(real),
        }
        tf.addfile(ti, io.BytesIO(stored))
        ti = tarfile.TarInfo("after.txt")
        ti.size = 5
        tf.addfile(ti, io.BytesIO(b"after"))
    (tmp_path / "s.tar").write_bytes(buf.getvalue())

    got = {e.path: e for e in walk(tmp_path / "s.tar")}

    hole = got["s.tar!/hole.bin"]
    assert hole.error.startswith("sparse tar member bomb: expansion ratio ")
    assert hole.data is None and hole.size is None
    assert got["s.tar!/after.txt"].data == b"after"
    assert got["s.tar"].error is None


def _compounding_bomb() -> bytes:
    """Each level expands under 1 MiB (below the per-archive ratio floor), but 200 copies of a
    ~1 KB .tgz that holds 900 KB of zeros, in a .tgz of a few KB, expand to 180 MB."""
    inner = _tgz([("zeros.bin", bytes(900 * 1024))])
    return _tgz([(f"copy{i:03}.tgz", inner) for i in range(200)])


def test_nested_archives_share_one_budget_per_file_on_disk(tmp_path: Path) -> None:
    (tmp_path / "nest.tgz").write_bytes(_compounding_bomb())
    (tmp_path / "z_after.txt").write_bytes(b"after")
    assert (tmp_path / "nest.tgz").stat().st_size < 4000

    entries = list(walk(tmp_path))

    got = {e.path: e for e in entries}
    outer = got["nest.tgz"]
    assert outer.error is not None
    assert outer.error.startswith("nested-archive expansion budget spent: expansion ratio ")
    assert outer.error.endswith("> 100 over all nested archives")
    # a couple of copies are walked before the cut; the cut member says which budget
    copies = [e for p, e in got.items() if p.count("!/") == 1]
    assert 1 <= len(copies) < 10
    assert any((e.error or "").startswith("nested-archive expansion budget") for e in copies)
    assert "z_after.txt" in got and got["z_after.txt"].error is None


def test_nested_member_budget_counts_members_of_every_level(tmp_path: Path) -> None:
    inner = _tar([(f"m{i}", b"x") for i in range(4)])
    (tmp_path / "n.tar").write_bytes(_tar([("a.tar", inner), ("b.tar", inner), ("c.tar", inner)]))

    got = {e.path: e for e in walk(tmp_path, Limits(max_nested_members=8))}

    assert got["n.tar"].error == "nested-archive member budget spent: > 8 members"
    assert got["n.tar!/a.tar"].members == 4 and got["n.tar!/a.tar"].error is None
    assert got["n.tar!/b.tar"].error == "nested-archive member budget spent: > 8 members"
    assert "n.tar!/c.tar" not in got


def test_evidence_root_budget_cuts_later_archives_with_a_reason(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.tar").write_bytes(_tar([(f"{name}{i}", b"x") for i in range(3)]))

    got = {e.path: e for e in walk(tmp_path, Limits(max_evidence_members=5))}

    assert got["a.tar"].error is None and got["a.tar"].members == 3
    assert got["b.tar"].error == "evidence root member budget spent: > 5 members"
    assert got["b.tar"].members == 2
    assert got["c.tar"].error == "not opened: evidence root member budget spent: > 5 members"
    assert got["c.tar"].members is None


def test_evidence_root_byte_budget_is_shared_by_all_archives(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.tar").write_bytes(_tar([(name, os.urandom(20_000))]))

    got = {e.path: e for e in walk(tmp_path, Limits(max_evidence_bytes=40_000))}

    assert got["a.tar"].error is None
    assert got["b.tar"].error == "evidence root expansion budget spent: > 40000 bytes expanded"


def test_the_pass_leaves_access_times_of_large_files_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_video import make_video

    from heroes.pipeline import identify

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "v.mp4").write_bytes(make_video(seconds=1))
    (ev / "p.jpg").write_bytes(jpeg(3))
    (ev / "a.zip").write_bytes(_zip([("m.txt", b"m")]))
    # every file counts as large: none is kept in memory, each is opened again to decode
    monkeypatch.setattr(identify, "KEEP_BYTES", 0)
    stamps = {}
    for p in ev.iterdir():
        os.utime(p, (1_000_000_000, 1_500_000_000))
        stamps[p.name] = os.stat(p).st_atime
    triage(ev, tmp_path / "case", settings=_settings())
    rows = {r["path"]: r for r in _rows(tmp_path / "case")}
    assert rows["v.mp4"]["video"]["keyframes"] and rows["p.jpg"]["pdq"]
    assert {p.name: os.stat(p).st_atime for p in ev.iterdir()} == stamps


# --- hash sets -----------------------------------------------------------------------------------


def test_a_vics_file_with_a_lone_surrogate_escape_imports(tmp_path: Path) -> None:
    from heroes.pipeline.importsets import import_hashsets

    md5 = hashlib.md5(b"x").hexdigest()
    doc = (
        '{"odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Media",'
        ' "value": [{"MediaID": 1, "Category": 1, "MD5": "MD5HERE", "Series": "a\\ud800b",'
        ' "\\udfff": "key"}]}'
    ).replace("MD5HERE", md5)
    (tmp_path / "v.json").write_text(doc)
    store = CaseStore(tmp_path / "case")
    try:
        ((_name, entries, rejected, new),) = import_hashsets(store, [tmp_path / "v.json"])
        assert (entries, rejected, new) == (1, 0, True)
        ((_meta, entry, _method),) = store.match_exact(md5, None, None)
        assert entry.label == "a\ufffdb"
    finally:
        store.close()


def test_a_hash_list_whose_first_line_is_bad_keeps_the_rest(tmp_path: Path) -> None:
    from heroes.pipeline.hashsets import open_hashset

    good = [hashlib.md5(bytes([i])).hexdigest() for i in range(9)]
    (tmp_path / "l.txt").write_text("\n".join(["not-a-hash", *good]) + "\n")
    info, rows, stats = open_hashset(tmp_path / "l.txt")
    assert [e.md5 for e in rows] == good
    assert stats.rejected == 1 and stats.rejects[0].startswith("line 1: ")


def _nsrl_db(path: Path, view_sql: str) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE METADATA (sha256 TEXT, sha1 TEXT, md5 TEXT, file_name TEXT)")
        for i in range(3):
            d = bytes([i])
            con.execute(
                "INSERT INTO METADATA VALUES (?, ?, ?, ?)",
                (
                    hashlib.sha256(d).hexdigest(),
                    hashlib.sha1(d).hexdigest(),
                    hashlib.md5(d).hexdigest(),
                    f"f{i}",
                ),
            )
        con.execute(view_sql)
    con.close()


def test_an_nsrl_file_view_that_recurses_is_refused(tmp_path: Path) -> None:
    from heroes.pipeline.hashsets import HashSetError, open_hashset

    _nsrl_db(
        tmp_path / "r.db",
        "CREATE VIEW FILE AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT m.sha256, m.sha1, m.md5, m.file_name FROM METADATA m, n",
    )
    with pytest.raises(HashSetError, match="recursive"):
        open_hashset(tmp_path / "r.db")


def test_an_nsrl_file_view_that_multiplies_rows_stops_with_an_error(tmp_path: Path) -> None:
    from heroes.pipeline.hashsets import HashSetError, open_hashset

    _nsrl_db(
        tmp_path / "x.db",
        "CREATE VIEW FILE AS SELECT a.sha256, a.sha1, a.md5, a.file_name "
        "FROM METADATA a, METADATA b, METADATA c",
    )
    _info, rows, _stats = open_hashset(tmp_path / "x.db")
    with pytest.raises(HashSetError, match="more rows than all tables hold"):
        list(rows)
    _nsrl_db(
        tmp_path / "ok.db",
        "CREATE VIEW FILE AS SELECT sha256, sha1, md5, file_name FROM METADATA",
    )
    _info, rows, _stats = open_hashset(tmp_path / "ok.db")
    assert len(list(rows)) == 3


def test_both_engines_write_the_same_records_for_a_hostile_seizure(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from heroes.config import RaySettings

    ev, _newer = _colliding_seizure(tmp_path / "ev")
    (ev / "poly.jpg").write_bytes(jpeg(1) + _zip([("inner.txt", b"hidden"), ("", b"empty")]))
    (ev / "[red]\x1b[2J").write_bytes(jpeg(1))
    by_engine = {}
    for engine in ("local", "ray"):
        s = Settings(engine=engine, models=False, ray=RaySettings(cpus=2))
        assert triage(ev, tmp_path / engine, settings=s).engine == engine
        by_engine[engine] = {r["path"]: r for r in _rows(tmp_path / engine)}
    assert by_engine["ray"] == by_engine["local"]
    shown = by_engine["ray"]["[red]\\x1b[2J"]
    assert shown["status"] == "ok" and shown["pdq"] == by_engine["ray"]["poly.jpg"]["pdq"]
    assert by_engine["ray"]["poly.jpg!/"]["size"] == 5


def test_a_picture_whose_appended_zip_stops_early_is_still_analysed(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "poly.jpg").write_bytes(jpeg(4) + _zip([("a.txt", b"a"), ("b.txt", b"b")]))
    triage(ev, tmp_path / "case", settings=_settings(limits=Limits(max_members=1)))
    rows = {r["path"]: r for r in _rows(tmp_path / "case")}
    poly = rows["poly.jpg"]
    assert poly["status"] == "ok" and poly["pdq"] and poly["media_type"] == "image"
    assert poly["error"] == "too many members: > 1" and poly["members"] == 1
    assert set(rows) == {"poly.jpg", "poly.jpg!/a.txt"}
