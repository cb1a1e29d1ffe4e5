"""One triage pass: discover -> identify -> match -> decode + models -> persist -> finalise.

:func:`triage` opens the case, imports hash sets, picks an engine and runs it over the walk; the
decisions and writes are :class:`~heroes.pipeline.core.PassCore`'s, the same for every engine,
and the case-wide work after the pass is :mod:`heroes.pipeline.finalise`'s.

The local engine (:class:`LocalEngine`) hashes on a small thread pool (hashlib releases the GIL),
hands each hashed file to the core in walk order, and sends the files whose pixels are needed to a
process pool in batches (decode, then the models over the frames of the whole batch). The Ray
engine (:mod:`heroes.pipeline.raypass`) moves the same work over a Ray cluster.

Resumable: a file already in the case with the same path, size and mtime is not read again; one
whose size/mtime changed is hashed and, if its SHA-256 is unchanged, only its metadata is updated.
Rows are committed every few hundred files, so a killed run loses at most the last batch, which the
next run redoes; the unique (evidence, path) key means nothing is counted twice.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from heroes.config import Settings, get_settings
from heroes.pipeline.analyze import Analysis, analyze_alone, analyze_many
from heroes.pipeline.core import (
    Admitted,
    Decision,
    Identified,
    PassCore,
    identify_entry,
)
from heroes.pipeline.discover import Entry, walk
from heroes.pipeline.finalise import finalize
from heroes.pipeline.hashsets import HashSetSource
from heroes.pipeline.importsets import import_hashsets
from heroes.pipeline.indexing import update_indexes
from heroes.pipeline.infer import InferOptions
from heroes.pipeline.ranking import rank_items
from heroes.pipeline.raypass import RayEngine
from heroes.pipeline.summary import Progress, TriageSummary, error_kind
from heroes.store.db import CaseStore, StoreError
from heroes.store.lock import case_lock

__all__ = [
    "LocalEngine",
    "TriageSummary",
    "choose_engine",
    "error_kind",
    "finalize",
    "import_hashsets",
    "model_plan",
    "rank_items",
    "triage",
]

#: files whose pixels go to a worker process in one task (the models batch across them)
BATCH_FILES = 8


class LocalEngine:
    """Hashing on threads, decoding and models in a process pool, batched across files."""

    def __init__(self, core: PassCore, settings: Settings) -> None:
        self.core = core
        self.chunk = settings.hash_chunk
        self.workers = settings.workers or (os.cpu_count() or 1)

    def run(self, entries: Iterator[Entry]) -> None:
        """Stream entries through hashing (threads) and decoding (processes), in bounded windows."""
        core = self.core
        window = max(4, 4 * self.workers)
        idq: deque[tuple[Entry, Future[Identified], Admitted]] = deque()
        decoding: dict[Future[list[Analysis]], list[tuple[Decision, Any]]] = {}
        pending: list[tuple[Decision, Any]] = []
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(["heroes.pipeline.analyze"])
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

        def settle_decodes(block: bool, broken_pool: bool = False) -> None:
            nonlocal pool
            broken: list[tuple[Decision, Any]] = []
            if not decoding and not broken_pool:
                return
            done: set[Future[list[Analysis]]] = set()
            if decoding:
                done, _ = wait(
                    list(decoding), timeout=None if block else 0, return_when=FIRST_COMPLETED
                )
            for fut in done:
                batch = decoding.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    broken += batch
                    continue
                for (decision, _job), analysis in zip(batch, results, strict=True):
                    core.finish(decision, analysis)
            if broken or broken_pool:
                # A worker died (a native crash in a decoder): every in-flight file is suspect.
                # Each is retried alone in a fresh process; one that kills it again becomes an
                # error record, the others get their results, and the pass goes on.
                for batch in decoding.values():
                    broken += batch
                decoding.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for decision, job in broken:
                    core.finish(decision, analyze_alone(job, core.opts))
                pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

        def submit(force: bool) -> None:
            nonlocal pending
            if not pending or not (
                force or len(pending) >= BATCH_FILES or len(decoding) < self.workers
            ):
                return
            batch, pending = pending, []
            jobs = [job for _d, job in batch]
            try:
                fut = pool.submit(analyze_many, jobs, core.opts)
            except BrokenProcessPool:
                # the pool broke between two submissions: settle what was in flight (each
                # suspect file alone), which also replaces the pool, then submit again
                settle_decodes(block=True, broken_pool=True)
                fut = pool.submit(analyze_many, jobs, core.opts)
            decoding[fut] = batch
            while len(decoding) > 2 * self.workers:
                settle_decodes(block=True)

        def settle_identified() -> None:
            entry, fut, admitted = idq.popleft()
            decision = core.decide(entry, fut.result(), admitted)
            if decision is None:
                return
            if decision.decode:
                pending.append((decision, decision.job(entry)))
                submit(force=False)
            else:
                core.emit(decision)

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(4, self.workers))) as hashers:
                for entry in entries:
                    admitted = core.admit(entry)
                    if admitted is None:
                        continue
                    idq.append((entry, hashers.submit(identify_entry, entry, self.chunk), admitted))
                    while idq and (len(idq) > window or idq[0][1].done()):
                        settle_identified()
                    settle_decodes(block=False)
                    submit(force=False)
                while idq:
                    settle_identified()
            submit(force=True)
            while decoding:
                settle_decodes(block=True)
        except BaseException:
            # interrupted (Ctrl-C) or failed: stop now, without waiting for a decode that may
            # run for minutes (a long video) or never saw the interrupt; what was written stays
            _stop_now(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            core.flush(force=True)


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """End a process pool's workers at once (its queued work is dropped)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        proc.join(timeout=5)


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
            run_id = store.start_run(str(evidence), settings.model_dump(mode="json"))
            summary = TriageSummary(run_id, str(evidence), str(case_dir))
            summary.warnings = doubts
            summary.hashsets_imported = [f"{n} ({e} entries)" for n, e, _r, new in imported if new]
            _files, total_bytes = _prescan(evidence) if progress else (0, 0)
            bar = Progress(progress, total_bytes)
            models = model_plan(settings, summary)
            core = PassCore(store, evidence, settings, run_id, summary, bar, retry_errors, models)
            if choose_engine(settings, evidence) == "ray":
                engine: LocalEngine | RayEngine = RayEngine(core, settings, case_dir)
            else:
                engine = LocalEngine(core, settings)
            status = "done"
            try:
                entries = walk(
                    evidence,
                    settings.limits,
                    skip_archive=core.skip_archive,
                    disk=settings.disk,
                )
                engine.run(entries)
            except KeyboardInterrupt:
                core.flush(force=True)
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
                    store.mark_archives_complete(str(evidence), core.archives_done)
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

    return importlib.util.find_spec("ray") is not None


