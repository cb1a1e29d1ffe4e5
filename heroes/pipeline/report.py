"""Records out of a case: the JSONL/CSV export (the stable contract) and the run summary table."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow

#: The record fields, in order. Documented in docs/records.md; never rename, only add.
RECORD_FIELDS: tuple[str, ...] = (
    "item_id",
    "path",
    "size",
    "md5",
    "sha1",
    "sha256",
    "media_type",
    "mime",
    "status",
    "error",
    "duplicate_of",
    "pdq",
    "pdq_quality",
    "visual_group",
    "exif",
    "video",
    "known_match",
    "faces",
    "nudity",
    "priority",
    "rank",
    "why",
    "evidence",
    "container",
    "depth",
    "mtime",
    "width",
    "height",
    "archive_kind",
    "members",
    "deleted",
    "fs",
    "image",
)

_JSON_FIELDS = {"exif", "video", "known_match", "faces", "nudity", "why", "fs", "image"}


def record(row: ItemRow) -> dict[str, Any]:
    """One item as its export record."""
    rec = {name: getattr(row, name, None) for name in RECORD_FIELDS}
    rec["item_id"] = row.id
    rec["faces"] = row.faces or []
    rec["why"] = row.why or []
    return rec


def records(store: CaseStore) -> Iterator[dict[str, Any]]:
    for row in store.items(order="rank"):
        yield record(row)


def known_bad_matches(store: CaseStore, limit: int = 20) -> list[dict[str, Any]]:
    """Items that a known-bad hash set names, exact matches first, then by PDQ distance."""
    out = []
    for row in store.items(order="id"):
        km = row.known_match
        if km and not km.get("known_good"):
            out.append({"item_id": row.id, "path": row.path, "status": row.status, **km})
    out.sort(key=lambda m: (m["method"] == "pdq", m["distance"], m["item_id"]))
    return out[:limit]


def faces_found(store: CaseStore, limit: int = 10) -> list[dict[str, Any]]:
    """Faces of the case, most likely minors first (one line per face, duplicates left out)."""
    out = []
    for row in store.items(order="id"):
        if row.status == "duplicate":
            continue
        for f in row.faces or []:
            out.append({"item_id": row.id, "path": row.path, **f})
    out.sort(key=lambda f: (-(f.get("p_minor") or 0), f.get("age") or 0, f["item_id"]))
    return out[:limit]


def write_jsonl(store: CaseStore, out: IO[str]) -> int:
    n = 0
    for rec in records(store):
        out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


def write_csv(store: CaseStore, out: IO[str]) -> int:
    """CSV with one column per record field; nested fields are JSON text in their cell."""
    w = csv.DictWriter(out, fieldnames=list(RECORD_FIELDS), extrasaction="ignore")
    w.writeheader()
    n = 0
    for rec in records(store):
        for k in _JSON_FIELDS:
            if rec[k] is not None:
                rec[k] = json.dumps(rec[k], ensure_ascii=False, separators=(",", ":"))
        w.writerow(rec)
        n += 1
    return n


def export(store: CaseStore, fmt: str, output: Path | None) -> int:
    """Write every record of the case to ``output`` (stdout when None); returns the count."""
    writer = {"jsonl": write_jsonl, "csv": write_csv}.get(fmt)
    if writer is None:
        raise ValueError(f"unknown export format {fmt!r}: use jsonl or csv")
    if output is None:
        return writer(store, sys.stdout)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8", newline="") as f:
        return writer(store, f)
