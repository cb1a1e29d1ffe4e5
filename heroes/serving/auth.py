"""API keys, users and grants: creation, revocation and checking.

A key reads ``hk_<key id>_<secret part>``. Only an HMAC-SHA256 of the whole key under the server's
pepper is stored; a request's key is found by its id and compared in constant time. A key belongs
to a user (whose role it carries) and is granted cases one by one; admin keys see every case.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from heroes.serving.db import ROLES, GrantRow, KeyRow, ServiceDB, UserRow, utcnow

_KEY_RE = re.compile(r"^hk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,64})$")
#: a case is a plain folder name: letters, digits, ``.``, ``_``, ``-``; never ``.`` or ``..``
CASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class AuthError(Exception):
    """The request carries no valid key (HTTP 401)."""


class AccountError(ValueError):
    """A user or key operation that cannot be done (unknown user, bad name or role)."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: the key's user, role and the cases it may see (``None``: all)."""

    user_id: int
    user: str
    role: str
    key_id: str
    cases: frozenset[str] | None
    prefs: dict[str, object] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, case: str) -> bool:
        return self.cases is None or case in self.cases


def valid_case_name(name: str) -> bool:
    return bool(CASE_NAME_RE.match(name)) and ".." not in name


def key_digest(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def add_user(
    db: ServiceDB, name: str, role: str, *, daily_reveal_cap: int | None = None
) -> UserRow:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if not USER_NAME_RE.match(name):
        raise AccountError(f"not a valid user name: {name!r}")
    with db.session() as s, s.begin():
        if s.execute(select(UserRow.id).where(UserRow.name == name)).first():
            raise AccountError(f"user {name!r} exists already")
        row = UserRow(name=name, role=role, daily_reveal_cap=daily_reveal_cap)
        s.add(row)
        s.flush()
        return row


def set_reveal_cap(db: ServiceDB, name: str, cap: int | None) -> None:
    """Set (or, with None, lift) a user's daily reveal cap."""
    if cap is not None and cap < 0:
        raise AccountError("a reveal cap is a number of pictures, 0 or more")
    with db.session() as s, s.begin():
        user = s.execute(select(UserRow).where(UserRow.name == name)).scalar_one_or_none()
        if user is None:
            raise AccountError(f"no user {name!r}")
        user.daily_reveal_cap = cap


def create_key(db: ServiceDB, user: str, pepper: str, cases: Sequence[str] = ()) -> tuple[str, str]:
    """A new key for ``user``, granted ``cases``; returns (key id, key). The key is shown once."""
    for c in cases:
        if not valid_case_name(c):
            raise AccountError(f"not a valid case name: {c!r} (a plain folder name)")
    key_id = secrets.token_hex(8)
    key = f"hk_{key_id}_{secrets.token_urlsafe(32)}"
    with db.session() as s, s.begin():
        uid = s.execute(select(UserRow.id).where(UserRow.name == user)).scalar()
        if uid is None:
            raise AccountError(f"no user {user!r} (add it with `heroes users add`)")
        s.add(KeyRow(id=key_id, user_id=uid, digest=key_digest(key, pepper)))
        s.flush()
        for c in sorted(set(cases)):
            s.add(GrantRow(key_id=key_id, case=c))
    return key_id, key


def revoke_key(db: ServiceDB, key_id: str) -> bool:
    """Revoke a key at once; False when there is no such (unrevoked) key."""
    with db.session() as s, s.begin():
        row = s.get(KeyRow, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        return True


def grant(db: ServiceDB, key_id: str, case: str) -> None:
    if not valid_case_name(case):
        raise AccountError(f"not a valid case name: {case!r}")
    with db.session() as s, s.begin():
        if s.get(KeyRow, key_id) is None:
            raise AccountError(f"no key {key_id!r}")
        if not s.execute(
            select(GrantRow.id).where(GrantRow.key_id == key_id, GrantRow.case == case)
        ).first():
            s.add(GrantRow(key_id=key_id, case=case))


def authenticate(db: ServiceDB, key: str, pepper: str) -> Principal:
    """The principal of a presented key; :class:`AuthError` for a malformed, unknown, wrong or
    revoked key (one message for all, so the answer tells an attacker nothing)."""
    m = _KEY_RE.match(key.strip())
    digest = key_digest(key.strip(), pepper)
    with db.reader() as s:
        row = s.get(KeyRow, m.group(1)) if m else None
        stored = row.digest if row is not None else key_digest("none", pepper)
        ok = hmac.compare_digest(stored, digest)
        if row is None or not ok or row.revoked_at is not None:
            raise AuthError("invalid or revoked API key")
        return principal_for(s, row)


def principal_for_key_id(db: ServiceDB, key_id: str) -> Principal:
    with db.reader() as s:
        row = s.get(KeyRow, key_id)
        if row is None or row.revoked_at is not None:
            raise AuthError("invalid or revoked API key")
        return principal_for(s, row)


def principal_for(s: Session, row: KeyRow) -> Principal:
    user = s.get(UserRow, row.user_id)
    assert user is not None
    cases: frozenset[str] | None = None
    if user.role != "admin":
        cases = frozenset(
            s.execute(select(GrantRow.case).where(GrantRow.key_id == row.id)).scalars()
        )
    return Principal(
        user.id,
        user.name,
        user.role,
        row.id,
        cases,
        {"blur": user.blur, "greyscale": user.greyscale, "daily_reveal_cap": user.daily_reveal_cap},
    )


# browser sessions ---------------------------------------------------------------------------------


def sign_session(key_id: str, pepper: str, hours: float) -> str:
    """A cookie value naming the key, valid for ``hours``, signed with the pepper."""
    expires = int(time.time() + hours * 3600)
    body = f"{key_id}.{expires}"
    mac = hmac.new(pepper.encode(), f"session:{body}".encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def session_key_id(value: str, pepper: str) -> str:
    """The key id of a signed session cookie; :class:`AuthError` if forged or expired."""
    parts = value.split(".")
    if len(parts) != 3:
        raise AuthError("invalid session")
    key_id, expires, mac = parts
    want = hmac.new(
        pepper.encode(), f"session:{key_id}.{expires}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(want, mac):
        raise AuthError("invalid session")
    if not expires.isdigit() or int(expires) < time.time():
        raise AuthError("session expired")
    return key_id
