"""Keys, roles and grants: who may see what, and the answers that tell an outsider nothing."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from served import SECRET, Served

from heroes.serving.app import create_app
from heroes.serving.settings import SecretMissingError, ServeSettings


def test_health_is_open_and_everything_else_needs_a_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    for path in (
        "/api/v1/me",
        "/api/v1/cases",
        "/api/v1/cases/demo/queue",
        "/docs",
        "/openapi.json",
        "/metrics",
    ):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 401 and r.json()["title"]
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_wrong_or_malformed_key_gets_401(client: TestClient, served_root: Served) -> None:
    good = served_root.keys["ivy"]
    for bad in (good[:-1] + ("A" if good[-1] != "A" else "B"), "hk_nothing", "x" * 500):
        r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401


def test_me_names_the_user_role_cases_prefs_and_exposure(
    client: TestClient, served_root: Served
) -> None:
    me = client.get("/api/v1/me", headers=served_root.auth("ivy")).json()
    assert me["user"] == "ivy" and me["role"] == "investigator"
    assert me["cases"] == ["demo"]
    assert served_root.keys["ivy"].startswith(f"hk_{me['key_id']}_")
    assert me["prefs"] == {"blur": True, "greyscale": False, "daily_reveal_cap": None}
    assert set(me["exposure"]) == {"reveals_today", "minutes_today"}
    admin = client.get("/api/v1/me", headers=served_root.auth("ada")).json()
    assert {"demo", "other"} <= set(admin["cases"])


@pytest.mark.parametrize("path", ["queue", "items/1", "items/1/thumbnail", "persons"])
def test_no_grant_gets_the_same_403_whether_the_case_exists_or_not(
    client: TestClient, served_root: Served, path: str
) -> None:
    h = served_root.auth("nia")  # granted "other" only
    exists = client.get(f"/api/v1/cases/demo/{path}", headers=h)
    missing = client.get(f"/api/v1/cases/no-such-case/{path}", headers=h)
    odd = client.get(f"/api/v1/cases/..%2Fdemo/{path}", headers=h)
    assert exists.status_code == missing.status_code == 403
    assert exists.json() == missing.json()
    assert exists.content == missing.content
    assert odd.status_code in (403, 404) and "demo" not in odd.text.replace("..%2Fdemo", "")


def test_case_names_cannot_leave_the_root(client: TestClient, served_root: Served) -> None:
    h = served_root.auth("ada")
    for name in ("..", ".", "%2e%2e", "..%2Fother", "demo%2F..%2Fother", "%2Fetc"):
        r = client.get(f"/api/v1/cases/{name}/queue", headers=h)
        assert r.status_code in (404, 422), name
        assert "items" not in r.text


def test_a_symlinked_case_that_leaves_the_root_is_not_a_case(
    fresh_root: Served, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(fresh_root.root / "other", outside / "linked", target_is_directory=True)
    os.symlink(outside / "linked", fresh_root.root / "escape", target_is_directory=True)
    with TestClient(create_app(fresh_root.settings)) as c:
        h = fresh_root.auth("ada")
        assert c.get("/api/v1/cases/other/queue", headers=h).status_code == 200
        assert c.get("/api/v1/cases/escape/queue", headers=h).status_code == 404
        assert "escape" not in [x["case"] for x in c.get("/api/v1/cases", headers=h).json()]


def test_an_investigator_cannot_create_users_keys_or_jobs(
    client: TestClient, served_root: Served
) -> None:
    h = served_root.auth("ivy")
    r = client.post("/api/v1/users", json={"name": "eve", "role": "admin"}, headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/keys", json={"user": "ivy", "cases": ["other"]}, headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/jobs", json={"evidence": "/", "case": "demo"}, headers=h)
    assert r.status_code == 403
    assert client.get("/metrics", headers=h).status_code == 403
    assert client.get("/api/v1/exposure", headers=h).status_code == 403


def test_a_revoked_key_gets_401_at_once(client: TestClient, served_root: Served) -> None:
    admin = served_root.auth("ada")
    made = client.post("/api/v1/keys", json={"user": "ivy", "cases": ["demo"]}, headers=admin)
    assert made.status_code == 201
    h = {"Authorization": f"Bearer {made.json()['key']}"}
    assert client.get("/api/v1/cases/demo/queue?limit=1", headers=h).status_code == 200
    assert client.delete(f"/api/v1/keys/{made.json()['key_id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/cases/demo/queue?limit=1", headers=h).status_code == 401
    assert client.get("/api/v1/me", headers=h).status_code == 401


def test_keys_are_stored_as_peppered_hmacs(served_root: Served) -> None:
    key = served_root.keys["ivy"]
    key_id = key.split("_")[1]
    db = served_root.root / "service.db"
    raw = db.read_bytes() + (
        db.with_name("service.db-wal").read_bytes()
        if db.with_name("service.db-wal").exists()
        else b""
    )
    assert key.encode() not in raw and key.split("_", 2)[2].encode() not in raw
    with sqlite3.connect(db) as con:
        (digest,) = con.execute("SELECT digest FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    assert digest == hmac.new(SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(key.encode()).hexdigest()


def test_grants_limit_the_case_list(client: TestClient, served_root: Served) -> None:
    mine = client.get("/api/v1/cases", headers=served_root.auth("ivy")).json()
    assert [c["case"] for c in mine] == ["demo"]
    assert client.get("/api/v1/cases", headers=served_root.auth("noa")).json() == []
    everything = client.get("/api/v1/cases", headers=served_root.auth("ada")).json()
    assert {"demo", "other"} <= {c["case"] for c in everything}


def test_docs_and_openapi_are_for_signed_in_users(client: TestClient, served_root: Served) -> None:
    h = served_root.auth("noa")
    spec = client.get("/openapi.json", headers=h)
    assert spec.status_code == 200
    assert "/api/v1/cases/{case}/queue" in spec.json()["paths"]
    assert client.get("/docs", headers=h).status_code == 200


def test_a_session_cookie_reads_but_does_not_write(client: TestClient, served_root: Served) -> None:
    with TestClient(client.app) as c:
        r = c.post("/api/v1/session", headers=served_root.auth("ivy"))
        assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/v1/me").json()["user"] == "ivy"
        assert c.post("/api/v1/cases/demo/items/1/label", json={"category": 0}).status_code == 401
        good = c.cookies["heroes_session"]
        key_id, expires, mac = good.split(".")
        forged = [f"{key_id}.{int(expires) + 3600}.{mac}", f"{key_id}.{expires}.{'0' * 64}"]
        for value in forged:
            c.cookies.clear()
            c.cookies.set("heroes_session", value)
            assert c.get("/api/v1/me").status_code == 401


def test_the_server_refuses_to_start_without_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEROES_SECRET_KEY", raising=False)
    monkeypatch.delenv("HEROES_SERVE_SECRET_KEY", raising=False)
    with pytest.raises(SecretMissingError):
        create_app(ServeSettings(root=tmp_path))
    assert create_app(ServeSettings(root=tmp_path, dev=True)) is not None
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    assert ServeSettings(root=tmp_path, secret_key_file=secret_file).secret() == "from-a-file"


def test_metrics_are_prometheus_text_for_admins(client: TestClient, served_root: Served) -> None:
    client.get("/api/v1/me", headers=served_root.auth("ivy"))
    r = client.get("/metrics", headers=served_root.auth("ada"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'heroes_http_requests_total{method="GET",route="/api/v1/me",status="200"}' in r.text


def test_the_page_is_open_and_served_under_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "img-src 'self' blob:" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    static = sorted(
        p.name
        for p in (Path(__import__("heroes").__file__).parent / "serving" / "static").iterdir()
        if p.is_file()
    )
    assert static
    r = client.get(f"/static/{static[0]}")
    assert r.status_code == 200 and "content-security-policy" in r.headers
    assert client.get("/static/../service.db").status_code == 404
