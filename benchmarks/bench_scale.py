"""What grows with the number of files, measured here and extrapolated to 1M and 10M files.

Four measurements, each the input of one part of the plan in docs/scale.md:

1. ``dup_map``: the driver's duplicate map (``_Pass.seen_sha`` in heroes/pipeline/runner.py,
   ``dict[str, int]``, SHA-256 hex -> item id of every original of a run), measured with
   tracemalloc at ``--dup-entries`` entries, against compact forms of the same map: a dict keyed
   by the 32-byte digests, a sorted numpy array of digests + ids, and a sorted array of 8-byte
   prefixes + ids (a prefix hit is confirmed against the store). Lookup time per key for each.
2. ``store``: a seizure generated here (web-size JPEGs from the benign sample photos, byte-for-byte
   copies of some of them, small non-media files) triaged with ``triage(...,
   Settings(engine="local"))`` with and without models, into SQLite and into PostgreSQL (a
   throw-away server, as the store tests start one). Bytes per item and per vector, per table,
   as written by the pass and after ``VACUUM`` / ``VACUUM FULL``.
3. ``indexes``: FAISS build time of the case indexes (heroes.index) for PDQ (binary, 256 bits),
   face (128-d) and scene (128-d) vectors at ``--vectors`` sizes: one ``add`` of everything, and
   for faces also in the 20,000-row chunks that ``update_indexes`` reads from the store.
4. ``finalize``: ``finalize`` (PDQ matching, visual groups, copies, ranking) and ``rank_items``
   alone on cases of ``--finalize`` items made by replicating the records of the model run (random
   PDQ hashes and dihedral variants, 10 % copies), with the growth exponent between sizes, and the
   driver's peak Python memory per item in ``rank_items``.

``--quick`` runs a reduced version of everything in a few minutes. Writes results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import math
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, write_result  # noqa: E402
from bench_ray import make_files  # noqa: E402

PLAN_FILES = (1_000_000, 10_000_000)


# --- 1. the duplicate map -------------------------------------------------------------------------
def _digests(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [hashlib.sha256(rng.randbytes(16)).digest() for _ in range(n)]


def _traced(build: Callable[[], Any]) -> tuple[Any, int, float]:
    """(the object, bytes still allocated for it, seconds to build it)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    obj = build()
    took = time.perf_counter() - t0
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return obj, size, took


def _lookup_ns(fn: Callable[[Any], Any], keys: list[Any]) -> float:
    t0 = time.perf_counter()
    for k in keys:
        fn(k)
    return (time.perf_counter() - t0) / len(keys) * 1e9


