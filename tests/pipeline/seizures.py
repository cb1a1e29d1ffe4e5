"""Helpers for the pass tests: small generated seizures, and watching a run's case store."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def jpeg(seed: int, size: int = 48) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def case_rows(case: Path) -> dict[str, dict[str, Any]]:
    """A case's records by path."""
    from heroes.pipeline.report import records
    from heroes.store import CaseStore

    store = CaseStore(case, create=False)
    try:
        return {r["path"]: r for r in records(store)}
    finally:
        store.close()


def seizure(root: Path, n: int, start: int = 0, folders: int = 7) -> Path:
    """``n`` distinct random JPEGs spread over ``folders`` folders under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        d = root / f"d{i % folders}"
        d.mkdir(exist_ok=True)
        (d / f"img_{i:05d}.jpg").write_bytes(jpeg(i))
    return root


def first_rows(proc: subprocess.Popen[bytes], db: Path, timeout: float) -> int:
    """Rows in the case store once a running triage has committed some (0 if it never did)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    done = c.execute("select count(*) from items").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done > 0:
                return int(done)
        time.sleep(0.05)
    return 0
