"""Importing hash-set files into a case: each file once, recognised by its SHA-256 and the
format it was read as."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from heroes.files import sha256_file
from heroes.pipeline.hashsets import HashSetSource, hashset_source, open_hashset
from heroes.store.db import CaseStore


def import_hashsets(
    store: CaseStore,
    paths: Sequence[Path | HashSetSource],
    *,
    known_good: bool | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[str, int, int, bool]]:
    """Import hash-set files into the case, once each (a file already imported is recognised by
    its SHA-256, and by the format it was forced to). Returns (name, entries, rejected,
    newly_imported) per file; doubts about a set (a bare 64-digit list that may be PDQ) go to
    ``warn``."""
    out = []
    for spec in paths:
        source = hashset_source(spec)
        digest = _hashset_key(sha256_file(source.path), source.fmt)
        row = store.hashset_with_source(digest)
        if row is not None:
            if warn is not None and row.meta.get("warning"):
                warn(str(row.meta["warning"]))
            out.append((row.name, row.entries, row.rejected, False))
            continue
        info, entries, stats = open_hashset(source.path, fmt=source.fmt, known_good=known_good)
        row = store.add_hashset(info, entries, stats, digest)
        for message in stats.warnings if warn is not None else ():
            warn(message)
        out.append((row.name, row.entries, row.rejected, True))
    return out


def _hashset_key(file_sha256: str, fmt: str | None) -> str:
    """The identity of an imported set: its file, and the format it was forced to, so that a
    list first read as SHA-256 can be imported again as PDQ."""
    if fmt is None:
        return file_sha256
    return hashlib.sha256(f"{file_sha256}:{fmt}".encode()).hexdigest()