def choose_engine(settings: Settings, evidence: Path) -> str:
    """``ray`` or ``local``. Auto picks Ray for a cluster address or a seizure of at least
    ``ray.min_files`` files (Ray's start costs a few seconds that a small seizure never repays)."""
    if settings.engine == "local":
        return "local"
    if not ray_available():
        if settings.engine == "ray" or settings.ray.address:
            raise StoreError("the Ray engine needs ray: pip install 'ray==2.60.0'")
        return "local"
    if settings.engine == "ray" or settings.ray.address:
        return "ray"
    return (
        "ray"
        if _prescan(evidence, settings.ray.min_files)[0] >= settings.ray.min_files
        else "local"
    )


def model_plan(settings: Settings, summary: TriageSummary | None = None) -> InferOptions | None:
    """Which models this run uses: every enabled model that is usable here (on CPU, its INT8
    variant where one agrees with it and ``int8`` is on); the others are named in the summary
    with the reason, and their branch is left out."""
    if not settings.models:
        return None
    from heroes.models import registry

    wanted = {
        "detector": settings.detector_model,
        "landmarks": settings.landmarks_model,
        "age": settings.age_model,
        "face_embed": settings.face_model,
        "scene_embed": settings.scene_model,
    }
    chosen: dict[str, Any] = {}
    with registry.using_model_dir(settings.model_dir):
        specs = registry.manifest_specs()
        for fld, name in wanted.items():
            if name in specs:
                name = registry.preferred_variant(name, settings.device, allow_int8=settings.int8)
            spec = specs.get(name) if name else None
            st = registry.status(spec) if spec else None
            ok = st is not None and st.usable
            chosen[fld] = name if ok else None
            if summary is not None and name:
                summary.models[name] = "ok" if ok else (st.reason if st else "no manifest")
    if chosen["detector"] is None:
        chosen.update(landmarks=None, age=None, face_embed=None)
    return InferOptions.from_settings(
        settings, threads=settings.ort_threads or _ort_threads(settings), **chosen
    )


def _ort_threads(settings: Settings) -> int:
    workers = settings.workers or (os.cpu_count() or 1)
    return max(1, (os.cpu_count() or 1) // workers)


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
