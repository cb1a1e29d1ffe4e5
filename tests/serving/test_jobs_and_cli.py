"""Triage jobs over the API, and the service's CLI commands."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import SECRET, Served
from typer.testing import CliRunner

from heroes.cli import app as cli
from heroes.serving.app import create_app
from heroes.serving.db import JobRow, ServiceDB

runner = CliRunner()


def _wait(c: TestClient, job_id: int, h: dict[str, str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/v1/jobs/{job_id}", headers=h).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_lab_user_triages_evidence_into_a_new_case(fresh_root: Served) -> None:
    evidence = fresh_root.evidence / "other"
    with TestClient(create_app(fresh_root.settings)) as c:
        h = fresh_root.auth("lab")
        r = c.post("/api/v1/jobs", json={"evidence": str(evidence), "case": "fresh"}, headers=h)
        assert r.status_code == 202, r.text
        job = _wait(c, r.json()["id"], h)
        assert job["state"] == "done", job["error"]
        assert job["progress"]["items"] == 2 and job["summary"]["new"] == 2
        assert job["errors"] == {} and job["error"] is None
        assert [x["case"] for x in c.get("/api/v1/cases", headers=h).json()] == ["fresh"]
        queue = c.get("/api/v1/cases/fresh/queue", headers=h).json()
        assert queue["total"] == 2
        # the same pass as the CLI: a second job resumes and finds nothing new
        again = c.post("/api/v1/jobs", json={"evidence": str(evidence), "case": "fresh"}, headers=h)
        assert _wait(c, again.json()["id"], h)["summary"]["new"] == 0
        # others cannot follow a job of a case they do not see
        assert c.get(f"/api/v1/jobs/{job['id']}", headers=fresh_root.auth("nia")).status_code == 404


def test_jobs_refuse_bad_evidence_foreign_cases_and_a_second_job(fresh_root: Served) -> None:
    with TestClient(create_app(fresh_root.settings)) as c:
        lab, admin = fresh_root.auth("lab"), fresh_root.auth("ada")
        ev = str(fresh_root.evidence / "other")
        assert (
            c.post("/api/v1/jobs", json={"evidence": ev, "case": "other"}, headers=lab).status_code
            == 403
        )  # not granted
        for bad in ("relative/path", "/no/such/folder", str(fresh_root.root / "other")):
            r = c.post("/api/v1/jobs", json={"evidence": bad, "case": "fresh"}, headers=lab)
            assert r.status_code == 422, bad
        r = c.post("/api/v1/jobs", json={"evidence": ev, "case": "../escape"}, headers=admin)
        assert r.status_code == 404
        db = ServiceDB(fresh_root.settings.service_db_url())
        with db.session() as s, s.begin():
            s.add(JobRow(case="fresh", evidence=ev, state="running", created_by="lab"))
        db.close()
        r = c.post("/api/v1/jobs", json={"evidence": ev, "case": "fresh"}, headers=lab)
        assert r.status_code == 409 and "already" in r.json()["detail"]


def test_a_failed_pass_is_a_failed_job_with_its_reason(fresh_root: Served) -> None:
    with TestClient(create_app(fresh_root.settings)) as c:
        h = fresh_root.auth("lab")
        around = str(fresh_root.root.parent)  # the evidence would hold the case folder
        r = c.post("/api/v1/jobs", json={"evidence": around, "case": "fresh"}, headers=h)
        assert r.status_code == 202
        job = _wait(c, r.json()["id"], h)
        assert job["state"] == "failed" and "inside the evidence" in job["error"]
        assert c.get("/healthz").status_code == 200


def test_evidence_roots_limit_where_jobs_read(fresh_root: Served, tmp_path: Path) -> None:
    settings = fresh_root.settings.model_copy(update={"evidence_roots": [tmp_path / "allowed"]})
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/api/v1/jobs",
            headers=fresh_root.auth("ada"),
            json={"evidence": str(fresh_root.evidence / "other"), "case": "x"},
        )
        assert r.status_code == 422 and "outside" in r.json()["detail"]


def test_cli_users_keys_and_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEROES_SECRET_KEY", SECRET)
    root = tmp_path / "cases"
    root.mkdir()
    assert (
        runner.invoke(
            cli, ["users", "add", "kim", "--role", "investigator", "--root", str(root)]
        ).exit_code
        == 0
    )
    bad = runner.invoke(cli, ["users", "add", "kim2", "--role", "boss", "--root", str(root)])
    assert bad.exit_code == 2 and "role" in bad.output
    r = runner.invoke(
        cli, ["keys", "create", "kim", "--root", str(root), "--case", "a", "--case", "b"]
    )
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("hk_")
    key_id = key.split("_")[1]
    with sqlite3.connect(root / "service.db") as con:
        grants = sorted(
            c for (c,) in con.execute('SELECT "case" FROM grants WHERE key_id = ?', (key_id,))
        )
    assert grants == ["a", "b"]
    bad_case = runner.invoke(cli, ["keys", "create", "kim", "--root", str(root), "--case", ".."])
    assert bad_case.exit_code == 2
    assert runner.invoke(cli, ["keys", "revoke", key_id, "--root", str(root)]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", key_id, "--root", str(root)]).exit_code == 2
    assert (
        runner.invoke(cli, ["users", "cap", "kim", "--reveals", "5", "--root", str(root)]).exit_code
        == 0
    )
    with sqlite3.connect(root / "service.db") as con:
        assert con.execute("SELECT daily_reveal_cap FROM users WHERE name='kim'").fetchone() == (5,)
    assert runner.invoke(cli, ["users", "cap", "kim", "--root", str(root)]).exit_code == 0
    with sqlite3.connect(root / "service.db") as con:
        assert con.execute("SELECT daily_reveal_cap FROM users WHERE name='kim'").fetchone() == (
            None,
        )
    assert runner.invoke(cli, ["users", "cap", "nobody", "--root", str(root)]).exit_code == 2
    listed = runner.invoke(cli, ["users", "list", "--root", str(root)])
    assert listed.exit_code == 0 and "kim" in listed.output
    verify = runner.invoke(cli, ["audit", "verify", "--root", str(root)])
    assert verify.exit_code == 0 and "5 rows" in verify.output  # user, key, revoke, 2 caps


def test_cli_keys_and_serve_refuse_without_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HEROES_SECRET_KEY", "HEROES_SERVE_SECRET_KEY", "HEROES_SERVE_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    runner.invoke(cli, ["users", "add", "kim", "--role", "admin", "--root", str(tmp_path)])
    r = runner.invoke(cli, ["keys", "create", "kim", "--root", str(tmp_path)])
    assert r.exit_code == 2 and "secret" in r.output
    r = runner.invoke(cli, ["serve", "--root", str(tmp_path)])
    assert r.exit_code == 2 and "secret" in r.output
