"""The review queue's order, streamed: reading the case in chunks ranks it exactly as reading it
whole, with known-good files last and each copy right after its original."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from seizures import case_rows, jpeg, seizure

from heroes.config import Settings
from heroes.pipeline import ranking
from heroes.pipeline.runner import triage
from heroes.store import CaseStore, db


def test_ranking_in_small_chunks_gives_the_queue_of_one_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = seizure(tmp_path / "ev", 9, folders=3)
    shutil.copy(ev / "d0/img_00000.jpg", ev / "copy.jpg")
    (ev / "good.jpg").write_bytes(jpeg(999))
    (ev / "cut.jpg").write_bytes(jpeg(7, 128)[:300])
    (ev / "notes.jpg").write_text("not a picture")
    good = tmp_path / "good.txt"
    good.write_text(hashlib.md5((ev / "good.jpg").read_bytes()).hexdigest() + "\n")
    case = tmp_path / "case"
    settings = Settings(engine="local", models=False)
    triage(ev, case, settings=settings, known_good=[good])
    whole = case_rows(case)
    assert len(whole) == 13
    store = CaseStore(case, create=False)
    try:
        ids = [r["item_id"] for r in whole.values()]
        store.update_items([{"id": i, "priority": None, "why": None, "rank": None} for i in ids])
        monkeypatch.setattr(db, "PAGE_ROWS", 3)
        ranking.rank_items(store, settings)
    finally:
        store.close()
    chunked = case_rows(case)
    for path, row in whole.items():
        assert (chunked[path]["rank"], chunked[path]["priority"], chunked[path]["why"]) == (
            row["rank"],
            row["priority"],
            row["why"],
        ), path
    ranks = sorted(r["rank"] for r in chunked.values())
    assert ranks == list(range(1, 14))
    by_rank = sorted(chunked.values(), key=lambda r: r["rank"])
    assert by_rank[-1]["status"] == "known_good"
    assert by_rank[0]["status"] == "error", "errors come before benign files"
    # the walk takes a folder's files before its subfolders: copy.jpg is found first
    first, dup = chunked["copy.jpg"], chunked["d0/img_00000.jpg"]
    assert dup["duplicate_of"] == first["item_id"]
    assert dup["rank"] == first["rank"] + 1, "a copy sorts right after its original"
