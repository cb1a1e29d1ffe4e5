"""A decode hook that kills its worker process on files carrying a marker: a stand-in for a
native crash in a decoder (tests only)."""

from __future__ import annotations

import os

MARKER = b"CRASH-THE-DECODER"


def crash_on_marker(media_type: str, data: bytes | None, path: str | None) -> None:
    content = data if data is not None else open(path or "", "rb").read()  # noqa: SIM115
    if MARKER in content:
        os.abort()
