"""Triage jobs (admin and lab users start them; anyone who sees the case may follow them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from heroes.serving.deps import NO_ACCESS, LabDep, PrincipalDep, StateDep, audit
from heroes.serving.problems import Problem
from heroes.serving.schemas import JobCreate

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post("", status_code=202)
def create_job(body: JobCreate, who: LabDep, state: StateDep, request: Request) -> dict[str, Any]:
    if not who.may_see(body.case):
        raise Problem(403, NO_ACCESS)
    job = state.jobs.submit(body.case, body.evidence, who.user)
    state.metrics.jobs_started.inc()
    audit(
        request,
        state,
        who,
        "job.create",
        case=body.case,
        target=str(job["id"]),
        detail={"evidence": job["evidence"]},
    )
    return job


@router.get("/{job_id}")
def get_job(job_id: int, who: PrincipalDep, state: StateDep) -> dict[str, Any]:
    case = state.jobs.case_of(job_id)
    if case is None or not who.may_see(case):
        raise Problem(404, f"no job {job_id}")
    return state.jobs.get(job_id)
