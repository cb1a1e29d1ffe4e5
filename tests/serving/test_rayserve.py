"""The same app under Ray Serve with two replicas (embedded Ray on two CPUs, bounded time)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from served import SECRET, Served

from heroes.serving.settings import ServeSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_served(fresh_root: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Served, str]]:
    import ray
    from ray import serve

    from heroes.serving import rayserve

    monkeypatch.setenv("HEROES_SECRET_KEY", SECRET)  # replicas read it on their node
    monkeypatch.setenv("HEROES_RAY__CPUS", "2")
    port = _free_port()
    settings = ServeSettings(root=fresh_root.root, preload_models=False)
    try:
        rayserve.start(settings, port=port, replicas=2, num_cpus=0.5)
        yield fresh_root, f"http://127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@pytest.mark.slow
def test_two_replicas_serve_the_same_api(ray_served: tuple[Served, str]) -> None:
    from ray import serve

    served, base = ray_served
    status = serve.status().applications["heroes"]
    replicas = status.deployments["heroes"].replica_states
    assert replicas.get("RUNNING") == 2, replicas
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert httpx.get(f"{base}/api/v1/me", timeout=10).status_code == 401
    h = served.auth("nia")
    for _ in range(6):
        r = httpx.get(f"{base}/api/v1/cases/other/queue", headers=h, timeout=30)
        assert r.status_code == 200 and r.json()["total"] == 2
    denied = httpx.get(f"{base}/api/v1/cases/demo/queue", headers=h, timeout=30)
    assert denied.status_code == 403
