"""A decode hook that kills its worker process on files carrying a marker: a stand-in for a
native crash in a decoder (tests only)."""

from __future__ import annotations

import os

MARKER = b"CRASH-THE-DECODER"


def crash_on_marker(media_type: str, data: bytes | None, path: str | None) -> None:
    content = data if data is not None else open(path or "", "rb").read()  # noqa: SIM115
    if MARKER in content:
        os.abort()


SLOW_MARKER = b"SLOW-DECODE"


def slow_on_marker(media_type: str, data: bytes | None, path: str | None) -> None:
    """Keeps a file carrying :data:`SLOW_MARKER` decoding for a minute."""
    import time

    content = data if data is not None else open(path or "", "rb").read()  # noqa: SIM115
    if SLOW_MARKER in content:
        time.sleep(60)
