"""The case store on SQLite (the default) and on PostgreSQL (by URL): same behaviour."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heroes.config import Settings
from heroes.pipeline.report import records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore, StoreError


def _seizure(root: Path) -> Path:
    root.mkdir()
    for i in range(6):
        a = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG")
        (root / f"{i}.jpg").write_bytes(buf.getvalue())
    (root / "copy.jpg").write_bytes((root / "0.jpg").read_bytes())
    (root / "notes.txt").write_text("hello")
    return root


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    store = CaseStore(Path("/nonexistent-case"), url, create=False)
    from heroes.store.schema import Base

    Base.metadata.drop_all(store.engine)
    store.close()
    return url


def test_triage_resume_and_export_work_on_each_database(tmp_path: Path, db_url: str | None) -> None:
    ev = _seizure(tmp_path / "ev")
    s = Settings(workers=1, models=False, db_url=db_url)
    first = triage(ev, tmp_path / "case", settings=s)
    assert first.new == 8
    again = triage(ev, tmp_path / "case", settings=s)
    assert again.new == 0 and again.resumed == 8
    store = CaseStore(tmp_path / "case", db_url, create=False)
    try:
        rows = {r["path"]: r for r in records(store)}
        assert rows["copy.jpg"]["status"] == "duplicate"
        assert rows["copy.jpg"]["duplicate_of"] == rows["0.jpg"]["item_id"]
        assert rows["copy.jpg"]["pdq"] == rows["0.jpg"]["pdq"]
        assert sorted(r["rank"] for r in rows.values()) == list(range(1, 9))
        assert store.count_members(str(ev.resolve()), "nothing") == 0
    finally:
        store.close()
    if db_url is None:
        assert (tmp_path / "case" / "case.db").is_file()
    else:
        assert not (tmp_path / "case" / "case.db").exists(), "the rows live in PostgreSQL"


def test_a_missing_case_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no case"):
        CaseStore(tmp_path / "nope", create=False)


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open case store"):
        CaseStore(tmp_path / "c", "postgresql+psycopg://nobody@127.0.0.1:1/none")