def dup_map(n: int, seed: int) -> dict[str, Any]:
    digests = _digests(n, seed)
    hexes = [d.hex() for d in digests]
    probe = random.Random(seed + 1).sample(range(n), min(n, 20_000))
    out: dict[str, Any] = {"entries": n}

    def as_runner() -> dict[str, int]:
        # the runner's map: fresh hex strings (the rows that carried them are flushed) and ids
        # counted from 1, as _Pass._assign_id gives them
        seen: dict[str, int] = {}
        for i, h in enumerate(hexes):
            seen.setdefault("".join(h), i + 1)
        return seen

    def bytes_keys() -> dict[bytes, int]:
        # fresh 32-byte keys, as converting the hex digest of each row would make them
        return {bytes.fromhex(h): i + 1 for i, h in enumerate(hexes)}

    def sorted_digests() -> tuple[np.ndarray, np.ndarray]:
        keys = np.frombuffer(b"".join(digests), dtype="S32")
        order = np.argsort(keys, kind="stable")
        return keys[order].copy(), (order + 1).astype(np.int64)

    def sorted_prefix() -> tuple[np.ndarray, np.ndarray]:
        keys = np.frombuffer(b"".join(d[:8] for d in digests), dtype=">u8")
        order = np.argsort(keys, kind="stable")
        return keys[order].copy(), (order + 1).astype(np.int64)

    seen, size, took = _traced(as_runner)
    out["dict_hex_str"] = {
        "bytes_per_entry": round(size / n, 1),
        "build_s": round(took, 3),
        "lookup_ns": round(_lookup_ns(seen.get, ["".join(hexes[i]) for i in probe]), 1),
    }
    del seen
    seen_b, size, took = _traced(bytes_keys)
    out["dict_digest_bytes"] = {
        "bytes_per_entry": round(size / n, 1),
        "build_s": round(took, 3),
        "lookup_ns": round(_lookup_ns(seen_b.get, [digests[i] for i in probe]), 1),
    }
    del seen_b
    (keys, ids), size, took = _traced(sorted_digests)
    queries = np.frombuffer(b"".join(digests[i] for i in probe), dtype="S32")
    t0 = time.perf_counter()
    pos = np.searchsorted(keys, queries)
    batch_ns = (time.perf_counter() - t0) / len(probe) * 1e9
    assert bool(np.all(keys[pos] == queries)) and bool(np.all(ids[pos] > 0))

    def one(q: bytes) -> int:
        j = int(np.searchsorted(keys, np.bytes_(q)))
        return int(ids[j]) if j < len(keys) and keys[j] == q else 0

    out["numpy_sorted_digest32_id64"] = {
        "bytes_per_entry": round(size / n, 1),
        "build_s": round(took, 3),
        "lookup_ns": round(_lookup_ns(one, [digests[i] for i in probe[:5000]]), 1),
        "batched_lookup_ns": round(batch_ns, 1),
    }
    (pkeys, _pids), size, took = _traced(sorted_prefix)
    pq = np.frombuffer(b"".join(digests[i][:8] for i in probe), dtype=">u8")
    t0 = time.perf_counter()
    np.searchsorted(pkeys, pq)
    batch_ns = (time.perf_counter() - t0) / len(probe) * 1e9
    out["numpy_sorted_prefix8_id64"] = {
        "bytes_per_entry": round(size / n, 1),
        "build_s": round(took, 3),
        "batched_lookup_ns": round(batch_ns, 1),
        "note": "a prefix hit is a candidate: confirm it against the store's sha256 index",
    }
    for key in ("dict_hex_str", "dict_digest_bytes", "numpy_sorted_digest32_id64"):
        per = out[key]["bytes_per_entry"]
        out[key]["at_files_mib"] = {str(f): round(per * f / 2**20, 1) for f in PLAN_FILES}
    per = out["numpy_sorted_prefix8_id64"]["bytes_per_entry"]
    out["numpy_sorted_prefix8_id64"]["at_files_mib"] = {
        str(f): round(per * f / 2**20, 1) for f in PLAN_FILES
    }
    return out


