"""Records out of a case: the JSONL/CSV export (the stable contract) and the run summary table."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from heroes.pipeline.labels import current_labels
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
    "label",
    "deleted",
    "fs",
    "image",
)

_JSON_FIELDS = {"exif", "video", "known_match", "faces", "nudity", "why", "label", "fs", "image"}

#: A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """An export that cannot be written (a missing folder, an unknown format)."""


def record(row: ItemRow, label: dict[str, Any] | None = None) -> dict[str, Any]:
    """One item as its export record; ``label`` is its current human label, if any."""
    rec = {name: getattr(row, name, None) for name in RECORD_FIELDS}
    rec["item_id"] = row.id
    rec["faces"] = row.faces or []
    rec["why"] = row.why or []
    rec["label"] = label
    return rec


def records(store: CaseStore) -> Iterator[dict[str, Any]]:
    labels = current_labels(store)
    for row in store.items(order="rank"):
        yield record(row, labels.get(row.id))


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a ``'`` before
    it, since evidence names and EXIF text are hostile input."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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
    """Faces of the case, most likely minors first (one line per face, duplicates left out);
    faces the human-face check did not confirm come after every confirmed face."""
    out = []
    for row in store.items(order="id"):
        if row.status == "duplicate":
            continue
        for f in row.faces or []:
            out.append({"item_id": row.id, "path": row.path, **f})
    out.sort(
        key=lambda f: (
            f.get("confirmed") is False,
            -(f.get("p_minor") or 0),
            f.get("age") or 0,
            f["item_id"],
        )
    )
    return out[:limit]


def write_jsonl(store: CaseStore, out: IO[str]) -> int:
    n = 0
    for rec in records(store):
        out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


def write_csv(store: CaseStore, out: IO[str]) -> int:
    """CSV with one column per record field; nested fields are JSON text in their cell. Safe to
    open in a spreadsheet: UTF-8 with a BOM, and no cell starts like a formula."""
    out.write("\ufeff")
    w = csv.DictWriter(out, fieldnames=list(RECORD_FIELDS), extrasaction="ignore")
    w.writeheader()
    n = 0
    for rec in records(store):
        for k in _JSON_FIELDS:
            if rec[k] is not None:
                rec[k] = json.dumps(rec[k], ensure_ascii=False, separators=(",", ":"))
        w.writerow({k: safe_cell(v) for k, v in rec.items()})
        n += 1
    return n


def open_output(output: Path) -> IO[str]:
    """An export file opened for writing; a missing folder is an :class:`ExportError`, not a
    folder made on the way (a typo in ``-o`` should not scatter reports)."""
    if not output.parent.is_dir():
        raise ExportError(f"cannot write {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise ExportError(f"cannot write {output}: it is a folder")
    try:
        return open(output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror}") from exc


def export(store: CaseStore, fmt: str, output: Path | None) -> int:
    """Write every record of the case to ``output`` (stdout when None); returns the count."""
    writer = {"jsonl": write_jsonl, "csv": write_csv}.get(fmt)
    if writer is None:
        raise ExportError(f"unknown export format {fmt!r}: use jsonl or csv")
    if output is None:
        return writer(store, sys.stdout)
    with open_output(output) as f:
        return writer(store, f)
