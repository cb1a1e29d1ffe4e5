"""One triage pass: discover -> identify -> match -> decode -> persist -> finalize.

The driver streams entries from the walker, hashes them on a small thread pool (hashlib releases
the GIL), decides in discovery order what each file is (resumed, duplicate, known-good, known-bad),
sends only the files that need pixels to a process pool, and writes rows in batches. Inference
slots in between decode and persist (``analyze`` returns fields; a later stage adds more).

Resumable: a file already in the case with the same path, size and mtime is not read again; one
whose size/mtime changed is hashed and, if its SHA-256 is unchanged, only its metadata is updated.
Rows are committed every few hundred files, so a killed run loses at most the last batch, which the
next run redoes; the unique (evidence, path) key means nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select, update

from heroes.config import Settings, get_settings
from heroes.files import sha256_file
from heroes.index import hashes_from_hex
from heroes.pipeline.analyze import AnalyzeOptions, analyze_media
from heroes.pipeline.discover import Entry, content_source, walk
from heroes.pipeline.hashsets import HashSetSource, hashset_source, open_hashset
from heroes.pipeline.identify import (
    MEDIA_ARCHIVE,
    MEDIA_IMAGE,
    MEDIA_OTHER,
    MEDIA_VIDEO,
    Digests,
    StreamSource,
    hash_bytes,
    hash_source,
    sniff,
)
from heroes.pipeline.indexing import mark_stale, update_indexes
from heroes.pipeline.infer import InferOptions
from heroes.pipeline.matching import PDQ_DIHEDRAL, nearest_within_variants, visual_groups
from heroes.store.db import CaseStore, StoreError
from heroes.store.lock import case_lock
from heroes.store.schema import ItemRow, VectorRow

#: files on disk up to this size are read once and kept in memory for decoding
KEEP_BYTES = 64 * 1024 * 1024
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


@dataclass
class TriageSummary:
    """What a run did, for people (the CLI's table) and machines (``to_dict``)."""

    run_id: int
    evidence: str
    case: str
    new: int = 0
    resumed: int = 0
    updated: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    by_type_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    matches: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    hashsets_imported: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    faces: int = 0
    items_with_faces: int = 0
    likely_minor_faces: int = 0
    explicit: int = 0
    indexed: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    engine: str = "local"
    frames: int = 0
    #: files done per Ray node, and files the driver redid after the plan lost them
    nodes: Counter[str] = field(default_factory=Counter)
    redone: int = 0
    ray: dict[str, Any] = field(default_factory=dict)
    #: doubts a person must see, e.g. a hash set that may not be what it was read as
    warnings: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        return self.new / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "evidence": self.evidence,
            "case": self.case,
            "new": self.new,
            "already_done": self.resumed,
            "updated": self.updated,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed, 3),
            "files_per_s": round(self.files_per_second, 2),
            "by_type_status": [
                {"media_type": m, "status": s, "count": n}
                for (m, s), n in sorted(self.by_type_status.items())
            ],
            "errors": dict(self.errors.most_common()),
            "matches": [
                {"hashset": h, "category": c, "method": m, "count": n}
                for (h, c, m), n in sorted(self.matches.items())
            ],
            "hashsets_imported": self.hashsets_imported,
            "models": self.models,
            "faces": self.faces,
            "items_with_faces": self.items_with_faces,
            "likely_minor_faces": self.likely_minor_faces,
            "explicit": self.explicit,
            "indexed": self.indexed,
            "interrupted": self.interrupted,
            "engine": self.engine,
            "frames": self.frames,
            "frames_per_s": round(self.frames / self.elapsed, 2) if self.elapsed > 0 else 0.0,
            "ray": {**self.ray, "files_per_node": dict(self.nodes), "redone": self.redone}
            if self.engine == "ray"
            else None,
            "warnings": self.warnings,
        }


def error_kind(error: str) -> str:
    """The kind of an error text: what stands before its first colon (``zip bomb: ...``)."""
    return error.split(":", 1)[0].strip()[:80] or "error"


# --------------------------------------------------------------------------------------------------
# hash sets


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


# --------------------------------------------------------------------------------------------------
# the pass


@dataclass(slots=True)
class _Identified:
    digests: Digests | None
    media_type: str
    mime: str | None
    data: bytes | None
    error: str | None = None


def _identify(entry: Entry, chunk: int) -> _Identified:
    return identify_source(entry.data, content_source(entry), bool(entry.archive_kind), chunk)


