"""What the service tests share: the served root, its keys, and the secret they are hashed with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heroes.serving.auth import add_user, create_key
from heroes.serving.db import ServiceDB
from heroes.serving.settings import ServeSettings

SECRET = "test-secret-for-the-serving-tests"


@dataclass
class Served:
    root: Path
    evidence: Path
    keys: dict[str, str]
    settings: ServeSettings

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def make_keys(db: ServiceDB, pepper: str) -> dict[str, str]:
    """Users of every role and their keys: ada (admin), lab (lab: demo, fresh), ivy
    (investigator: demo), nia (investigator: other), noa (investigator, no case)."""
    keys = {}
    for user, role, cases in (
        ("ada", "admin", []),
        ("lab", "lab", ["demo", "fresh"]),
        ("ivy", "investigator", ["demo"]),
        ("nia", "investigator", ["other"]),
        ("noa", "investigator", []),
    ):
        add_user(db, user, role)
        keys[user] = create_key(db, user, pepper, cases)[1]
    return keys
