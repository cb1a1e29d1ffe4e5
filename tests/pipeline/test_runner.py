"""The triage pass as a library: resume, changed files, interruption, exact duplicates."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seizures import first_rows, jpeg, seizure

from heroes.config import Settings
from heroes.pipeline.report import records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore
from heroes.store.lock import CaseBusyError, case_lock


def _rows(case: Path) -> list[dict]:
    store = CaseStore(case, create=False)
    try:
        return list(records(store))
    finally:
        store.close()


def test_second_run_skips_done_files_and_processes_only_new_ones(tmp_path: Path) -> None:
    ev = seizure(tmp_path / "ev", 12)
    s = Settings(workers=1)
    first = triage(ev, tmp_path / "case", settings=s)
    assert first.new == 12 and first.resumed == 0
    seizure(ev, 3, start=100)
    second = triage(ev, tmp_path / "case", settings=s)
    assert second.new == 3 and second.resumed == 12
    assert len(_rows(tmp_path / "case")) == 15


def test_touched_file_with_same_content_is_not_decoded_again(tmp_path: Path) -> None:
    ev = seizure(tmp_path / "ev", 3)
    s = Settings(workers=1)
    triage(ev, tmp_path / "case", settings=s)
    f = next(ev.rglob("*.jpg"))
    os.utime(f, (1_600_000_000, 1_600_000_000))
    again = triage(ev, tmp_path / "case", settings=s)
    assert again.new == 0 and again.updated == 0 and again.resumed == 3
    row = next(r for r in _rows(tmp_path / "case") if r["path"] == str(f.relative_to(ev)))
    assert row["mtime"] == 1_600_000_000


def test_changed_content_updates_the_same_item(tmp_path: Path) -> None:
    ev = seizure(tmp_path / "ev", 2)
    s = Settings(workers=1)
    triage(ev, tmp_path / "case", settings=s)
    f = sorted(ev.rglob("*.jpg"))[0]
    before = next(r for r in _rows(tmp_path / "case") if r["path"] == str(f.relative_to(ev)))
    f.write_bytes(jpeg(999))
    again = triage(ev, tmp_path / "case", settings=s)
    assert again.updated == 1 and again.new == 0
    after = next(r for r in _rows(tmp_path / "case") if r["path"] == str(f.relative_to(ev)))
    assert after["item_id"] == before["item_id"] and after["sha256"] != before["sha256"]


def test_copies_within_one_run_point_to_the_first_seen(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    data = jpeg(5)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (ev / name).write_bytes(data)
    triage(ev, tmp_path / "case", settings=Settings(workers=2))
    rows = {r["path"]: r for r in _rows(tmp_path / "case")}
    assert rows["a.jpg"]["status"] == "ok"
    assert rows["b.jpg"]["duplicate_of"] == rows["a.jpg"]["item_id"]
    assert rows["c.jpg"]["duplicate_of"] == rows["a.jpg"]["item_id"]
    assert rows["c.jpg"]["pdq"] == rows["a.jpg"]["pdq"]


def test_a_case_cannot_be_triaged_twice_at_once(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    with case_lock(case), pytest.raises(CaseBusyError):
        with case_lock(case):
            pass


def test_case_inside_the_evidence_is_refused(tmp_path: Path) -> None:
    ev = seizure(tmp_path / "ev", 1)
    from heroes.store import StoreError

    with pytest.raises(StoreError):
        triage(ev, ev / "case", settings=Settings(workers=1))


@pytest.mark.slow
def test_kill_9_then_same_command_completes_without_loss_or_double_count(tmp_path: Path) -> None:
    n = 1200
    ev = seizure(tmp_path / "ev", n)
    case = tmp_path / "case"
    cmd = [
        sys.executable,
        "-m",
        "heroes.cli",
        "triage",
        str(ev),
        "--case",
        str(case),
        "--json",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    db = case / "case.db"
    done = first_rows(proc, db, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < done < n, f"the run was not interrupted part-way ({done} of {n})"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = _rows(case)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == n
    assert all(r["status"] == "ok" and r["pdq"] for r in rows)


def test_a_file_that_kills_its_worker_becomes_an_error_and_the_pass_goes_on(tmp_path: Path) -> None:
    from crash_hook import MARKER

    ev = seizure(tmp_path / "ev", 8)
    poison = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    buf = io.BytesIO()
    poison.save(buf, "JPEG", comment=MARKER)
    (ev / "poison.jpg").write_bytes(buf.getvalue())
    s = Settings(workers=2, models=False, decode_hook="crash_hook:crash_on_marker")
    summary = triage(ev, tmp_path / "case", settings=s)
    rows = {r["path"]: r for r in _rows(tmp_path / "case")}
    assert len(rows) == 9 and summary.new == 9
    assert rows["poison.jpg"]["status"] == "error"
    assert "decoder crashed" in rows["poison.jpg"]["error"]
    assert rows["poison.jpg"]["sha256"], "the hashes are kept"
    assert all(r["status"] == "ok" and r["pdq"] for p, r in rows.items() if p != "poison.jpg")
