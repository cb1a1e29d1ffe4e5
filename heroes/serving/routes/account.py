"""Who am I, my preferences and exposure; browser sessions; users and keys (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from heroes.serving.auth import (
    add_user,
    create_key,
    revoke_key,
    set_reveal_cap,
    sign_session,
)
from heroes.serving.db import UserRow
from heroes.serving.deps import (
    SESSION_COOKIE,
    AdminDep,
    PrincipalDep,
    StateDep,
    audit,
)
from heroes.serving.exposure import exposure_all, exposure_today
from heroes.serving.problems import Problem
from heroes.serving.schemas import KeyCreate, PrefsUpdate, UserCreate, UserUpdate

router = APIRouter(prefix="/api/v1", tags=["account"])


def _prefs(state: StateDep, user_id: int) -> dict[str, Any]:
    with state.db.reader() as s:
        u = s.get(UserRow, user_id)
    assert u is not None
    return {"blur": u.blur, "greyscale": u.greyscale, "daily_reveal_cap": u.daily_reveal_cap}


@router.get("/me")
def me(who: PrincipalDep, state: StateDep) -> dict[str, Any]:
    cases = state.cases.names()
    return {
        "user": who.user,
        "role": who.role,
        "key_id": who.key_id,
        "cases": [c for c in cases if who.may_see(c)],
        "prefs": _prefs(state, who.user_id),
        "exposure": exposure_today(state.db, who.user_id),
    }


@router.patch("/me/prefs")
def update_prefs(
    body: PrefsUpdate, who: PrincipalDep, state: StateDep, request: Request
) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    with state.db.session() as s, s.begin():
        u = s.get(UserRow, who.user_id)
        assert u is not None
        for k, v in changes.items():
            setattr(u, k, v)
    audit(request, state, who, "prefs.update", detail=changes)
    return _prefs(state, who.user_id)


@router.get("/exposure")
def exposure(who: AdminDep, state: StateDep, request: Request) -> list[dict[str, Any]]:
    audit(request, state, who, "exposure.view")
    return exposure_all(state.db)


@router.post("/session")
def sign_in(
    who: PrincipalDep, state: StateDep, request: Request, response: Response
) -> dict[str, Any]:
    """A signed, HTTP-only session cookie for the presented key (GET requests only: thumbnails in
    plain ``<img>`` tags, the API docs); revoking the key ends it."""
    hours = state.settings.session_hours
    response.set_cookie(
        SESSION_COOKIE,
        sign_session(who.key_id, state.pepper, hours),
        max_age=int(hours * 3600),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    audit(request, state, who, "session.create")
    return {"user": who.user, "expires_in": int(hours * 3600)}


@router.delete("/session", status_code=204)
def sign_out() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/users", status_code=201)
def create_user(
    body: UserCreate, who: AdminDep, state: StateDep, request: Request
) -> dict[str, Any]:
    row = add_user(state.db, body.name, body.role, daily_reveal_cap=body.daily_reveal_cap)
    audit(request, state, who, "user.create", target=row.name, detail={"role": row.role})
    return {"user": row.name, "role": row.role, "daily_reveal_cap": row.daily_reveal_cap}


@router.patch("/users/{name}")
def update_user(
    name: str, body: UserUpdate, who: AdminDep, state: StateDep, request: Request
) -> dict[str, Any]:
    """Set or lift a user's daily reveal cap."""
    set_reveal_cap(state.db, name, body.daily_reveal_cap)
    audit(request, state, who, "user.update", target=name, detail=body.model_dump())
    with state.db.reader() as s:
        u = s.execute(select(UserRow).where(UserRow.name == name)).scalar_one()
    return {"user": u.name, "role": u.role, "daily_reveal_cap": u.daily_reveal_cap}


@router.get("/users")
def list_users(who: AdminDep, state: StateDep) -> list[dict[str, Any]]:
    with state.db.reader() as s:
        rows = s.execute(select(UserRow).order_by(UserRow.name)).scalars().all()
    return [{"user": u.name, "role": u.role, "daily_reveal_cap": u.daily_reveal_cap} for u in rows]


@router.post("/keys", status_code=201)
def new_key(body: KeyCreate, who: AdminDep, state: StateDep, request: Request) -> dict[str, Any]:
    key_id, key = create_key(state.db, body.user, state.pepper, body.cases)
    audit(
        request,
        state,
        who,
        "key.create",
        target=key_id,
        detail={"user": body.user, "cases": sorted(set(body.cases))},
    )
    return {"key_id": key_id, "key": key, "user": body.user, "cases": sorted(set(body.cases))}


@router.delete("/keys/{key_id}", status_code=204)
def delete_key(key_id: str, who: AdminDep, state: StateDep, request: Request) -> Response:
    if not revoke_key(state.db, key_id):
        raise Problem(404, f"no active key {key_id!r}")
    audit(request, state, who, "key.revoke", target=key_id)
    return Response(status_code=204)
