"""What every route gets from the app: the service state, the caller, the case it asks for, and
one call to write the audit row."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request
from numpy.typing import NDArray

from heroes.config import Settings
from heroes.pipeline.infer import Analyzer, FrameResult
from heroes.serving import audit as audit_log
from heroes.serving.auth import (
    AuthError,
    Principal,
    authenticate,
    principal_for_key_id,
    session_key_id,
)
from heroes.serving.cases import Cases
from heroes.serving.db import ServiceDB
from heroes.serving.exposure import touch
from heroes.serving.jobs import Jobs
from heroes.serving.metrics import Metrics
from heroes.serving.problems import Problem
from heroes.serving.settings import ServeSettings
from heroes.store.db import CaseStore

SESSION_COOKIE = "heroes_session"
#: the one answer for a case the caller may not see, whether it exists or not
NO_ACCESS = "this key has no access to that case"


@dataclass
class ServiceState:
    """Everything a process loads once (lifespan): settings, databases, models, jobs, metrics."""

    settings: ServeSettings
    core: Settings
    pepper: str
    db: ServiceDB
    cases: Cases
    jobs: Jobs
    metrics: Metrics
    face_analyzer: Analyzer
    scene_analyzer: Analyzer


class LockedAnalyzer(Analyzer):
    """The query models of a process, run by one request at a time (an ONNX session already uses
    every core); index search and database reads of other requests go on meanwhile."""

    def __init__(self, base: Analyzer, lock: threading.Lock) -> None:
        super().__init__(base.opts)
        self._lock = lock

    def load(self) -> None:
        """Load every model this holder runs (each property loads its model on first use)."""
        with self._lock:
            for model in (self.detector, self.landmarks, self.age, self.face_embedder, self.scene):
                _ = model

    def analyze(
        self, frames: list[NDArray[np.uint8]], times: list[float | None], scale: float = 1.0
    ) -> list[FrameResult]:
        with self._lock:
            return super().analyze(frames, times, scale)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


StateDep = Annotated[ServiceState, Depends(get_state)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def current_principal(request: Request, state: StateDep) -> Principal:
    """The caller, from ``Authorization: Bearer KEY`` (or, for reads, the signed session cookie);
    401 otherwise. A revoked key fails at once: every request looks the key up."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    try:
        if scheme.lower() == "bearer" and key.strip():
            who = authenticate(state.db, key, state.pepper)
        elif request.method in ("GET", "HEAD") and SESSION_COOKIE in request.cookies:
            key_id = session_key_id(request.cookies[SESSION_COOKIE], state.pepper)
            who = principal_for_key_id(state.db, key_id)
        else:
            raise AuthError("an API key is required (Authorization: Bearer KEY)")
    except AuthError as exc:
        raise Problem(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    touch(state.db, who.user_id, state.settings.active_gap_s)
    request.state.principal = who
    return who


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Any:
    def check(who: PrincipalDep) -> Principal:
        if who.role not in roles:
            raise Problem(403, f"this needs the role {' or '.join(roles)}")
        return who

    return Depends(check)


AdminDep = Annotated[Principal, require_roles("admin")]
LabDep = Annotated[Principal, require_roles("admin", "lab")]


@dataclass(frozen=True)
class CaseRef:
    name: str
    folder: Path
    store: CaseStore


def case_ref(case: str, who: PrincipalDep, state: StateDep) -> CaseRef:
    """The case named in the path, for a caller allowed to see it. Without a grant the answer is
    403 whether or not the case exists; a name that is not a plain folder under the root is never
    granted, and for admins it is simply not found."""
    if not who.may_see(case):
        raise Problem(403, NO_ACCESS)
    folder = state.cases.folder(case)
    return CaseRef(case, folder, state.cases.store(case))


CaseDep = Annotated[CaseRef, Depends(case_ref)]


def audit(
    request: Request,
    state: ServiceState,
    who: Principal | None,
    action: str,
    *,
    case: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    audit_log.append(
        state.db,
        action,
        user=who.user if who else None,
        key_id=who.key_id if who else None,
        case=case,
        target=target,
        detail=detail,
        source=client_address(request),
    )