def identify_source(
    data: bytes | None, fs_path: Path | str | StreamSource | None, is_archive: bool, chunk: int
) -> _Identified:
    """Hash and sniff one file (its bytes, its path read once with ``O_NOATIME``, or a file
    inside a forensic image read through its reference)."""
    try:
        if data is not None:
            digests = hash_bytes(data)
            head = data[:512]
        else:
            assert fs_path is not None
            digests, head, data = hash_source(fs_path, chunk=chunk, keep_up_to=KEEP_BYTES)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _Identified(None, MEDIA_OTHER, None, None, f"unreadable: {reason}")
    sniffed = sniff(head)
    # a picture or video with an archive appended (a polyglot) is analysed as what it shows; its
    # members were walked all the same
    polyglot = sniffed.media_type in (MEDIA_IMAGE, MEDIA_VIDEO)
    media = MEDIA_ARCHIVE if is_archive and not polyglot else sniffed.media_type
    return _Identified(digests, media, sniffed.mime, data)


def _claimed_media(path: str) -> str | None:
    suffix = PurePosixPath(path.rsplit("!/", 1)[-1]).suffix.lower()
    return MEDIA_IMAGE if suffix in _IMAGE_EXT else MEDIA_VIDEO if suffix in _VIDEO_EXT else None


def _prescan(root: Path, stop: int | None = None) -> tuple[int, int]:
    """Files and bytes on disk under ``root`` (no symlinks followed), for the progress bar's ETA;
    with ``stop``, counting ends once that many files are found."""
    if root.is_file():
        return 1, root.stat().st_size
    files = size = 0
    stack = [root]
    while stack and (stop is None or files < stop):
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        else:
                            files += 1
                            if e.is_file(follow_symlinks=False):
                                size += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        files += 1
        except OSError:
            continue
    return files, size


