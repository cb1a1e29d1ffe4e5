"""The audit log is a hash chain: every audited action is a row, and `heroes audit verify` finds
a row edited, inserted or deleted directly in the database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import Served
from typer.testing import CliRunner

from heroes.cli import app as cli
from heroes.demo import jpeg_bytes, sample_photos
from heroes.serving.app import create_app

runner = CliRunner()


def _verify(root: Path) -> tuple[int, str]:
    r = runner.invoke(cli, ["audit", "verify", "--root", str(root)])
    return r.exit_code, r.output


def _activity(served: Served) -> None:
    """One of each audited action: queue, item, reveal, label, search, key, job."""
    with TestClient(create_app(served.settings)) as c:
        h, admin = served.auth("nia"), served.auth("ada")
        ids = [r["item_id"] for r in c.get("/api/v1/cases/other/queue", headers=h).json()["items"]]
        c.get(f"/api/v1/cases/other/items/{ids[0]}", headers=h)
        c.get(f"/api/v1/cases/other/items/{ids[0]}/thumbnail?reveal=true", headers=h)
        c.post(f"/api/v1/cases/other/items/{ids[0]}/label", json={"category": 0}, headers=h)
        c.post(
            "/api/v1/cases/other/search/scenes",
            headers=h,
            files={"image": ("q.jpg", jpeg_bytes(sample_photos()["coffee"]), "image/jpeg")},
        )
        key = c.post("/api/v1/keys", json={"user": "nia", "cases": []}, headers=admin).json()
        c.delete(f"/api/v1/keys/{key['key_id']}", headers=admin)
        c.post("/api/v1/jobs", json={"evidence": "relative/path", "case": "other"}, headers=admin)


def _actions(root: Path) -> list[str]:
    with sqlite3.connect(root / "service.db") as con:
        return [a for (a,) in con.execute("SELECT action FROM audit ORDER BY id")]


def test_every_audited_action_is_a_row_and_the_chain_holds(fresh_root: Served) -> None:
    _activity(fresh_root)
    actions = _actions(fresh_root.root)
    for a in (
        "queue.view",
        "item.view",
        "thumbnail.reveal",
        "label",
        "search.scenes",
        "key.create",
        "key.revoke",
    ):
        assert a in actions, a
    with sqlite3.connect(fresh_root.root / "service.db") as con:
        who = con.execute(
            "SELECT user, key_id, at, source FROM audit WHERE action = 'label'"
        ).fetchone()
    assert who[0] == "nia" and who[1] and who[2] and who[3]
    code, out = _verify(fresh_root.root)
    assert code == 0 and f"{len(actions)} rows" in out


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE audit SET user = 'someone-else' WHERE id = 3",
        "UPDATE audit SET detail = '{}' WHERE id = 4",
        "DELETE FROM audit WHERE id = 3",
        "DELETE FROM audit WHERE id = (SELECT MAX(id) FROM audit)",
        'INSERT INTO audit (id, at, user, key_id, action, "case", target, detail, source,'
        ' prev_hash, hash) SELECT MAX(id) + 1, at, user, key_id, action, "case", target,'
        " detail, source, hash, hash FROM audit",
        "UPDATE audit SET id = id + 1000 WHERE id = 2",
    ],
)
def test_audit_verify_finds_an_edited_inserted_or_deleted_row(
    fresh_root: Served, tamper: str
) -> None:
    _activity(fresh_root)
    assert _verify(fresh_root.root)[0] == 0
    with sqlite3.connect(fresh_root.root / "service.db") as con:
        con.execute(tamper)
    code, out = _verify(fresh_root.root)
    assert code == 1, out
    assert "broken at row" in out


def test_a_rewritten_row_with_a_recomputed_hash_still_breaks_the_next_link(
    fresh_root: Served,
) -> None:
    from heroes.serving.audit import row_hash

    _activity(fresh_root)
    with sqlite3.connect(fresh_root.root / "service.db") as con:
        cols = [
            "id",
            "at",
            "user",
            "key_id",
            "action",
            "case",
            "target",
            "detail",
            "source",
            "prev_hash",
        ]
        row = con.execute(
            f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM audit WHERE id = 2"
        ).fetchone()
        fields = dict(zip(cols, row, strict=True))
        fields["user"] = "someone-else"
        con.execute(
            "UPDATE audit SET user = ?, hash = ? WHERE id = 2", ("someone-else", row_hash(**fields))
        )
    code, out = _verify(fresh_root.root)
    assert code == 1 and "row 3" in out
