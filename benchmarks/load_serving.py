"""Service load test, on loopback only: concurrent face searches against the demo case, then face
search over a case with 100,000 synthetic face vectors.

Phase 1 (``--clients`` x ``--duration`` s): each client posts the demo's astronaut photo to
``POST /api/v1/cases/demo/search/faces`` again and again, one request in flight per client
(async httpx). Every answer must be 200 with at least one result: any other answer is an error
and the script exits 1. Reported: requests/s, p50/p99 latency.

Phase 2 (``--big`` vectors, 0 to skip): a copy of the demo case gets that many synthetic face
vectors (Gaussian clusters on the 128-d sphere, seeded; each points at an item of the case) in its
store; the case's indexes are brought up to date before the server starts (the size rule makes it
an IVF index past 50,000 rows), and ``--big-clients`` clients search it for ``--big-duration`` s.
Reported: index build time, p50/p99 latency (goal: p99 under 1 s on two cores).

The server is the real one (``heroes serve``) in a child process on 127.0.0.1 and a free port,
with a random secret and an investigator key granted to both cases; the case is built from the
benign demo seizure with the local engine. Writes ``results/load_serving.json``.

    .venv/bin/python benchmarks/load_serving.py               # 20 clients x 60 s, 100k vectors
    .venv/bin/python benchmarks/load_serving.py --quick       # 5 clients x 5 s, 20k vectors
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CASE = "demo"
BIG_CASE = "big"
USER = "bench"
FACE_DIM = 128


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(np.asarray(self.latencies_ms), q))

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("latencies_ms")
        p50, p99 = self.percentile(50), self.percentile(99)
        d.update(
            requests_per_s=round(self.rps, 2),
            p50_ms=None if p50 is None else round(p50, 1),
            p99_ms=None if p99 is None else round(p99, 1),
            max_ms=round(max(self.latencies_ms), 1) if self.latencies_ms else None,
        )
        return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def astronaut_jpeg() -> bytes:
    """The query: scikit-image's astronaut photo (benign), as a JPEG."""
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_demo_case(root: Path) -> Path:
    """The demo seizure triaged (local engine, with its hash sets) into ``root/demo``."""
    from heroes.config import Settings
    from heroes.demo import build_demo
    from heroes.pipeline.runner import triage

    paths = build_demo(root.parent / "seizure", root.parent / "seizure-hashsets")
    hs = paths["hashsets"]
    triage(
        paths["seizure"],
        root / CASE,
        settings=Settings(workers=2, engine="local"),
        hashsets=[hs / "known-bad.vics.json", hs / "known-bad.pdq.txt"],
        known_good=[hs / "known-good.csv"],
    )
    return root / CASE


def grant_key(
    root: Path,
    secret: str,
    cases: list[str],
    user: str = USER,
    *,
    daily_reveal_cap: int | None = None,
) -> str:
    """A new investigator ``user`` with a key granted ``cases``; returns the key."""
    from heroes.serving.auth import add_user, create_key
    from heroes.serving.db import ServiceDB
    from heroes.serving.settings import ServeSettings

    db = ServiceDB(ServeSettings(root=root).service_db_url())
    try:
        add_user(db, user, "investigator", daily_reveal_cap=daily_reveal_cap)
        _key_id, key = create_key(db, user, secret, cases)
    finally:
        db.close()
    return key


