"""Several uvicorn workers over one PostgreSQL service database: every worker checks keys against
the database (a revoked key fails on all of them at once) and they extend one audit chain."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from served import SECRET, Served, make_keys
from typer.testing import CliRunner

from heroes.cli import app as cli
from heroes.serving.db import ServiceBase, ServiceDB

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(t) for t in text]
    return out


@pytest.fixture
def pg_service(pg_url: str, served_root: Served, tmp_path: Path) -> Iterator[tuple[Served, str]]:
    db = ServiceDB(pg_url)
    ServiceBase.metadata.drop_all(db.engine)
    ServiceBase.metadata.create_all(db.engine)
    keys = make_keys(db, SECRET)
    db.close()
    root = tmp_path / "cases"
    shutil.copytree(served_root.root / "other", root / "other")
    settings = served_root.settings.model_copy(update={"root": root, "db_url": pg_url})
    yield Served(root, served_root.evidence, keys, settings), pg_url
    db = ServiceDB(pg_url)
    ServiceBase.metadata.drop_all(db.engine)
    db.close()


def test_two_workers_share_keys_revocation_and_one_audit_chain(
    pg_service: tuple[Served, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served, url = pg_service
    port = _free_port()
    env = {
        **os.environ,
        "HEROES_SECRET_KEY": SECRET,
        "HEROES_SERVE_DB_URL": url,
        "HEROES_SERVE_PRELOAD_MODELS": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "server.log"
    log_file = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "heroes.cli",
            "serve",
            "--root",
            str(served.root),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        assert len(_children(proc.pid)) >= 2  # the workers (and uvicorn's supervisor)

        h = served.auth("nia")

        def view(i: int) -> int:
            with httpx.Client(base_url=base, headers=h, timeout=30) as c:
                return c.get(f"/api/v1/cases/other/queue?offset={i % 2}&limit=1").status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(view, range(64)))
        assert codes == [200] * 64, log.read_text()[-3000:]

        admin = served.auth("ada")
        with httpx.Client(base_url=base, timeout=30) as c:
            made = c.post("/api/v1/keys", json={"user": "nia", "cases": ["other"]}, headers=admin)
            key = {"Authorization": f"Bearer {made.json()['key']}"}
            assert c.get("/api/v1/cases/other/queue", headers=key).status_code == 200
            revoke = c.delete(f"/api/v1/keys/{made.json()['key_id']}", headers=admin)
            assert revoke.status_code == 204
        # fresh connections, so requests spread over both workers
        for _ in range(12):
            r = httpx.get(f"{base}/api/v1/cases/other/queue", headers=key, timeout=30)
            assert r.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()

    monkeypatch.setenv("HEROES_SERVE_DB_URL", url)
    r = CliRunner().invoke(cli, ["audit", "verify", "--root", str(served.root)])
    assert r.exit_code == 0, r.output
    rows = int(r.output.split("holds: ")[1].split(" rows")[0])
    assert rows >= 64 + 3  # the views, the key made, used and revoked