# --- 1b. CPU per file --------------------------------------------------------------------------
def per_file_cpu(files: int, seed: int, work: Path, repeat: int = 3) -> dict[str, Any]:
    """CPU milliseconds per web-size JPEG of each CPU stage of the pass (best of ``repeat``, in
    process time, so other load on the machine matters less): what a node must supply per
    image/s whatever runs the models."""
    from heroes.pipeline.decode import analyze_image, load_rgb, pdq_dihedral_hex
    from heroes.pipeline.identify import hash_bytes

    dest = work / "cpu-files"
    dest.mkdir(parents=True, exist_ok=True)
    datas = [p.read_bytes() for p in make_files(dest, files, seed)]
    rgbs = [load_rgb(d, working_size=512)[0] for d in datas]

    def ms(fn: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(repeat):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return round(best / len(datas) * 1000, 2)

    out: dict[str, Any] = {
        "files": files,
        "mean_kib": round(sum(map(len, datas)) / len(datas) / 1024, 1),
        "ms": {
            "md5_sha1_sha256": ms(lambda: [hash_bytes(d) for d in datas]),
            "decode_to_512": ms(lambda: [load_rgb(d, working_size=512) for d in datas]),
            "pdq_with_dihedral": ms(lambda: [pdq_dihedral_hex(r) for r in rgbs]),
            "analyze_image": ms(lambda: [analyze_image(d, working_size=512) for d in datas]),
        },
    }
    # the models, one ONNX Runtime thread, one image per call as the pass calls them
    from heroes.pipeline.infer import Analyzer, InferOptions

    frames = rgbs[: min(len(rgbs), 60)]
    for key, scene in (("models_without_scene", None), ("models_all_five", "scene-vlad")):
        an = Analyzer(InferOptions(threads=1, scene_embed=scene))
        an.analyze(frames[:1], [None])  # load the models first

        def each(an: Analyzer = an) -> None:
            for f in frames:
                an.analyze([f], [None])

        c0 = time.process_time()
        each()
        out["ms"][key] = round((time.process_time() - c0) / len(frames) * 1000, 2)
    per = out["ms"]
    per_image = per["md5_sha1_sha256"] + per["analyze_image"] + per["models_all_five"]
    out["cpu_only_images_per_core_s"] = round(1000 / per_image, 1)
    cpu_side = per["md5_sha1_sha256"] + per["analyze_image"]
    gpu_side = cpu_side - per["decode_to_512"]
    out["cores_for_3000_img_s"] = {
        "cpu_decode": round(3000 * cpu_side / 1000, 1),
        "gpu_decode": round(3000 * gpu_side / 1000, 1),
    }
    return out


# --- 2. the case store --------------------------------------------------------------------------
def make_seizure(root: Path, images: int, seed: int) -> dict[str, int]:
    """``images`` JPEGs, byte copies of a fifth of them, and a fifth as many small other files."""
    (root / "img").mkdir(parents=True)
    (root / "copies").mkdir()
    (root / "docs").mkdir()
    paths = make_files(root / "img", images, seed)
    rng = random.Random(seed)
    copies = images // 5
    for i, p in enumerate(rng.sample(paths, copies)):
        shutil.copyfile(p, root / "copies" / f"copy{i:06d}.jpg")
    others = images // 5
    words = ["invoice", "meeting", "travel", "photo", "address", "payment", "note", "list"]
    for i in range(others):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(30, 600)))
        (root / "docs" / f"doc{i:06d}.txt").write_text(text)
    return {"images": images, "copies": copies, "others": others}


