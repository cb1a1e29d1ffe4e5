"""Triage jobs started over the API: the CLI's pass (:func:`heroes.pipeline.runner.triage`) run in
a child process that a background thread waits for, one job at a time per case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError

from heroes.config import Settings
from heroes.serving.cases import Cases
from heroes.serving.db import JobRow, ServiceDB, utcnow
from heroes.store.db import DB_FILE, case_db_url
from heroes.store.schema import ItemRow

ACTIVE = ("queued", "running")


class JobError(ValueError):
    """A job that cannot be started (bad evidence path); HTTP 422."""


class JobBusyError(Exception):
    """The case already has a job queued or running; HTTP 409."""


class Jobs:
    def __init__(
        self,
        db: ServiceDB,
        cases: Cases,
        settings: Callable[[], Settings],
        evidence_roots: Sequence[Path] = (),
    ) -> None:
        self.db = db
        self.cases = cases
        self.settings = settings
        self.evidence_roots = [Path(os.path.realpath(r)) for r in evidence_roots]
        self._threads: dict[int, threading.Thread] = {}

    def check_evidence(self, evidence: str) -> Path:
        path = Path(evidence)
        if not path.is_absolute():
            raise JobError("evidence must be an absolute path on the server")
        real = Path(os.path.realpath(path))
        if not real.exists():
            raise JobError(f"no such evidence on the server: {evidence}")
        if self.evidence_roots and not any(
            real == r or r in real.parents for r in self.evidence_roots
        ):
            raise JobError("evidence is outside the folders this server may read")
        if real == self.cases.root or self.cases.root in real.parents:
            raise JobError("evidence must not be inside the cases folder")
        return real

    def submit(self, case: str, evidence: str, by: str) -> dict[str, Any]:
        case_dir = self.cases.folder(case, must_exist=False)
        source = self.check_evidence(evidence)
        with self.db.session() as s, s.begin():
            busy = s.execute(
                select(JobRow.id).where(JobRow.case == case, JobRow.state.in_(ACTIVE))
            ).first()
            if busy:
                raise JobBusyError(f"case {case!r} already has job {busy[0]} queued or running")
            row = JobRow(case=case, evidence=str(source), state="queued", created_by=by)
            s.add(row)
            s.flush()
            job_id = row.id
        t = threading.Thread(
            target=self._run, args=(job_id, source, case_dir), name=f"heroes-job-{job_id}"
        )
        self._threads[job_id] = t
        t.start()
        return self.get(job_id)

    def _set(self, job_id: int, **values: Any) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(JobRow, job_id)
            assert row is not None
            for k, v in values.items():
                setattr(row, k, v)

    def _run(self, job_id: int, evidence: Path, case_dir: Path) -> None:
        """Run the pass in a child process and record how it ended; never raises."""
        self._set(job_id, state="running", started_at=utcnow())
        try:
            done = subprocess.run(
                [sys.executable, "-m", "heroes.serving.jobrun", str(evidence), str(case_dir)],
                input=self.settings().model_dump_json(),
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines:
                summary = json.loads(lines[-1])
                self._set(job_id, state="done", finished_at=utcnow(), summary=summary)
                return
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            error = f"triage exited with {done.returncode}: " + " | ".join(tail)
        except Exception as exc:  # the job records every failure; the server goes on
            error = f"{type(exc).__name__}: {exc}"
        self._set(job_id, state="failed", finished_at=utcnow(), error=error[-2000:])

    def wait(self, job_id: int, timeout: float | None = None) -> None:
        t = self._threads.get(job_id)
        if t is not None:
            t.join(timeout)

    def get(self, job_id: int) -> dict[str, Any]:
        with self.db.reader() as s:
            row = s.get(JobRow, job_id)
        if row is None:
            raise LookupError(job_id)
        summary = row.summary or {}
        if row.state == "running":
            items = _count_items(self.cases.root / row.case)
        else:
            items = summary.get("new", 0) + summary.get("already_done", 0) if summary else 0
        return {
            "id": row.id,
            "case": row.case,
            "evidence": row.evidence,
            "state": row.state,
            "created_by": row.created_by,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "started_at": row.started_at.isoformat() if row.started_at else None,
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "progress": {
                "items": items,
                "new": summary.get("new"),
                "errors": sum((summary.get("errors") or {}).values()) if summary else None,
            },
            "errors": summary.get("errors") or {},
            "error": row.error,
            "summary": row.summary,
        }

    def case_of(self, job_id: int) -> str | None:
        with self.db.reader() as s:
            row = s.get(JobRow, job_id)
        return row.case if row else None


def _count_items(case_dir: Path) -> int:
    """Items the running pass has written so far; read without creating anything (the pass
    creates the store's tables, and two creators at once would collide)."""
    if not (case_dir / DB_FILE).is_file():
        return 0
    engine = create_engine(case_db_url(case_dir), future=True)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ItemRow)).scalar_one())
    except DBAPIError:  # the pass has not created the table yet
        return 0
    finally:
        engine.dispose()