class _Progress:
    """A rich progress bar on a terminal (files/s, bytes, ETA); silent otherwise."""

    def __init__(self, enabled: bool, total_bytes: int) -> None:
        self.files = 0
        self.frames = 0
        self._bar: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]triage"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn(
                "{task.fields[files]} files, {task.fields[rate]} files/s, "
                "{task.fields[frate]} frames/s"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task(
            "triage", total=total_bytes or None, files=0, rate="0", frate="0"
        )
        self._t0 = time.perf_counter()
        self._bar.start()

    def advance(self, nbytes: int, files: int = 1) -> None:
        self.files += files
        if self._bar is not None:
            dt = max(1e-6, time.perf_counter() - self._t0)
            self._bar.update(
                self._task,
                advance=nbytes,
                files=self.files,
                rate=f"{self.files / dt:.0f}",
                frate=f"{self.frames / dt:.0f}",
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class _Pass:
    """State of one run. Used only by :func:`triage`."""

    def __init__(
        self,
        store: CaseStore,
        evidence: Path,
        settings: Settings,
        run_id: int,
        summary: TriageSummary,
        progress: _Progress,
        retry_errors: bool,
        models: InferOptions | None = None,
    ) -> None:
        self.store = store
        self.root = evidence
        self.evidence = str(evidence)
        self.settings = settings
        self.run_id = run_id
        self.summary = summary
        self.progress = progress
        self.retry_errors = retry_errors
        self.opts = AnalyzeOptions(
            working_size=settings.working_size,
            max_pixels=settings.limits.max_pixels,
            max_decode_bytes=settings.limits.max_decode_bytes,
            keyframe_interval=settings.keyframe_interval,
            max_frames=settings.limits.max_frames,
            max_video_seconds=settings.limits.max_video_seconds,
            max_decoded_frames=settings.limits.max_decoded_frames,
            max_frame_rate=settings.limits.max_frame_rate,
            max_decode_seconds=settings.limits.max_decode_seconds,
            models=models,
            nudity_threshold=settings.nudity_threshold,
            decode_hook=settings.decode_hook,
        )
        with store.session() as s:
            self.next_id = (
                s.execute(select(ItemRow.id).order_by(ItemRow.id.desc())).scalar() or 0
            ) + 1
        # A case that holds nothing yet needs no per-file look-ups (resume, earlier originals).
        self.case_had_items = store.count_items() > 0
        self.evidence_seen = self.case_had_items and store.has_evidence(self.evidence)
        #: sha256 -> item id of every original of this run
        self.seen_sha: dict[str, int] = {}
        self.buffer: list[tuple[bool, dict[str, Any]]] = []
        #: ids of new originals still decoding; a copy naming one waits in ``buffer`` until it is
        #: written, so an interrupt never leaves a copy pointing at an item that does not exist
        self.in_flight: set[int] = set()
        self.vectors: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.archives_done: list[str] = []
        self.workers = settings.workers or (os.cpu_count() or 1)

    # -- resume -----------------------------------------------------------------------------
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

    def skip_archive(self, entry: Entry) -> bool:
        """An archive done in full before is not opened again; its members count as done."""
        old = self.store.existing(self.evidence, entry.path)
        skip = bool(
            old and old.archive_complete and old.size == entry.size and old.mtime == entry.mtime
        )
        if skip:
            self.summary.resumed += self.store.count_members(self.evidence, entry.path)
        return skip

    # -- rows -------------------------------------------------------------------------------
    def _row(self, entry: Entry, item_id: int | None) -> dict[str, Any]:
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

    def _assign_id(self, row: dict[str, Any], update_of: int | None) -> None:
        """Give a row its item id at decision time, so later copies can name it as original."""
        if update_of is None:
            row["id"] = self.next_id
            self.next_id += 1
        else:
            row["id"] = update_of
        if row.get("sha256") and row["status"] not in ("duplicate", "skipped", "error"):
            self.seen_sha.setdefault(row["sha256"], row["id"])

    def _emit(self, row: dict[str, Any], *, new: bool) -> None:
        if new:
            self.summary.new += 1
        else:
            self.summary.updated += 1
        self.summary.by_type_status[(row["media_type"], row["status"])] += 1
        if row.get("error"):
            self.summary.errors[error_kind(row["error"])] += 1
        self.summary.bytes += row.get("size") or 0
        self.buffer.append((new, row))
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
        ready: list[tuple[bool, dict[str, Any]]] = self.buffer
        waiting: list[tuple[bool, dict[str, Any]]] = []
        if self.in_flight:
            ready = []
            for pair in self.buffer:
                held = pair[1].get("duplicate_of") in self.in_flight
                (waiting if held else ready).append(pair)
        new = [r for is_new, r in ready if is_new]
        old = [r for is_new, r in ready if not is_new]
        if old:  # items the indexes may hold are analysed again
            mark_stale(self.store.case_dir)
        self.store.insert_and_update(new, old, self.vectors, replace_vectors=[r["id"] for r in old])
        self.vectors.clear()
        self.buffer = waiting
        self.last_flush = time.monotonic()

    def _original_of(self, sha256: str) -> int | None:
        found = self.seen_sha.get(sha256)
        if found is None and self.case_had_items:
            found = self.store.first_with_sha256(sha256)
        return found

    # -- decisions ------------------------------------------------------------------------------
    def decide(
        self, entry: Entry, ident: _Identified, update_of: int | None, old_sha: str | None
    ) -> dict[str, Any] | None:
        """Fill a row from the identify result, with its item id; None when nothing changed.

        Rows whose pixels are needed carry ``_decode`` (the bytes, or None to read from disk)."""
        d = ident.digests
        if d is not None and update_of is not None and old_sha == d.sha256:
            self.store.update_items([{"id": update_of, "size": entry.size, "mtime": entry.mtime}])
            self.summary.resumed += 1
            return None
        row = self._row(entry, update_of)
        if d is None:
            row.update(status="error", error=ident.error)
        else:
            self._classify(row, entry, ident, d, update_of)
        self._assign_id(row, update_of)
        return row

    def _classify(
        self,
        row: dict[str, Any],
        entry: Entry,
        ident: _Identified,
        d: Digests,
        update_of: int | None,
    ) -> None:
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
        known_good = False
        matches = self.store.match_exact(d.md5, d.sha1, d.sha256)
        bad = [m for m in matches if not m[0].known_good]
        if bad:
            meta, e, method = min(bad, key=lambda m: ("sha256", "sha1", "md5").index(m[2]))
            row["known_match"] = _known_match(meta, e.category, e.label, method, 0)
            self.summary.matches[(meta.name, _category_text(meta, e.category), method)] += 1
        elif matches:
            meta, e, method = matches[0]
            known_good = True
            row["known_match"] = _known_match(meta, e.category, e.label, method, 0)
            self.summary.matches[(meta.name, "known-good", method)] += 1
        if row["status"] == "error":
            return
        if d.size == 0:
            row.update(status="skipped", error="empty file")
            return
        if known_good:
            row["status"] = "known_good"
            return
        original = self._original_of(d.sha256)
        if original is not None and original != update_of:
            row.update(status="duplicate", duplicate_of=original)
            return
        claimed = _claimed_media(entry.path)
        if ident.media_type in (MEDIA_IMAGE, MEDIA_VIDEO):
            row["_decode"] = ident.data
        elif claimed and ident.media_type == MEDIA_OTHER:
            ext = PurePosixPath(entry.path).suffix
            row.update(
                status="error", error=f"content is not an {claimed}: {ident.mime} (name ends {ext})"
            )

    def admit(self, entry: Entry) -> tuple[int | None, str | None] | None:
        """Before reading a file: settle what needs no reading (done before, nothing to read) and
        return None; else (id to update, earlier sha256) for the file to be hashed."""
        if entry.archive_kind and entry.error is None:
            self.archives_done.append(entry.path)
        skip, upd, old_sha = self._done_before(entry)
        if skip:
            self.summary.resumed += 1
            self.progress.advance((entry.size or 0) if entry.depth == 0 else 0)
            return None
        if entry.data is None and entry.fs_path is None and entry.ref is None:
            row = self._row(entry, upd)
            row["status"] = "skipped" if entry.skipped else "error"
            row["error"] = entry.skipped or entry.error or "unreadable"
            self._assign_id(row, upd)
            self.progress.advance(0)
            self._emit(row, new=upd is None)
            return None
        return upd, old_sha

    # -- the loop -------------------------------------------------------------------------------
    def run(self, entries: Iterator[Entry]) -> None:
        """Stream entries through hashing (threads) and decoding (processes), in bounded windows."""
        window = max(4, 4 * self.workers)
        idq: deque[tuple[Entry, Future[_Identified], int | None, str | None]] = deque()
        decoding: dict[Future[dict[str, Any]], tuple[dict[str, Any], bool, tuple[Any, ...]]] = {}
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(["heroes.pipeline.analyze"])
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

        def settle_decodes(block: bool, broken_pool: bool = False) -> None:
            nonlocal pool
            broken: list[tuple[dict[str, Any], bool, tuple[Any, ...]]] = []
            if not decoding and not broken_pool:
                return
            done: set[Future[dict[str, Any]]] = set()
            if decoding:
                done, _ = wait(
                    list(decoding), timeout=None if block else 0, return_when=FIRST_COMPLETED
                )
            for fut in done:
                row, new, args = decoding.pop(fut)
                try:
                    fields = fut.result()
                except BrokenProcessPool:
                    broken.append((row, new, args))
                    continue
                self._finish_decode(row, fields, new)
            if broken or broken_pool:
                # A worker died (a native crash in a decoder): every in-flight file is suspect.
                # Each is retried alone in a fresh process; one that kills it again becomes an
                # error record, the others get their results, and the pass goes on.
                broken.extend(decoding.values())
                decoding.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for row, new, args in broken:
                    self._finish_decode(row, _isolated(ctx, args), new)
                pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

        def settle_identified() -> None:
            entry, fut, upd, old_sha = idq.popleft()
            row = self.decide(entry, fut.result(), upd, old_sha)
            self.progress.advance((entry.size or 0) if entry.depth == 0 else 0)
            if row is None:
                return
            if "_decode" in row:
                data = row.pop("_decode")
                fs = content_source(entry) if data is None else None
                args = (row["media_type"], data, fs, self.opts)
                try:
                    fut = pool.submit(analyze_media, *args)
                except BrokenProcessPool:
                    # the pool broke between two submissions: settle what was in flight (each
                    # suspect file alone), which also replaces the pool, then submit again
                    settle_decodes(block=True, broken_pool=True)
                    fut = pool.submit(analyze_media, *args)
                decoding[fut] = (row, upd is None, args)
                if upd is None:
                    self.in_flight.add(row["id"])
                while len(decoding) > 2 * window:
                    settle_decodes(block=True)
            else:
                self._emit(row, new=upd is None)

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(4, self.workers))) as hashers:
                for entry in entries:
                    admitted = self.admit(entry)
                    if admitted is None:
                        continue
                    upd, old_sha = admitted
                    fut = hashers.submit(_identify, entry, self.settings.hash_chunk)
                    idq.append((entry, fut, upd, old_sha))
                    while idq and (len(idq) > window or idq[0][1].done()):
                        settle_identified()
                    settle_decodes(block=False)
                while idq:
                    settle_identified()
            while decoding:
                settle_decodes(block=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.flush(force=True)

    def _finish_decode(self, row: dict[str, Any], fields: dict[str, Any], new: bool) -> None:
        self.in_flight.discard(row["id"])
        err = fields.pop("error", None)
        vectors = fields.pop("_vectors", [])
        frames = fields.pop("_frames", 0)
        self.summary.frames += frames
        self.progress.frames += frames
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
        for v in vectors:
            face_index = v.pop("face")
            ref = f"{row['id']}-{face_index}" if face_index is not None else None
            self.vectors.append({**v, "item_id": row["id"], "ref": ref})
        if err:
            row["error"] = err
        self._emit(row, new=new)


def _isolated(ctx: Any, args: tuple[Any, ...]) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as one:
        try:
            return one.submit(analyze_media, *args).result()
        except BrokenProcessPool:
            return {
                "status": "error",
                "error": "decoder crashed: the worker process died on this file",
            }


def _category_text(meta: Any, category: str | None) -> str:
    if category is None:
        return "uncategorised"
    name = meta.categories.get(category)
    return f"{category} {name}" if name else category


def _known_match(
    meta: Any, category: str | None, label: str | None, method: str, distance: int
) -> dict[str, Any]:
    return {
        "hashset": meta.name,
        "category": category,
        "category_name": meta.categories.get(category) if category is not None else "uncategorised",
        "scheme": meta.scheme,
        "method": method,
        "distance": distance,
        "known_good": meta.known_good,
        "label": label,
    }


# --------------------------------------------------------------------------------------------------
# after the pass: case-wide work that needs every row


def finalize(store: CaseStore, settings: Settings, summary: TriageSummary | None = None) -> None:
    """PDQ matches against hash sets, duplicate fields, visual groups; all case-wide, idempotent."""
    _first_copy_is_original(store)
    max_d, min_q = settings.pdq.match_distance, settings.pdq.min_quality
    with store.session() as s:
        items = s.execute(
            select(
                ItemRow.id,
                ItemRow.pdq,
                ItemRow.pdq_quality,
                ItemRow.video,
                ItemRow.known_match,
                ItemRow.status,
                ItemRow.visual_group,
            )
        ).all()
    hashes: list[str] = []
    owners: list[int] = []
    times: list[float | None] = []
    for item_id, pdq, quality, video, _km, status, _vg in items:
        if status == "duplicate":
            continue
        if pdq and (quality or 0) >= min_q:
            hashes.append(pdq)
            owners.append(item_id)
            times.append(None)
        for kf in (video or {}).get("keyframes", []):
            if kf.get("pdq") and (kf.get("quality") or 0) >= min_q:
                hashes.append(kf["pdq"])
                owners.append(item_id)
                times.append(kf.get("time"))
    mat = hashes_from_hex(hashes)
    own = np.asarray(owners, dtype=np.int64)
    # rotations and mirrors of each image and keyframe stand for it in the matching, and those
    # of images in the grouping
    flips, flip_of, flip_kind = _dihedral_variants(
        store, {(owners[k], t): k for k, t in enumerate(times)}
    )

    # Known-bad PDQ matches, for items that no hash matched. The references are the PDQ hashes of
    # the hash sets and of this case's own files that a hash set names exactly (its MD5 list may
    # carry no PDQ): a recompressed, resized or filmed copy of a known file is found either way.
    ref_rows = store.pdq_entries()
    refs_hs = hashes_from_hex([e.pdq for e in ref_rows])
    sets = store.hashsets()
    case_bad = [
        (i, p, km)
        for i, p, q, _v, km, st, _vg in items
        if km
        and not km.get("known_good")
        and km.get("method") != "pdq"
        and p
        and (q or 0) >= min_q
        and st != "duplicate"
    ]
    refs = np.concatenate([refs_hs, hashes_from_hex([p for _, p, _ in case_bad])])
    ref_match: list[dict[str, Any]] = [
        _known_match(sets[e.hashset_id], e.category, e.label, "pdq", 0) for e in ref_rows
    ] + [{**km, "via_item": i} for i, _p, km in case_bad]
    unmatched = {i for i, _p, _q, _v, km, _st, _vg in items if km is None}
    updates: dict[int, dict[str, Any]] = {}
    if len(refs) and len(mat):
        best, dist, found_by = nearest_within_variants(mat, refs, max_d, flips, flip_of)
        for k in np.nonzero(best >= 0)[0].tolist():
            item_id = owners[k]
            if item_id not in unmatched:
                continue
            prev = updates.get(item_id, {}).get("known_match")
            if prev is not None and prev["distance"] <= int(dist[k]):
                continue
            km = {**ref_match[int(best[k])], "method": "pdq", "distance": int(dist[k])}
            if times[k] is not None:
                km["frame_time"] = times[k]
            if found_by[k] >= 0:
                km["transform"] = PDQ_DIHEDRAL[int(flip_kind[found_by[k]])]
            updates.setdefault(item_id, {"id": item_id})["known_match"] = km
        if summary is not None:
            sets_by_name = {m.name: m for m in sets.values()}
            for u in updates.values():
                km = u["known_match"]
                summary.matches[
                    (
                        km["hashset"],
                        _category_text(sets_by_name[km["hashset"]], km["category"]),
                        "pdq",
                    )
                ] += 1

    # Groups join images only: a video holds many scenes, and joining through its frames would
    # chain unrelated photos into one group. Video frames are matched against hash sets above.
    still = np.asarray([t is None for t in times], dtype=bool)
    still_flips = still[flip_of] if len(flip_of) else np.zeros(0, dtype=bool)
    groups = (
        visual_groups(mat[still], own[still], max_d, flips[still_flips], own[flip_of[still_flips]])
        if len(mat)
        else {}
    )
    for item_id, _p, _q, _v, _km, status, old_group in items:
        if status != "duplicate" and groups.get(item_id) != old_group:
            updates.setdefault(item_id, {"id": item_id})["visual_group"] = groups.get(item_id)
    store.update_items(list(updates.values()))

    _copy_to_duplicates(store)
    rank_items(store, settings)


def _dihedral_variants(
    store: CaseStore, row_of: dict[tuple[int, float | None], int]
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """The rotated and mirrored PDQ hashes of the images and video keyframes whose own hash is
    row ``row_of[(item, frame time)]`` of the matching matrix (time None for an image): the
    hashes, the row each stands for, and its :data:`PDQ_DIHEDRAL` index."""
    hexes: list[str] = []
    rows: list[int] = []
    kinds: list[int] = []
    with store.session() as s:
        found = s.execute(
            select(ItemRow.id, ItemRow.pdq_dihedral, ItemRow.video).where(
                ItemRow.pdq_dihedral.is_not(None), ItemRow.status != "duplicate"
            )
        ).all()
    for item_id, dihedral, video in found:
        if not isinstance(dihedral, list) or not dihedral:
            continue
        if isinstance(dihedral[0], str):  # an image: its 8 hashes
            pairs = [((item_id, None), dihedral)]
        else:  # a video: 8 hashes per keyframe, in the order of video.keyframes
            frames = (video or {}).get("keyframes") or []
            pairs = [
                ((item_id, kf.get("time")), d) for kf, d in zip(frames, dihedral, strict=False)
            ]
        for key, variants in pairs:
            k = row_of.get(key)
            if k is None or not isinstance(variants, list) or len(variants) != len(PDQ_DIHEDRAL):
                continue
            for kind, h in enumerate(variants[1:], start=1):
                hexes.append(h)
                rows.append(k)
                kinds.append(kind)
    return (
        hashes_from_hex(hexes),
        np.asarray(rows, dtype=np.int64),
        np.asarray(kinds, dtype=np.int64),
    )


def rank_items(store: CaseStore, settings: Settings) -> None:
    """Priority, why and rank of every item of the case (see :mod:`heroes.pipeline.scoring`)."""
    from heroes.pipeline.scoring import score_item

    with store.session() as s:
        rows = s.execute(
            select(
                ItemRow.id,
                ItemRow.status,
                ItemRow.known_match,
                ItemRow.faces,
                ItemRow.nudity,
                ItemRow.priority,
                ItemRow.rank,
                ItemRow.why,
                ItemRow.error,
                ItemRow.duplicate_of,
            )
        ).all()
    scored: dict[int, tuple[float, list[Any]]] = {}
    for item_id, status, km, faces, nudity, _p, _r, _w, error, _d in rows:
        scored[item_id] = score_item(
            status, km, faces, nudity, settings.scoring, settings.pdq.match_distance, error
        )

    # known-good last, then by priority; a copy sorts right after its original
    def key(r: Any) -> tuple[int, float, int, int]:
        item_id, status, *_rest, dup = r
        return (status == "known_good", -scored[item_id][0], dup or item_id, item_id)

    updates = []
    for rank, r in enumerate(sorted(rows, key=key), start=1):
        item_id, _st, _km, _f, _n, old_p, old_rank, old_why, _err, _dup = r
        p, why = scored[item_id]
        p = round(p, 6)
        if (p, rank, why) != (old_p, old_rank, old_why):
            updates.append({"id": item_id, "priority": p, "why": why, "rank": rank})
    store.update_items(updates)


#: the fields a file's analysis fills, which copies take from their original
_ANALYSED = (
    "pdq",
    "pdq_quality",
    "pdq_dihedral",
    "exif",
    "video",
    "width",
    "height",
    "media_type",
    "mime",
    "faces",
    "nudity",
)


def _first_copy_is_original(store: CaseStore) -> None:
    """Of a set of exact copies, the one with the lowest item id (the first found in walk order)
    is the original. The Ray engine analyses whichever copy a worker hashed first; here its
    results, status and vectors move to the first copy, so records do not depend on scheduling."""
    with store.session() as s, s.begin():
        dups = s.execute(
            select(ItemRow.id, ItemRow.duplicate_of).where(ItemRow.status == "duplicate")
        ).all()
        first: dict[int, int] = {}
        for dup_id, orig in dups:
            if orig is not None and dup_id < first.get(orig, orig):
                first[orig] = dup_id
        if first:  # results and vectors the indexes may hold change items
            mark_stale(store.case_dir)
        for orig_id, new_id in sorted(first.items()):
            orig = s.get(ItemRow, orig_id)
            if orig is None:
                continue
            moved = {f: getattr(orig, f) for f in _ANALYSED}
            if moved["faces"]:
                moved["faces"] = [
                    {**face, "face_id": f"{new_id}-{k}"} for k, face in enumerate(moved["faces"])
                ]
            s.execute(
                update(ItemRow).where(ItemRow.duplicate_of == orig_id).values(duplicate_of=new_id)
            )
            s.execute(
                update(ItemRow)
                .where(ItemRow.id == new_id)
                .values(status=orig.status, error=orig.error, duplicate_of=None, **moved)
            )
            s.execute(
                update(ItemRow)
                .where(ItemRow.id == orig_id)
                .values(status="duplicate", error=None, duplicate_of=new_id)
            )
            for v in s.execute(select(VectorRow).where(VectorRow.item_id == orig_id)).scalars():
                v.item_id = new_id
                if v.ref and v.ref.startswith(f"{orig_id}-"):
                    v.ref = f"{new_id}-{v.ref.split('-', 1)[1]}"


def _copy_to_duplicates(store: CaseStore) -> None:
    """Duplicates carry their original's decoded and inferred fields."""
    with store.session() as s, s.begin():
        dups = s.execute(
            select(ItemRow.id, ItemRow.duplicate_of).where(ItemRow.status == "duplicate")
        ).all()
        if dups:
            orig_ids = sorted({o for _, o in dups})
            originals = {}
            for i in range(0, len(orig_ids), 500):
                chunk = orig_ids[i : i + 500]
                for r in s.execute(select(ItemRow).where(ItemRow.id.in_(chunk))).scalars():
                    originals[r.id] = r
            rows = []
            for dup_id, orig in dups:
                o = originals.get(orig)
                if o is None:
                    continue
                rows.append(
                    {
                        "id": dup_id,
                        "pdq": o.pdq,
                        "pdq_quality": o.pdq_quality,
                        "exif": o.exif,
                        "video": o.video,
                        "width": o.width,
                        "height": o.height,
                        "visual_group": o.visual_group,
                        "media_type": o.media_type,
                        "mime": o.mime,
                        "known_match": o.known_match,
                        "faces": o.faces,
                        "nudity": o.nudity,
                    }
                )
            if rows:
                s.execute(update(ItemRow), rows)


def triage(
    evidence: Path,
    case_dir: Path,
    *,
    settings: Settings | None = None,
    hashsets: Sequence[Path | HashSetSource] = (),
    known_good: Sequence[Path | HashSetSource] = (),
    progress: bool = False,
    retry_errors: bool = False,
) -> TriageSummary:
    """Triage one evidence root into a case folder. Re-running it resumes."""
    settings = settings or get_settings()
    evidence = Path(evidence)
    if not evidence.exists() and not evidence.is_symlink():
        raise FileNotFoundError(f"evidence not found: {evidence}")
    evidence = evidence.resolve()
    case_dir = _case_folder(case_dir, evidence)
    store = CaseStore(case_dir, settings.db_url)
    t0 = time.perf_counter()
    try:
        with case_lock(case_dir):
            doubts: list[str] = []
            imported = import_hashsets(store, list(hashsets), warn=doubts.append)
            imported += import_hashsets(
                store, list(known_good), known_good=True, warn=doubts.append
            )
            run_id = store.start_run(str(evidence), settings.model_dump())
            summary = TriageSummary(run_id, str(evidence), str(case_dir))
            summary.warnings = doubts
            summary.hashsets_imported = [f"{n} ({e} entries)" for n, e, _r, new in imported if new]
            _files, total_bytes = _prescan(evidence) if progress else (0, 0)
            bar = _Progress(progress, total_bytes)
            models = model_plan(settings, summary)
            engine = choose_engine(settings, evidence)
            if engine == "ray":
                from heroes.pipeline.raypass import RayPass

                the_pass: _Pass = RayPass(
                    store, evidence, settings, run_id, summary, bar, retry_errors, models
                )
                the_pass.case_dir = case_dir  # type: ignore[attr-defined]
            else:
                the_pass = _Pass(
                    store, evidence, settings, run_id, summary, bar, retry_errors, models
                )
            status = "done"
            try:
                entries = walk(
                    evidence,
                    settings.limits,
                    skip_archive=the_pass.skip_archive,
                    disk=settings.disk,
                )
                the_pass.run(entries)
            except KeyboardInterrupt:
                the_pass.flush(force=True)
                summary.interrupted = True
                status = "interrupted"
                raise
            except BaseException:
                # what was written stays; nothing is finalised or marked complete, and the next
                # run redoes the rest
                status = "failed"
                raise
            finally:
                bar.close()
                summary.elapsed = time.perf_counter() - t0
                if status == "done":
                    store.mark_archives_complete(str(evidence), the_pass.archives_done)
                    finalize(store, settings, summary)
                    summary.indexed = update_indexes(
                        store, case_dir, min_quality=settings.pdq.min_quality
                    )
                store.finish_run(run_id, summary.to_dict(), status)
            return summary
    finally:
        store.close()


def _case_folder(case_dir: Path | str, evidence: Path) -> Path:
    """The case folder as a real path, refused when it lies inside the evidence or holds it.

    Both sides are compared as real paths (``..`` and symlinks resolved, also in the part of the
    case path that does not exist yet): a case written into the evidence would change the seizure
    and be read back as evidence by the next run.
    """
    if isinstance(case_dir, str) and not case_dir.strip():
        raise StoreError("the case folder needs a name (an empty one is the current folder)")
    real = Path(os.path.realpath(case_dir))
    ev = Path(os.path.realpath(evidence))
    if real == ev or ev in real.parents:
        raise StoreError(f"the case folder {real} must not be inside the evidence {ev}")
    if real in ev.parents:
        raise StoreError(f"the evidence {ev} must not be inside the case folder {real}")
    return real


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and (
        importlib.util.find_spec("ray.data") is not None
    )


def choose_engine(settings: Settings, evidence: Path) -> str:
    """``ray`` or ``local``. Auto picks Ray for a cluster address or a seizure of at least
    ``ray.min_files`` files (Ray's start costs a few seconds that a small seizure never repays)."""
    if settings.engine == "local":
        return "local"
    if not ray_available():
        if settings.engine == "ray" or settings.ray.address:
            raise StoreError("the Ray engine needs ray[data]: pip install 'heroes[ray]'")
        return "local"
    if settings.engine == "ray" or settings.ray.address:
        return "ray"
    return (
        "ray"
        if _prescan(evidence, settings.ray.min_files)[0] >= settings.ray.min_files
        else "local"
    )


def model_plan(settings: Settings, summary: TriageSummary | None = None) -> InferOptions | None:
    """Which models this run uses: every enabled model that is usable here; the others are
    named in the summary with the reason, and their branch is left out."""
    if not settings.models:
        return None
    from heroes.models import registry

    wanted = InferOptions(
        device=settings.device,
        threads=_ort_threads(settings),
        scene_embed=settings.scene_model,
        face_embed=settings.face_model,
    )
    chosen: dict[str, Any] = {}
    specs = registry.manifest_specs()
    for fld in ("detector", "landmarks", "age", "face_embed", "scene_embed"):
        name = getattr(wanted, fld)
        spec = specs.get(name) if name else None
        st = registry.status(spec) if spec else None
        ok = st is not None and st.usable
        chosen[fld] = name if ok else None
        if summary is not None and name:
            summary.models[name] = "ok" if ok else (st.reason if st else "no manifest")
    if chosen["detector"] is None:
        chosen.update(landmarks=None, age=None, face_embed=None)
    return InferOptions(**chosen, threads=wanted.threads, device=wanted.device)


def _ort_threads(settings: Settings) -> int:
    workers = settings.workers or (os.cpu_count() or 1)
    return max(1, (os.cpu_count() or 1) // workers)