def _sqlite_tables(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        con.close()
    return {name: int(size) for name, size in rows}


def _sqlite_vacuum(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute("VACUUM")
    finally:
        con.close()


def _counts(store: Any) -> dict[str, Any]:
    from sqlalchemy import func, select

    from heroes.store.schema import ItemRow, VectorRow

    with store.session() as s:
        items = int(s.execute(select(func.count(ItemRow.id))).scalar() or 0)
        kinds = dict(
            s.execute(
                select(VectorRow.kind, func.count(VectorRow.id)).group_by(VectorRow.kind)
            ).all()
        )
        by_status = dict(
            s.execute(select(ItemRow.status, func.count(ItemRow.id)).group_by(ItemRow.status)).all()
        )
    return {
        "items": items,
        "vectors": {str(k): int(v) for k, v in kinds.items()},
        "status": by_status,
    }


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _per(total: int, n: int) -> float | None:
    return round(total / n, 1) if n else None


def _table_summary(tables: dict[str, int], counts: dict[str, Any]) -> dict[str, Any]:
    items = counts["items"]
    vectors = sum(counts["vectors"].values())
    item_tables = {k: v for k, v in tables.items() if k == "items" or k.startswith("ix_items")}
    item_tables.update({k: v for k, v in tables.items() if k.startswith("sqlite_autoindex_items")})
    item_tables.update(
        {k: v for k, v in tables.items() if k.startswith(("items_pkey", "uq_items"))}
    )
    vec_tables = {k: v for k, v in tables.items() if "vector" in k}
    total = sum(tables.values())
    return {
        "total_bytes": total,
        "bytes_per_item": _per(total, items),
        "items_tables_bytes_per_item": _per(sum(item_tables.values()), items),
        "vectors_tables_bytes_per_vector": _per(sum(vec_tables.values()), vectors),
        "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1])),
    }


class PgServer:
    """A throw-away PostgreSQL server in a temporary folder (as tests/store/conftest.py starts)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="heroes-pg-bench-"))
        self.port = 0
        self.as_user: list[str] = []

    @staticmethod
    def _bin(name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
        path = found[0] if found else shutil.which(name)
        if not path:
            raise RuntimeError(f"PostgreSQL's {name} is not installed")
        return path

    def __enter__(self) -> PgServer:
        data = self.root / "data"
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        init = [
            self._bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        subprocess.run([*self.as_user, *init], check=True, capture_output=True)
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
        start = [self._bin("pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w"]
        subprocess.run(
            [*self.as_user, *start, "-o", opts, "start"], check=True, capture_output=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        stop = [self._bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]
        subprocess.run([*self.as_user, *stop], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def createdb(self, name: str) -> str:
        cmd = [self._bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        subprocess.run([*cmd, name], check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def version(self) -> str:
        out = subprocess.run([self._bin("postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()


def _pg_tables(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as con:
            rows = con.execute(
                text(
                    "SELECT c.relname, pg_relation_size(c.oid) + "
                    "COALESCE(pg_total_relation_size(c.reltoastrelid), 0) "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(name): int(size) for name, size in rows}


def _pg_total_items(url: str) -> dict[str, int]:
    """pg_total_relation_size (table + indexes + TOAST) of the two big tables."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as con:
            return {
                t: int(con.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar() or 0)
                for t in ("items", "vectors")
            }
    finally:
        engine.dispose()


def _pg_vacuum_full(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as con:
            con.execute(text("VACUUM FULL"))
    finally:
        engine.dispose()


def triage_case(
    evidence: Path, case: Path, *, models: bool, db_url: str | None
) -> tuple[dict[str, Any], Any]:
    from heroes.config import Settings
    from heroes.pipeline.runner import triage

    settings = Settings(engine="local", models=models, db_url=db_url)
    t0 = time.perf_counter()
    summary = triage(evidence, case, settings=settings)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "files_s": round(summary.new / wall, 1)}, settings


def store_sizes(
    work: Path, images: int, model_images: int, seed: int, pg: bool, pg_models: bool = True
) -> dict[str, Any]:
    from heroes.store.db import CaseStore

    out: dict[str, Any] = {}
    server = PgServer() if pg else None
    with server if server is not None else contextlib.nullcontext():
        if server is not None:
            out["postgresql_version"] = server.version()
        for label, n, models in (("no_models", images, False), ("models", model_images, True)):
            evidence = work / f"seizure-{label}"
            mix = make_seizure(evidence, n, seed)
            res: dict[str, Any] = {"seizure": mix}
            case = work / f"case-{label}"
            res["sqlite_pass"], _ = triage_case(evidence, case, models=models, db_url=None)
            store = CaseStore(case, create=False)
            counts = _counts(store)
            store.close()
            res["counts"] = counts
            db = case / "case.db"
            res["sqlite"] = {
                "file_bytes": db.stat().st_size,
                "as_written": _table_summary(_sqlite_tables(db), counts),
            }
            _sqlite_vacuum(db)
            res["sqlite"]["file_bytes_after_vacuum"] = db.stat().st_size
            res["sqlite"]["after_vacuum"] = _table_summary(_sqlite_tables(db), counts)
            vectors = sum(counts["vectors"].values())
            index_bytes = _dir_bytes(case / "index") if (case / "index").exists() else 0
            res["index_dir"] = {
                "bytes": index_bytes,
                "bytes_per_vector": _per(index_bytes, vectors),
                "bytes_per_item": _per(index_bytes, counts["items"]),
            }
            if server is not None and (pg_models or not models):
                url = server.createdb(f"scale_{label}")
                res["postgresql_pass"], _ = triage_case(
                    evidence, work / f"case-pg-{label}", models=models, db_url=url
                )
                res["postgresql"] = {
                    "as_written": _table_summary(_pg_tables(url), counts),
                    "pg_total_relation_size": _pg_total_items(url),
                }
                _pg_vacuum_full(url)
                res["postgresql"]["after_vacuum_full"] = _table_summary(_pg_tables(url), counts)
                res["postgresql"]["pg_total_relation_size_after_vacuum_full"] = _pg_total_items(url)
            res["per_file_ratios"] = {
                "items_per_image": round(counts["items"] / n, 3),
                **{
                    f"{kind}_vectors_per_image": round(v / n, 3)
                    for kind, v in counts["vectors"].items()
                },
            }
            out[label] = res
            shutil.rmtree(evidence, ignore_errors=True)
    return out


# --- 3. index build ----------------------------------------------------------------------------
def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for a in range(0, n, step):
        b = min(n, a + step)
        which = rng.integers(0, clusters, b - a)
        noise = rng.standard_normal((b - a, dim)).astype(np.float32) * 0.35 / math.sqrt(dim)
        out[a:b] = centres[which] + noise
    return out


def index_builds(sizes: list[int], seed: int, work: Path) -> dict[str, Any]:
    from heroes.index import BinaryIndex, FloatIndex, Meta

    out: dict[str, Any] = {}
    for n in sizes:
        row: dict[str, Any] = {}
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        metas = [Meta("case", i + 1) for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        pdq = BinaryIndex()
        pdq.add(codes, metas)
        build, cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        path = pdq.save(work / f"pdq-{n}")
        save = time.perf_counter() - t0
        row["pdq"] = {
            "build_s": round(build, 2),
            "build_cpu_s": round(cpu, 2),
            "save_s": round(save, 2),
            "bytes": _dir_bytes(path),
            "type": pdq.index_type,
        }
        del pdq, codes
        for kind, kseed in (("face", seed + 1), ("scene", seed + 2)):
            x = clustered(n, 128, kseed)
            t0, c0 = time.perf_counter(), time.process_time()
            index = FloatIndex(128)
            index.add(x, metas)
            build, cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            path = index.save(work / f"{kind}-{n}")
            save = time.perf_counter() - t0
            row[kind] = {
                "build_s": round(build, 2),
                "build_cpu_s": round(cpu, 2),
                "save_s": round(save, 2),
                "bytes": _dir_bytes(path),
                "type": index.index_type,
                "nlist": index.nlist,
            }
            if kind == "face":
                # as update_indexes builds it: 20,000 rows per read from the store
                t0, c0 = time.perf_counter(), time.process_time()
                chunked = FloatIndex(128)
                for a in range(0, n, 20_000):
                    chunked.add(x[a : a + 20_000], metas[a : a + 20_000])
                row["face_in_20k_chunks"] = {
                    "build_s": round(time.perf_counter() - t0, 2),
                    "build_cpu_s": round(time.process_time() - c0, 2),
                    "type": chunked.index_type,
                    "nlist": chunked.nlist,
                }
                del chunked
            del index, x
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(work / f"pdq-{n}", ignore_errors=True)
        out[str(n)] = row
    return out


# --- 4. finalize and ranking -------------------------------------------------------------------
_TEMPLATE_FIELDS = (
    "media_type",
    "mime",
    "status",
    "width",
    "height",
    "exif",
    "faces",
    "nudity",
    "size",
    "error",
)


def _templates(case: Path) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from heroes.store.db import CaseStore
    from heroes.store.schema import ItemRow

    store = CaseStore(case, create=False)
    try:
        with store.session() as s:
            rows = s.execute(
                select(*[getattr(ItemRow, f) for f in _TEMPLATE_FIELDS]).where(
                    ItemRow.status.in_(("ok", "error"))
                )
            ).all()
    finally:
        store.close()
    return [dict(zip(_TEMPLATE_FIELDS, r, strict=True)) for r in rows]


def synthetic_case(case: Path, n: int, templates: list[dict[str, Any]], seed: int) -> None:
    """``n`` item rows copied from ``templates`` with random PDQ hashes; 10 % are copies."""
    from heroes.store.db import CaseStore

    rng = np.random.default_rng(seed)
    store = CaseStore(case)
    run_id = store.start_run("/evidence", {})
    rows: list[dict[str, Any]] = []
    originals: list[int] = []
    for i in range(1, n + 1):
        t = templates[i % len(templates)]
        row: dict[str, Any] = {
            **t,
            "id": i,
            "evidence": "/evidence",
            "path": f"dir{i // 1000:04d}/file{i:07d}.jpg",
            "depth": 0,
            "mtime": 1.7e9,
            "run_id": run_id,
            "md5": rng.bytes(16).hex(),
            "sha1": rng.bytes(20).hex(),
            "sha256": rng.bytes(32).hex(),
        }
        if originals and rng.random() < 0.1:
            row.update(status="duplicate", duplicate_of=int(rng.choice(originals)))
        elif t["media_type"] == "image" and t["status"] == "ok":
            dihedral = [rng.bytes(32).hex() for _ in range(8)]
            row.update(pdq=dihedral[0], pdq_quality=90, pdq_dihedral=dihedral)
            originals.append(i)
        rows.append(row)
        if len(rows) == 5000:
            store.insert_and_update(rows)
            rows = []
    store.insert_and_update(rows)
    store.close()


def pdq_pair_scan(refs: int, queries: int, seed: int) -> dict[str, Any]:
    """The exact binary range scan that finalize's visual groups run over every PDQ hash and its
    7 rotations and mirrors against every hash of the case (matching.pairs_within): its rate in
    hash comparisons per second, and the hours that makes at the plan's file counts."""
    import faiss

    rng = np.random.default_rng(seed)
    index = faiss.IndexBinaryFlat(256)
    index.add(rng.integers(0, 256, (refs, 32), dtype=np.uint8))
    q = rng.integers(0, 256, (queries, 32), dtype=np.uint8)
    t0, c0 = time.perf_counter(), time.process_time()
    index.range_search(q, 32)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rate_wall, rate_cpu = refs * queries / wall, refs * queries / cpu
    return {
        "refs": refs,
        "queries": queries,
        "threads": faiss.omp_get_max_threads(),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "comparisons_per_wall_s": round(rate_wall),
        "comparisons_per_cpu_s": round(rate_cpu),
        # 8 hashes per image (itself + 7 variants) against all N, one core
        "grouping_cpu_hours_at": {
            str(f): round(8 * f * f / rate_cpu / 3600, 1) for f in PLAN_FILES
        },
    }


def finalize_times(sizes: list[int], template_case: Path, seed: int, work: Path) -> dict[str, Any]:
    from heroes.config import Settings
    from heroes.pipeline.runner import finalize, rank_items
    from heroes.store.db import CaseStore

    templates = _templates(template_case)
    settings = Settings(engine="local")
    out: dict[str, Any] = {"templates": len(templates), "sizes": {}}
    out["pdq_pair_scan"] = pdq_pair_scan(max(sizes) * 4, 8192, seed)
    for k, n in enumerate(sizes):
        case = work / f"final-{n}"
        synthetic_case(case, n, templates, seed)
        store = CaseStore(case, create=False)
        t0, c0 = time.perf_counter(), time.process_time()
        finalize(store, settings)
        fin, fin_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        rank_items(store, settings)
        rank, rank_cpu = time.perf_counter() - t0, time.process_time() - c0
        row: dict[str, Any] = {
            "finalize_s": round(fin, 2),
            "finalize_cpu_s": round(fin_cpu, 2),
            "rank_items_s": round(rank, 2),
            "rank_items_cpu_s": round(rank_cpu, 2),
            "finalize_us_per_item": round(fin / n * 1e6, 1),
            "rank_us_per_item": round(rank / n * 1e6, 1),
        }
        if k == 0:  # peak Python memory of the driver (traced, so timed separately above)
            for name, fn in (("finalize", finalize), ("rank_items", rank_items)):
                tracemalloc.start()
                fn(store, settings)
                _cur, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                row[f"{name}_peak_python_bytes_per_item"] = round(peak / n, 1)
        store.close()
        shutil.rmtree(case, ignore_errors=True)
        out["sizes"][str(n)] = row
    ns = sorted(int(s) for s in out["sizes"])
    if len(ns) >= 2:
        # growth between the two largest cases (the quadratic part shows at the large end), on
        # CPU seconds, which other load on the machine disturbs less than wall time
        a, b = out["sizes"][str(ns[-2])], out["sizes"][str(ns[-1])]
        for key in ("finalize_cpu_s", "rank_items_cpu_s"):
            if a[key] > 0 and b[key] > 0:
                out[f"{key}_growth_exponent"] = round(
                    math.log(b[key] / a[key]) / math.log(ns[-1] / ns[-2]), 2
                )
        big = out["sizes"][str(ns[-1])]
        expo = max(1.0, out.get("finalize_cpu_s_growth_exponent", 1.0))
        out["finalize_cpu_hours_at"] = {
            str(f): round(big["finalize_cpu_s"] * (f / ns[-1]) ** expo / 3600, 2)
            for f in PLAN_FILES
        }
        out["rank_items_cpu_minutes_at_linear"] = {
            str(f): round(big["rank_items_cpu_s"] * f / ns[-1] / 60, 1) for f in PLAN_FILES
        }
    return out


# --- main -----------------------------------------------------------------------------------------
def _sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dup-entries", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=3000, help="images of the run without models")
    ap.add_argument("--model-images", type=int, default=600, help="images of the run with models")
    ap.add_argument("--vectors", default="100000,1000000", help="index sizes, comma-separated")
    ap.add_argument("--finalize", default="10000,25000,50000", help="case sizes for finalize")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument(
        "--only", default="", help="comma-separated parts: dup,cpu,store,index,finalize"
    )
    ap.add_argument("--quick", action="store_true", help="a few minutes: smaller everything")
    ap.add_argument("--out", type=Path, default=None, help="result file (default results/)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the cases here")
    args = ap.parse_args(argv)
    if args.quick:
        args.dup_entries = min(args.dup_entries, 20_000)
        args.images, args.model_images = 300, 60
        args.vectors, args.finalize = "100000", "2000,5000"
    parts = set(filter(None, args.only.split(","))) or {"dup", "cpu", "store", "index", "finalize"}
    info = machine()
    print(f"seed={args.seed} quick={args.quick} parts={sorted(parts)}", flush=True)
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB", flush=True)
    result: dict[str, Any] = {"seed": args.seed, "quick": args.quick, "plan_files": PLAN_FILES}
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # other processes share the cores: the load says how far wall times are from a quiet machine
    result["load_average_1_5_15_before"] = [round(x, 2) for x in os.getloadavg()]
    with _workdir(args.workdir) as work:
        if "dup" in parts:
            result["dup_map"] = dup_map(args.dup_entries, args.seed)
            print("dup_map", result["dup_map"], flush=True)
        if "cpu" in parts:
            result["per_file_cpu"] = per_file_cpu(60 if args.quick else 200, args.seed, work)
            print("per_file_cpu", result["per_file_cpu"], flush=True)
        if "store" in parts or "finalize" in parts:
            images = args.images if "store" in parts else 0
            if "store" in parts:
                result["store"] = store_sizes(
                    work, images, args.model_images, args.seed, pg=not args.no_pg
                )
            else:  # the model run's records are the templates of the finalize cases
                templates = store_sizes(work, 10, min(60, args.model_images), args.seed, pg=False)
                result["finalize_templates_from"] = templates["models"]["counts"]
            print("store done", flush=True)
        if "index" in parts:
            result["indexes"] = index_builds(_sizes(args.vectors), args.seed, work)
            print("indexes", result["indexes"], flush=True)
        if "finalize" in parts:
            result["finalize"] = finalize_times(
                _sizes(args.finalize), work / "case-models", args.seed, work
            )
            print("finalize", result["finalize"], flush=True)
    result["load_average_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.out is not None:
        import json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": info, **result}, indent=2) + "\n")
    else:
        from _common import RESULTS

        old = RESULTS / "scale.json"
        if args.only and old.is_file():  # a partial run updates the parts it measured
            import json

            kept = json.loads(old.read_text())
            for key in ("benchmark", "when", "machine"):
                kept.pop(key, None)
            result = {**kept, **result, "parts_updated": sorted(parts)}
        write_result("scale", result)
    return result


if __name__ == "__main__":
    main()