def clustered_unit_vectors(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Gaussian clusters on the unit sphere (like bench_index.py), float32, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    lab = rng.integers(0, clusters, n)
    spread = rng.uniform(0.5, 1.5, clusters)
    x = centres[lab] + (spread[lab] / np.sqrt(dim))[:, None] * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def add_synthetic_faces(case_dir: Path, n: int, seed: int) -> dict[str, Any]:
    """Append ``n`` synthetic face vectors to a case store (pointing at its items, each with a
    made-up face id and box) and bring the case's indexes up to date; returns timings."""
    from heroes.config import get_settings
    from heroes.index import FloatIndex
    from heroes.pipeline.indexing import index_root, update_indexes
    from heroes.store.db import CaseStore

    db = sqlite3.connect(case_dir / "case.db")
    try:
        model = db.execute("SELECT model FROM vectors WHERE kind = 'face' LIMIT 1").fetchone()
        if model is None:
            raise SystemExit("the demo case has no face vectors to take the model name from")
        items = [r[0] for r in db.execute("SELECT id FROM items WHERE status = 'ok'")]
        vecs = clustered_unit_vectors(n, FACE_DIM, seed)
        t0 = time.perf_counter()
        rows = (
            (
                items[i % len(items)],
                "face",
                model[0],
                f"synthetic-{i}",
                None,
                "[10.0, 10.0, 50.0, 50.0]",
                FACE_DIM,
                vecs[i].astype("<f4").tobytes(),
            )
            for i in range(n)
        )
        db.executemany(
            "INSERT INTO vectors (item_id, kind, model, ref, frame_time, bbox, dim, vector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.commit()
        insert_s = time.perf_counter() - t0
    finally:
        db.close()
    t0 = time.perf_counter()
    store = CaseStore(case_dir, None, create=False)
    try:
        added = update_indexes(store, case_dir, min_quality=get_settings().pdq.min_quality)
    finally:
        store.close()
    build_s = time.perf_counter() - t0
    index = FloatIndex.load(index_root(case_dir) / f"face-{model[0]}")
    queries = clustered_unit_vectors(200, FACE_DIM, seed + 1)
    times = []
    for q in queries:
        t1 = time.perf_counter()
        index.search(q[None], 10)
        times.append((time.perf_counter() - t1) * 1000)
    return {
        "vectors": n,
        "insert_s": round(insert_s, 2),
        "index_build_s": round(build_s, 2),
        "added": added,
        "index_type": index.index_type,
        "index_only_p50_ms": round(float(np.percentile(times, 50)), 3),
        "index_only_p99_ms": round(float(np.percentile(times, 99)), 3),
    }


@contextmanager
def serve(root: Path, secret: str, port: int, log: Path) -> Iterator[str]:
    """``heroes serve`` on 127.0.0.1:port in a child process; yields its base URL."""
    env = dict(os.environ, HEROES_SECRET_KEY=secret, HEROES_ENGINE="local")
    cmd = [
        sys.executable,
        "-m",
        "heroes.cli",
        "serve",
        "--root",
        str(root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


async def load(
    base: str, key: str, case: str, image: bytes, *, clients: int, duration: float, k: int = 10
) -> LoadResult:
    """``clients`` concurrent loops posting the face search for ``duration`` seconds."""
    res = LoadResult(clients=clients, duration_s=duration)
    url = f"{base}/api/v1/cases/{case}/search/faces"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as client:
        # one request first: models and indexes load on first use, not in the measurement
        warm = await client.post(
            url, files={"image": ("q.jpg", image, "image/jpeg")}, data={"k": str(k)}
        )
        warm.raise_for_status()
        start = time.perf_counter()
        stop = start + duration

        async def one_client() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        url, files={"image": ("q.jpg", image, "image/jpeg")}, data={"k": str(k)}
                    )
                    ok = r.status_code == 200 and bool(r.json().get("results"))
                    why = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, why = False, repr(e)
                res.latencies_ms.append((time.perf_counter() - t0) * 1000)
                res.requests += 1
                if not ok:
                    res.errors += 1
                    if len(res.error_samples) < 5:
                        res.error_samples.append(why)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        res.duration_s = round(time.perf_counter() - start, 2)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--big", type=int, default=100_000, help="synthetic face vectors (0: skip)")
    p.add_argument("--big-clients", type=int, default=1)
    p.add_argument("--big-duration", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="5 clients x 5 s, 20,000 vectors")
    p.add_argument("--keep", type=Path, default=None, help="build the cases here and keep them")
    a = p.parse_args(argv)
    if a.quick:
        a.clients, a.duration, a.big, a.big_duration = 5, 5.0, 20_000, 5.0
    print(f"seed {a.seed}; {a.clients} clients x {a.duration} s; {a.big} synthetic face vectors")
    from _common import write_result

    work = a.keep or Path(tempfile.mkdtemp(prefix="heroes-load-"))
    root = work / "cases"
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        t0 = time.perf_counter()
        build_demo_case(root)
        build_s = round(time.perf_counter() - t0, 1)
        big: dict[str, Any] | None = None
        if a.big:
            shutil.copytree(root / CASE, root / BIG_CASE)
            big = add_synthetic_faces(root / BIG_CASE, a.big, a.seed)
        secret = secrets.token_urlsafe(32)
        key = grant_key(root, secret, [CASE] + ([BIG_CASE] if a.big else []))
        image = astronaut_jpeg()
        with serve(root, secret, free_port(), work / "server.log") as base:
            demo = asyncio.run(load(base, key, CASE, image, clients=a.clients, duration=a.duration))
            print("demo case:", demo.summary())
            big_res = None
            if a.big:
                big_res = asyncio.run(
                    load(base, key, BIG_CASE, image, clients=a.big_clients, duration=a.big_duration)
                )
                print(f"{a.big} vectors:", big_res.summary())
        payload: dict[str, Any] = {
            "seed": a.seed,
            # other work on the machine slows every figure: the load average says how much
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "case_build_s": build_s,
            "demo": demo.summary(),
            "big": None if big is None or big_res is None else {**big, **big_res.summary()},
        }
        write_result("load_serving_quick" if a.quick else "load_serving", payload)
        errors = demo.errors + (big_res.errors if big_res else 0)
        return 1 if errors else 0
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
