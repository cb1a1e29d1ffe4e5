"""The case folder's lock: one writer at a time (a triage, or a search updating indexes)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from heroes.store.db import StoreError

LOCK_FILE = ".lock"


class CaseBusyError(StoreError):
    """Another process holds the case's lock."""


@contextlib.contextmanager
def case_lock(case_dir: Path) -> Iterator[None]:
    """Hold the case's lock, or raise :class:`CaseBusyError` at once if another process has it.

    An ``flock`` on ``CASE/.lock``: released by the kernel when the holder dies, so a killed
    triage never leaves the case locked."""
    fd = os.open(Path(case_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CaseBusyError(f"case {case_dir} is being triaged by another process") from exc
        yield
    finally:
        os.close(fd)
