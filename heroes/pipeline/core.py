"""The pass core: the one place that decides what each file is and writes its record.

Engines (:mod:`heroes.pipeline.runner`'s process pool, :mod:`heroes.pipeline.raypass`'s Ray plan)
only move work: they walk, hash, decode and run the models wherever they like, and hand every
file to :class:`PassCore` **in walk order**, as typed values:

1. :meth:`PassCore.admit` before a file is read: settled when it was done before (resume) or
   has nothing to read; otherwise an :class:`Admitted` with the item id the file will have (ids
   follow the walk, whatever order work finishes in).
2. :meth:`PassCore.decide` with what hashing found (:class:`Identified`): a :class:`Decision`,
   the record so far and whether its pixels are needed. Copies, known-good files, empty files,
   names that lie about their content: each is decided here, once, for both engines.
3. :meth:`PassCore.finish` with what decoding and the models found (an
   :class:`~heroes.pipeline.analyze.Analysis`), or :meth:`PassCore.emit` for a record that needs
   no pixels.

Rows are written in batches; a copy whose original is still being analysed waits, so an
interrupted run never leaves a copy naming an item that does not exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from heroes.config import Settings
from heroes.pipeline.analyze import Analysis, AnalyzeOptions, Job
from heroes.pipeline.discover import Entry, content_source
from heroes.pipeline.hashsets import category_text, known_match
from heroes.pipeline.identify import (
    MEDIA_ARCHIVE,
    MEDIA_IMAGE,
    MEDIA_OTHER,
    MEDIA_VIDEO,
    Digests,
    Identified,
    identify_source,
)
from heroes.pipeline.indexing import mark_stale
from heroes.pipeline.infer import InferOptions
from heroes.pipeline.summary import Progress, TriageSummary, error_kind
from heroes.store.db import CaseStore
from heroes.store.schema import ItemRow

_FLUSH_ROWS = 500
_FLUSH_SECONDS = 2.0

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
_VIDEO_EXT = {
    ".mp4",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".wmv",
    ".m4v",
    ".3gp",
    ".mpg",
    ".mpeg",
    ".flv",
}


# --------------------------------------------------------------------------------------------------
# what flows between the engines and the core


@dataclass(slots=True)
class Admitted:
    """A file to read: its item id, and the id and SHA-256 of its earlier record (a re-run)."""

    item_id: int
    update_of: int | None
    old_sha: str | None

    @property
    def new(self) -> bool:
        return self.update_of is None


@dataclass(slots=True)
class Decision:
    """A file's record as decided from its hashes; ``decode`` when its pixels are still needed
    (then ``data`` holds its bytes when they were kept, else it is read again by reference)."""

    row: dict[str, Any]
    new: bool
    decode: bool = False
    data: bytes | None = None

    @property
    def item_id(self) -> int:
        return int(self.row["id"])

    @property
    def sha256(self) -> str | None:
        return self.row.get("sha256")

    def job(self, entry: Entry) -> Job:
        """What a worker needs to decode this file: its type, its bytes when kept, else a way to
        read it again (a path, or a reference into an archive or a forensic image)."""
        fs = content_source(entry) if self.data is None else None
        return self.row["media_type"], self.data, fs


def identify_entry(entry: Entry, chunk: int) -> Identified:
    return identify_source(entry.data, content_source(entry), bool(entry.archive_kind), chunk)


def needs_pixels(ident: Identified, entry_error: str | None, is_archive: bool) -> bool:
    """Whether a file may need decoding at all (a worker asks before it decodes): an image or a
    video with content, and no error of its own (a picture with a broken archive appended is
    still analysed), as :meth:`PassCore.decide` rules."""
    d = ident.digests
    media = ident.media_type in (MEDIA_IMAGE, MEDIA_VIDEO)
    return d is not None and d.size > 0 and media and (entry_error is None or is_archive)


def exact_matches(store: CaseStore, md5: str, sha1: str, sha256: str) -> list[Any]:
    """The hash-set entries that name this content exactly (MD5, SHA-1 or SHA-256)."""
    return store.match_exact(md5, sha1, sha256)


def only_known_good(matches: list[Any]) -> bool:
    """Exact hash-set matches that make a file known-good: some, and none of them known-bad."""
    return bool(matches) and all(m[0].known_good for m in matches)


def analysis_options(settings: Settings, models: InferOptions | None) -> AnalyzeOptions:
    lim = settings.limits
    return AnalyzeOptions(
        working_size=settings.working_size,
        max_pixels=lim.max_pixels,
        max_decode_bytes=lim.max_decode_bytes,
        keyframe_interval=settings.keyframe_interval,
        max_frames=lim.max_frames,
        max_video_seconds=lim.max_video_seconds,
        max_decoded_frames=lim.max_decoded_frames,
        max_frame_rate=lim.max_frame_rate,
        max_decode_seconds=lim.max_decode_seconds,
        models=models,
        nudity_threshold=settings.nudity_threshold,
        decode_hook=settings.decode_hook,
    )


def _claimed_media(path: str) -> str | None:
    suffix = PurePosixPath(path.rsplit("!/", 1)[-1]).suffix.lower()
    return MEDIA_IMAGE if suffix in _IMAGE_EXT else MEDIA_VIDEO if suffix in _VIDEO_EXT else None


# --------------------------------------------------------------------------------------------------
# the core


class PassCore:
    """Decisions and writes of one run, shared by every engine."""

    def __init__(
        self,
        store: CaseStore,
        evidence: Path,
        settings: Settings,
        run_id: int,
        summary: TriageSummary,
        progress: Progress,
        retry_errors: bool,
        models: InferOptions | None = None,
    ) -> None:
        self.store = store
        self.evidence = str(evidence)
        self.settings = settings
        self.run_id = run_id
        self.summary = summary
        self.progress = progress
        self.retry_errors = retry_errors
        self.opts = analysis_options(settings, models)
        with store.session() as s:
            self.next_id = (
                s.execute(select(ItemRow.id).order_by(ItemRow.id.desc())).scalar() or 0
            ) + 1
        # A case that holds nothing yet needs no per-file look-ups (resume, earlier originals).
        self.case_had_items = store.count_items() > 0
        self.evidence_seen = self.case_had_items and store.has_evidence(self.evidence)
        #: sha256 -> item id of every original of this run
        self.seen_sha: dict[str, int] = {}
        self.buffer: list[Decision] = []
        #: ids of new originals still being analysed; a copy naming one waits in ``buffer``
        self.in_flight: set[int] = set()
        self.vectors: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.archives_done: list[str] = []
        #: hash-set entries looked up ahead of :meth:`decide`, by SHA-256, until it is decided
        self._matches_ahead: dict[str, list[Any]] = {}

    # -- before reading ---------------------------------------------------------------------------
    def skip_archive(self, entry: Entry) -> bool:
        """An archive done in full before is not opened again; its members count as done."""
        old = self.store.existing(self.evidence, entry.path)
        skip = bool(
            old and old.archive_complete and old.size == entry.size and old.mtime == entry.mtime
        )
        if skip:
            self.summary.resumed += self.store.count_members(self.evidence, entry.path)
        return skip

    def admit(self, entry: Entry) -> Admitted | None:
        """Settle what needs no reading (done before, nothing to read) and return None; else the
        file's :class:`Admitted`, for it to be hashed."""
        if entry.archive_kind and entry.error is None:
            self.archives_done.append(entry.path)
        skip, upd, old_sha = self._done_before(entry)
        if skip:
            self.summary.resumed += 1
            self.progress.advance((entry.size or 0) if entry.depth == 0 else 0)
            return None
        admitted = Admitted(self._new_id() if upd is None else upd, upd, old_sha)
        if entry.data is None and entry.fs_path is None and entry.ref is None:
            row = self._row(entry, admitted.item_id)
            row["status"] = "skipped" if entry.skipped else "error"
            row["error"] = entry.skipped or entry.error or "unreadable"
            self.progress.advance(0)
            self.emit(Decision(row, admitted.new))
            return None
        return admitted

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _done_before(self, entry: Entry) -> tuple[bool, int | None, str | None]:
        """(skip, existing id to update, existing sha256) for an entry."""
        old = self.store.existing(self.evidence, entry.path) if self.evidence_seen else None
        if old is None:
            return False, None, None
        if old.status == "error" and self.retry_errors:
            return False, old.id, None
        if old.size == entry.size and old.mtime == entry.mtime:
            return True, old.id, old.sha256
        return False, old.id, old.sha256

    # -- after hashing ----------------------------------------------------------------------------
    def decide(self, entry: Entry, ident: Identified, admitted: Admitted) -> Decision | None:
        """The record of a hashed file; None when only its size or time changed (same content).
        Must be called in walk order: the first copy of a content in the walk is its original."""
        self.progress.advance((entry.size or 0) if entry.depth == 0 else 0)
        d = ident.digests
        upd = admitted.update_of
        if d is not None and upd is not None and admitted.old_sha == d.sha256:
            self.store.update_items([{"id": upd, "size": entry.size, "mtime": entry.mtime}])
            self.summary.resumed += 1
            return None
        row = self._row(entry, admitted.item_id)
        decision = Decision(row, admitted.new)
        if d is None:
            row.update(status="error", error=ident.error)
        else:
            self._classify(decision, entry, ident, d, upd)
        if row.get("sha256") and row["status"] not in ("duplicate", "skipped", "error"):
            self.seen_sha.setdefault(row["sha256"], row["id"])
        if decision.decode and decision.new:
            self.in_flight.add(decision.item_id)
        return decision

    def hash_matches(self, d: Digests, *, ahead: bool = False) -> list[Any]:
        """The hash-set entries a file's hashes match. An engine that needs them before
        :meth:`decide` (the Ray driver, to skip decoding known-good files) asks ``ahead``: the
        answer is kept for the decision, so each file is looked up once."""
        if ahead:
            found = self._matches_ahead.get(d.sha256)
            if found is None:
                found = self._matches_ahead[d.sha256] = exact_matches(
                    self.store, d.md5, d.sha1, d.sha256
                )
            return found
        found = self._matches_ahead.pop(d.sha256, None)
        return exact_matches(self.store, d.md5, d.sha1, d.sha256) if found is None else found

    def original_of(self, sha256: str) -> int | None:
        found = self.seen_sha.get(sha256)
        if found is None and self.case_had_items:
            found = self.store.first_with_sha256(sha256)
        return found

    def _row(self, entry: Entry, item_id: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": item_id,
            "evidence": self.evidence,
            "path": entry.path,
            "container": entry.container,
            "depth": entry.depth,
            "size": entry.size,
            "mtime": entry.mtime,
            "archive_kind": entry.archive_kind,
            "members": entry.members,
            "run_id": self.run_id,
            "media_type": MEDIA_ARCHIVE if entry.archive_kind else MEDIA_OTHER,
            "status": "ok",
            "error": None,
        }
        if entry.extra:
            row.update(entry.extra)  # deleted, fs, image: what a forensic image says of a file
        return row

    def _classify(
        self,
        decision: Decision,
        entry: Entry,
        ident: Identified,
        d: Digests,
        update_of: int | None,
    ) -> None:
        row = decision.row
        row.update(
            md5=d.md5,
            sha1=d.sha1,
            sha256=d.sha256,
            size=d.size,
            media_type=ident.media_type,
            mime=ident.mime,
        )
        if entry.error:
            if entry.archive_kind and ident.media_type in (MEDIA_IMAGE, MEDIA_VIDEO):
                # a picture with a broken archive appended: the picture is still analysed
                row["error"] = entry.error
            else:
                row.update(status="error", error=entry.error)
        matches = self.hash_matches(d)
        known_good = only_known_good(matches)
        bad = [m for m in matches if not m[0].known_good]
        if bad:
            meta, e, method = min(bad, key=lambda m: ("sha256", "sha1", "md5").index(m[2]))
            row["known_match"] = known_match(meta, e.category, e.label, method, 0)
            self.summary.matches[(meta.name, category_text(meta, e.category), method)] += 1
        elif matches:
            meta, e, method = matches[0]
            row["known_match"] = known_match(meta, e.category, e.label, method, 0)
            self.summary.matches[(meta.name, "known-good", method)] += 1
        if row["status"] == "error":
            return
        if d.size == 0:
            row.update(status="skipped", error="empty file")
            return
        if known_good:
            row["status"] = "known_good"
            return
        original = self.original_of(d.sha256)
        if original is not None and original != update_of:
            row.update(status="duplicate", duplicate_of=original)
            return
        claimed = _claimed_media(entry.path)
        if needs_pixels(ident, entry.error, bool(entry.archive_kind)):
            decision.decode = True
            decision.data = ident.data
        elif claimed and ident.media_type == MEDIA_OTHER:
            ext = PurePosixPath(entry.path).suffix
            row.update(
                status="error", error=f"content is not an {claimed}: {ident.mime} (name ends {ext})"
            )

    # -- after decoding ---------------------------------------------------------------------------
    def finish(self, decision: Decision, analysis: Analysis) -> None:
        """Add what decoding and the models found to a decided record, and write it."""
        row = decision.row
        self.in_flight.discard(decision.item_id)
        fields = dict(analysis.fields)
        err = fields.pop("error", None)
        self.summary.frames += analysis.frames
        self.progress.frames += analysis.frames
        row.update(fields)
        faces = row.get("faces") or []
        for k, face in enumerate(faces):
            face["face_id"] = f"{row['id']}-{k}"
        self.summary.faces += len(faces)
        self.summary.items_with_faces += bool(faces)
        self.summary.likely_minor_faces += sum(
            1 for f in faces if (f.get("p_minor") or 0) >= 0.5 and f.get("confirmed") is not False
        )
        self.summary.explicit += bool((row.get("nudity") or {}).get("explicit"))
        for v in analysis.vectors:
            self.vectors.append(
                {
                    "item_id": row["id"],
                    "kind": v.kind,
                    "model": v.model,
                    "frame_time": v.frame_time,
                    "bbox": v.bbox,
                    "dim": v.dim,
                    "vector": v.vector,
                    "ref": f"{row['id']}-{v.face}" if v.face is not None else None,
                }
            )
        if err:
            row["error"] = err
        decision.decode = False
        decision.data = None
        self.emit(decision)

    # -- writing ----------------------------------------------------------------------------------
    def emit(self, decision: Decision) -> None:
        """Count a finished record and queue it for writing."""
        row = decision.row
        if decision.new:
            self.summary.new += 1
        else:
            self.summary.updated += 1
        self.summary.by_type_status[(row["media_type"], row["status"])] += 1
        if row.get("error"):
            self.summary.errors[error_kind(row["error"])] += 1
        self.summary.bytes += row.get("size") or 0
        self.buffer.append(decision)
        self.flush()

    def flush(self, force: bool = False) -> None:
        if not self.buffer:
            return
        if (
            not force
            and len(self.buffer) < _FLUSH_ROWS
            and time.monotonic() - self.last_flush < _FLUSH_SECONDS
        ):
            return
        ready: list[Decision] = self.buffer
        waiting: list[Decision] = []
        if self.in_flight:
            ready = []
            for dec in self.buffer:
                held = dec.row.get("duplicate_of") in self.in_flight
                (waiting if held else ready).append(dec)
        new = [d.row for d in ready if d.new]
        old = [d.row for d in ready if not d.new]
        if old:  # items the indexes may hold are analysed again
            mark_stale(self.store.case_dir)
        self.store.insert_and_update(new, old, self.vectors, replace_vectors=[r["id"] for r in old])
        self.vectors.clear()
        self.buffer = waiting
        self.last_flush = time.monotonic()
