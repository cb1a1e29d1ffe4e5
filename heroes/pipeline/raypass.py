"""The triage pass as a Ray Data plan: the same decisions as the local engine, spread over Ray.

Data flow (see ``docs/ray-pass.md`` for the measurements behind it)::

    driver: walk + resume check ──refs──▶ Feed actor ──▶ read task (streams blocks of refs)
        ──▶ fused:  TriageWorker actors (hash + claim + decode + models), one per CPU
        ──▶ split:  decode tasks (hash + claim + decode, CPU) ──pixels──▶ InferWorker actors (GPU)
        ──▶ driver: decide + write (the only writer of the case store)

- File references stream, not bytes: a file on disk travels as its path and is read once, where it
  is hashed and decoded. Archive members have no path, so they travel with their bytes (bounded by
  the walker's limits and by the number of files in flight).
- The driver keeps at most ``in_flight`` files out; anything sent and never returned (a lost node)
  is redone in the driver, each file in its own process, so every file is accounted for.
- Exact duplicates and known-good files are not decoded: after hashing, a worker asks the
  :class:`Ledger` (one actor beside the driver, reading the case store) whether the file is the
  first of its SHA-256 in the case and not known-good. Copies get their original's results when the
  case is finalised, as in the local engine.
- A file that kills its worker (a native crash in a decoder): Ray restarts the actor and retries the
  batch; the worker sees from the ledger that the batch ran before, decodes its files one at a time,
  and a file that was being decoded alone when a worker died becomes an error record.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import queue
import re
import signal
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heroes.config import Settings
from heroes.pipeline.analyze import (
    Analysis,
    AnalyzeOptions,
    Decoded,
    _models,
    analyze_alone,
    crashed,
    decode_media,
    infer_many,
)
from heroes.pipeline.core import (
    Admitted,
    Identified,
    PassCore,
    exact_matches,
    identify_entry,
    identify_source,
    needs_pixels,
    only_known_good,
)
from heroes.pipeline.discover import Entry, content_source
from heroes.pipeline.identify import StreamSource

#: how long the actors may take to start (process, imports, model loading) before the pass fails
ACTOR_START_S = 600
#: frames a model actor holding a GPU takes in one call (the detector chunks them by 64)
GPU_BATCH_FRAMES = 256
#: Ray Data block size for the whole plan (see build_dataset)
BLOCK_BYTES = 8 * 1024
#: files in flight at least: their refs must fill more than one block (a ref is >= 40 bytes)
MIN_IN_FLIGHT = 512
_UNIX_SOCKET_MAX = 107
#: the longest file name Ray puts under its temp dir (session_<date>_<pid>/sockets/plasma_store)
_RAY_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


# --------------------------------------------------------------------------------------------------
# what travels


@dataclass(slots=True)
class Ref:
    """One file sent to the plan: a path on disk, or the bytes of an archive member."""

    key: int
    path: str
    fs_path: str | StreamSource | None
    data: bytes | None
    is_archive: bool
    entry_error: str | None
    update_of: int | None
    old_sha: str | None


@dataclass(slots=True)
class FileResult:
    """What the plan hands back for one file: its hashes, what the ledger said of it, and (when
    this worker decoded it) its :class:`~heroes.pipeline.analyze.Analysis`.

    ``verdict`` is None when the ledger was not asked (nothing to decode), ``decode``,
    ``duplicate`` (``owner`` is the key of the file of this run that claimed the content, None when
    the case held it before) or ``known_good``."""

    key: int
    ident: Identified
    verdict: str | None
    owner: int | None
    analysis: Analysis | None
    node: str = ""
    infer_node: str | None = None


def _pack(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------------------------------
# actors beside the driver


class Feed:
    """A queue of references the driver fills and the plan's read task drains (async actor)."""

    def __init__(self) -> None:
        import asyncio

        self._items: deque[bytes] = deque()
        self._closed = False
        self._event = asyncio.Event()

    async def push(self, items: list[bytes], close: bool = False) -> None:
        self._items.extend(items)
        self._closed = self._closed or close
        self._event.set()

    async def pull(self, n: int, wait_s: float) -> tuple[list[bytes], bool]:
        import asyncio

        if not self._items and not self._closed:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), wait_s)
            except TimeoutError:
                pass
        out = [self._items.popleft() for _ in range(min(n, len(self._items)))]
        return out, self._closed and not self._items


class Ledger(Feed):
    """Which file of a SHA-256 is decoded (the first to claim it), which files are known-good,
    and which batches and files were being worked on when a worker died; also the feed of
    references (one actor beside the driver, not two: each Ray process costs over 100 MB)."""

    def __init__(self, case_dir: str, db_url: str | None) -> None:
        from heroes.store.db import CaseStore

        super().__init__()

        self.store = CaseStore(Path(case_dir), db_url, create=False)
        self.has_sets = bool(self.store.hashsets())
        self.had_items = self.store.count_items() > 0
        self.claims: dict[bytes, int] = {}
        self.batch_attempts: Counter[int] = Counter()
        self.open_alone: set[int] = set()

    def claim(
        self, rows: list[tuple[int, str, str, str, int | None]]
    ) -> list[tuple[str, int | None, int]]:
        """For each (key, md5, sha1, sha256, update_of): (verdict, owner, earlier attempts) where
        the verdict is ``decode``, ``duplicate`` (another file has this content: the key that
        claimed it in this run, or None for a file of the case) or ``known_good``; attempts counts
        how often this file's batch was started before."""
        out: list[tuple[str, int | None, int]] = []
        for key, md5, sha1, sha256, update_of in rows:
            if self.has_sets and only_known_good(exact_matches(self.store, md5, sha1, sha256)):
                out.append(("known_good", None, 0))
                continue
            digest = bytes.fromhex(sha256)
            owner = self.claims.setdefault(digest, key)
            if owner != key:
                out.append(("duplicate", owner, 0))
                continue
            if self.had_items:
                first = self.store.first_with_sha256(sha256)
                if first is not None and first != update_of:
                    out.append(("duplicate", None, 0))
                    continue
            out.append(("decode", None, self.batch_attempts[key]))
            self.batch_attempts[key] += 1
        return out

    def alone(self, key: int, finished: int | None) -> bool:
        """A worker is about to decode file ``key`` alone (and has finished ``finished``). True
        when a worker started this file alone before and never finished it: it died on it."""
        if finished is not None:
            self.open_alone.discard(finished)
        if key < 0:
            return False
        if key in self.open_alone:
            self.open_alone.discard(key)
            return True
        self.open_alone.add(key)
        return False

    def forget(self, keys: list[int]) -> None:
        for k in keys:
            self.batch_attempts.pop(k, None)
            self.open_alone.discard(k)

    def close(self) -> None:
        self.store.close()


# --------------------------------------------------------------------------------------------------
# the plan's stages (run in Ray workers)


@dataclass(slots=True)
class _Work:
    """A file inside a worker: what it was sent, what hashing found, what the ledger said."""

    ref: Ref
    ident: Identified
    verdict: str | None = None
    owner: int | None = None
    attempts: int = 0
    decoded: Decoded | None = None
    analysis: Analysis | None = None

    def result(self, node: str) -> FileResult:
        return FileResult(
            self.ref.key, self.ident.without_data(), self.verdict, self.owner, self.analysis, node
        )


def _prepare(refs: list[Ref], ledger: Any, chunk: int) -> list[_Work]:
    """Hash and sniff each file, then ask the ledger which ones to decode."""
    import ray

    works: list[_Work] = []
    ask: list[tuple[int, str, str, str, int | None]] = []
    for ref in refs:
        w = _Work(ref, identify_source(ref.data, ref.fs_path, ref.is_archive, chunk))
        d = w.ident.digests
        if (
            d is not None
            and needs_pixels(w.ident, ref.entry_error, ref.is_archive)
            and not (ref.old_sha is not None and ref.old_sha == d.sha256)
        ):
            ask.append((ref.key, d.md5, d.sha1, d.sha256, ref.update_of))
            w.verdict = "ask"
        works.append(w)
    answers = iter(ray.get(ledger.claim.remote(ask)) if ask else [])
    for w in works:
        if w.verdict == "ask":
            w.verdict, w.owner, w.attempts = next(answers)
    return works


def _decode_all(works: list[_Work], ledger: Any, opts: AnalyzeOptions, *, infer: bool) -> None:
    """Decode (and with ``infer``, run the models on, in batches across the files) every file the
    ledger gave this worker.

    After a worker died on this batch, files are decoded one at a time, each announced to the
    ledger first: the one that was being decoded alone when a worker died is not tried again."""
    import ray

    todo = [w for w in works if w.verdict == "decode"]
    if any(w.attempts > 0 for w in todo):
        finished: int | None = None
        for w in todo:
            died_on_it = ray.get(ledger.alone.remote(w.ref.key, finished))
            finished = w.ref.key
            if died_on_it:
                w.analysis = crashed()
                continue
            w.decoded = decode_media(w.ident.media_type, w.ident.data, w.ref.fs_path, opts)
            if infer:
                w.analysis = infer_many([w.decoded], opts)[0]
                w.decoded = None
        if finished is not None:
            ray.get(ledger.alone.remote(-1, finished))
        return
    for w in todo:
        w.decoded = decode_media(w.ident.media_type, w.ident.data, w.ref.fs_path, opts)
    if infer:
        done = infer_many([w.decoded for w in todo if w.decoded is not None], opts)
        for w, analysis in zip(todo, done, strict=True):
            w.analysis, w.decoded = analysis, None


def _emit(works: list[_Work], node: str) -> dict[str, Any]:
    """The batch's results; in the split plan, the decoded frames ride along to the models."""
    rows = []
    for w in works:
        decoded, w.decoded = w.decoded, None
        if decoded is not None and w.analysis is None:
            if decoded.frames:
                rows.append(_pack((w.result(node), decoded)))
                continue
            w.analysis = Analysis(dict(decoded.fields))
        rows.append(_pack((w.result(node), None)))
    return {"out": np.array(rows, dtype=object)}


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())[:12]


class TriageWorker:
    """The fused stage: hash + decode + EXIF + PDQ + models, one actor per CPU, ORT 1 thread."""

    def __init__(self, opts: AnalyzeOptions, ledger: Any, chunk: int) -> None:
        self.opts, self.ledger, self.chunk = opts, ledger, chunk
        self.node = _node()
        _models(opts)  # load the sessions once, before the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        works = _prepare([pickle.loads(b) for b in batch["ref"]], self.ledger, self.chunk)
        _decode_all(works, self.ledger, self.opts, infer=True)
        return _emit(works, self.node)


def decode_batch(
    batch: dict[str, np.ndarray], opts: AnalyzeOptions, ledger: Any, chunk: int
) -> dict[str, Any]:
    """The split layout's CPU stage: hash + decode; frames go on to the model actors."""
    works = _prepare([pickle.loads(b) for b in batch["ref"]], ledger, chunk)
    _decode_all(works, ledger, opts, infer=False)
    return _emit(works, _node())


class InferWorker:
    """The split layout's model stage: one actor per GPU (or as asked), sessions loaded once;
    the frames of every file of a batch go through the models together."""

    def __init__(self, opts: AnalyzeOptions) -> None:
        self.opts = opts
        self.node = _node()
        _models(opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        pairs: list[tuple[FileResult, Decoded | None]] = [pickle.loads(b) for b in batch["out"]]
        todo = [(r, d) for r, d in pairs if d is not None]
        for (r, _d), analysis in zip(
            todo, infer_many((d for _r, d in todo if d is not None), self.opts), strict=True
        ):
            r.analysis, r.infer_node = analysis, self.node
        return {"out": np.array([_pack((r, None)) for r, _d in pairs], dtype=object)}


# --------------------------------------------------------------------------------------------------
# the source: a read task that streams what the driver pushes into the feed


def _feed_source(feed: Any, block_rows: int) -> Any:
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read() -> Iterator[Any]:
        import ray

        while True:
            items, done = ray.get(feed.pull.remote(block_rows, 0.5))
            if items:
                yield pa.table({"ref": pa.array(items, type=pa.binary())})
            elif done:
                return

    class FeedSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_kw: Any) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, meta)]

    return FeedSource()


# --------------------------------------------------------------------------------------------------
# starting Ray


@dataclass
class RayPlan:
    """What the plan uses, decided from the settings and the cluster."""

    address: str | None
    cpus: int
    gpus: int
    layout: str
    actors: int
    batch_size: int
    decoders: int
    nodes: int
    temp_dir: str | None


def ray_temp_dir(case_dir: Path, settings: Settings) -> Path:
    """CASE/.ray, unless Ray's socket paths under it would be too long for a Unix socket; then a
    short folder under TMPDIR named after the case. ``ray.temp_dir`` overrides both."""
    if settings.ray.temp_dir is not None:
        return Path(settings.ray.temp_dir)
    inside = case_dir / ".ray"
    if len(str(inside)) + _RAY_SUFFIX <= _UNIX_SOCKET_MAX:
        return inside
    tag = hashlib.sha1(str(case_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"heroes-ray-{os.getuid()}-{tag}"


def reap_stale_ray(temp_dir: Path) -> int:
    """Stop Ray processes that a killed run of this case left behind (they name the same temp dir
    on their command line). Returns how many were signalled."""
    needle = (str(temp_dir).rstrip("/") + "/").encode()
    me, uid, n = os.getpid(), os.getuid(), 0
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(pid_dir.name)
            if pid == me or pid_dir.stat().st_uid != uid:
                continue
            if needle in (pid_dir / "cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                n += 1
        except (OSError, ValueError):
            continue
    return n


def _quiet() -> None:
    """Ray's notices go to the session's log files, not to the examiner's terminal."""
    import logging
    import warnings

    import ray.data  # noqa: F401  (configures the ray.data logger, which is adjusted below)

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.FileHandler):
                # crash notices and retries are Ray's business: the pass accounts for every file
                handler.setLevel(logging.CRITICAL + 1)
    # the feed is one streaming read task, so Ray Data estimates one input block; it is not
    warnings.filterwarnings("ignore", message=".*operator only received.*")


#: lines Ray writes to the driver's stderr: its C++ core's (glog, ``[date time,ms E pid tid]``),
#: and the notices it relays from the raylet and the workers (``(raylet) ...``, ``(X pid=N) ...``)
_RAY_NATIVE_LINE = re.compile(
    rb"^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] "
    rb"|(\x1b\[[0-9;]*m)?\((raylet|autoscaler|gcs_server|\S{1,200} pid=\d+[^)]*)\))"
)


class NativeLogFilter:
    """While the plan runs, lines that Ray's C++ core writes straight to this process's stderr
    (file descriptor 2, out of reach of Python's logging) go to a log file; every other line
    still reaches the terminal. A normal run shows only heroes' own progress and summary."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NativeLogFilter:
        import sys

        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
        except OSError:  # no stderr to filter (a daemon): nothing to do
            self._saved = None
            return self
        self._thread = threading.Thread(
            target=self._forward, args=(read_end, self._saved), name="heroes-ray-log", daemon=True
        )
        self._thread.start()
        return self

    def _forward(self, read_end: int, terminal: int) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(read_end, "rb", buffering=0) as src, open(self.log_path, "ab") as log:
            pending = b""
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if _RAY_NATIVE_LINE.match(line):
                        log.write(line + b"\n")
                    else:
                        os.write(terminal, line + b"\n")
            if pending:
                os.write(terminal, pending)

    def __exit__(self, *exc: object) -> None:
        import sys

        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the thread drains and ends
        if self._thread is not None:
            self._thread.join(timeout=10)
        os.close(self._saved)
        self._saved = None


def start_ray(case_dir: Path, settings: Settings) -> tuple[bool, str | None]:
    """Join ``ray.address`` or start an embedded Ray for this case. Returns (started here, temp
    dir). Embedded: no dashboard, sessions under the case's temp dir, nothing in the home folder."""
    import ray

    for key, value in (
        ("RAY_USAGE_STATS_ENABLED", "0"),
        ("RAY_AUTH_MODE", "disabled"),
        ("RAY_DATA_DISABLE_PROGRESS_BARS", "1"),
    ):
        os.environ.setdefault(key, value)
    _quiet()
    env = {k: v for k, v in os.environ.items() if k.startswith("HEROES_")}
    if ray.is_initialized():
        return False, None
    rs = settings.ray
    if rs.address:
        ray.init(
            address=rs.address,
            runtime_env={"env_vars": env} if env else None,
            log_to_driver=False,
            logging_level="WARNING",
        )
        return True, None
    tmp = ray_temp_dir(case_dir, settings)
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    reap_stale_ray(tmp)
    # workers inherit the driver's environment: keep caches out of the home folder
    os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "cache"))
    ray.init(
        num_cpus=rs.cpus or os.cpu_count() or 1,
        num_gpus=rs.gpus,
        include_dashboard=False,
        _temp_dir=str(tmp),
        object_store_memory=rs.object_store_mb * 1024 * 1024,
        log_to_driver=False,
        logging_level="WARNING",
        configure_logging=True,
    )
    return True, str(tmp)


def plan_for(settings: Settings, temp_dir: str | None) -> RayPlan:
    import ray

    res = ray.cluster_resources()
    cpus = int(res.get("CPU", 1))
    gpus = int(res.get("GPU", 0)) if settings.ray.gpus is None else settings.ray.gpus
    layout = settings.ray.layout
    if layout == "auto":
        layout = "split" if gpus > 0 else "fused"
    if layout == "fused":
        actors = settings.ray.actors or max(1, cpus)
        batch = settings.ray.batch_size or 8
        decoders = 0
    else:
        actors = settings.ray.actors or max(1, gpus or 1)
        batch = settings.ray.batch_size or (32 if gpus else 8)
        decoders = max(1, cpus - actors)
    need = actors + (1 if layout == "split" else 0)
    if need > cpus:
        raise RuntimeError(
            f"the {layout} plan needs {need} CPUs ({actors} model actors"
            + (" and a decode task" if layout == "split" else "")
            + f"), the Ray cluster has {cpus}: lower --actors or add CPUs"
        )
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return RayPlan(
        settings.ray.address, cpus, gpus, layout, actors, batch, decoders, nodes, temp_dir
    )


def build_dataset(plan: RayPlan, feed: Any, ledger: Any, opts: AnalyzeOptions, chunk: int) -> Any:
    """The Ray Data plan: refs from the feed, then the fused or the split stages."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    # Ray Data holds a read task's output until a block reaches this size (None: until the task
    # ends). The feed's refs are small and its one read task lasts the whole pass, so blocks must
    # be small for refs to flow; the driver keeps enough refs in flight to fill several.
    ctx.target_max_block_size = BLOCK_BYTES
    # start once every actor is up (models loaded), so work spreads over all of them and all
    # nodes; an actor pool the cluster cannot place fails with a clear error instead of waiting
    ctx.wait_for_min_actors_s = ACTOR_START_S
    ds = ray.data.read_datasource(_feed_source(feed, 256), override_num_blocks=1, num_cpus=0)
    if plan.layout == "fused":
        # ORT with one thread per actor, one actor per CPU: every stage keeps every core busy
        # (asked for with GPUs: the actors share them)
        gpu_device = _gpu_device(opts) if plan.gpus else None
        opts1 = _with_threads(opts, 1, gpu_device)
        return ds.map_batches(
            TriageWorker,
            fn_constructor_kwargs={"opts": opts1, "ledger": ledger, "chunk": chunk},
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=1,
            num_gpus=plan.gpus / plan.actors if plan.gpus else 0,
            batch_size=plan.batch_size,
            batch_format="numpy",
            zero_copy_batch=True,
        )
    decode_opts = AnalyzeOptions(**{**_opts_dict(opts), "models": opts.models})
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"opts": decode_opts, "ledger": ledger, "chunk": chunk},
        num_cpus=1,
        batch_size=plan.batch_size,
        batch_format="numpy",
        # Ray Data retries tasks without limit (max_retries=-1): a worker killed by a file is
        # retried until the ledger has singled that file out
    )
    per_actor_gpu = plan.gpus / plan.actors if plan.gpus else 0
    device = _gpu_device(opts) if plan.gpus else None
    infer_opts = _with_threads(
        opts, max(1, plan.cpus // max(1, plan.actors + plan.decoders)), device
    )
    return ds.map_batches(
        InferWorker,
        fn_constructor_kwargs={"opts": infer_opts},
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=1,
        num_gpus=per_actor_gpu,
        batch_size=plan.batch_size,
        batch_format="numpy",
    )


def _gpu_device(opts: AnalyzeOptions) -> str:
    """The device for actors that hold GPUs: as configured (cuda, tensorrt), cuda otherwise."""
    device = opts.models.device if opts.models else None
    return device if device not in (None, "cpu") else "cuda"


def _opts_dict(opts: AnalyzeOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__}


def _with_threads(opts: AnalyzeOptions, threads: int, device: str | None) -> AnalyzeOptions:
    """Options for model actors: their threads, and on a GPU its device and larger batches."""
    from dataclasses import replace

    if opts.models is None:
        return opts
    models = replace(opts.models, threads=threads)
    if device is not None:
        models = replace(models, device=device)
        return replace(opts, models=models, batch_frames=GPU_BATCH_FRAMES)
    return replace(opts, models=models)


# --------------------------------------------------------------------------------------------------
# the driver's side


class ResultPump(threading.Thread):
    """Pulls finished batches from the plan into a local queue, so the driver can keep feeding."""

    DONE = object()

    def __init__(self, ds: Any) -> None:
        super().__init__(name="heroes-ray-results", daemon=True)
        self.ds = ds
        self.out: queue.Queue[Any] = queue.Queue(maxsize=64)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for batch in self.ds.iter_batches(batch_size=None, batch_format="numpy"):
                self.out.put(batch["out"])
        except BaseException as exc:  # handed to the driver, which raises it
            self.error = exc
        finally:
            self.out.put(self.DONE)


def stop_ray(started_here: bool) -> None:
    import ray

    if started_here and ray.is_initialized():
        ray.shutdown()


def _here() -> Any:
    """Pin the ledger and the feed to the driver's node (the case store is there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # a Ray client has no node of its own
        return "DEFAULT"
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


#: results back from the plan but not yet decided (they wait for an earlier file in the walk);
#: past this many the driver stops sending
HOLD_MAX = 20_000
#: with the hold full, how long the driver waits for the file that holds it before redoing it
STALL_S = 600.0


class InOrder:
    """The driver's side of the plan: results come back in any order, and are handed to the pass
    core in walk order, so that both engines decide alike (ids follow the walk; of a set of copies
    the first in the walk is the original, whichever copy a worker analysed).

    A file whose analysis another copy carries waits for that copy's result. Files the plan never
    returned are redone here, each in a process of its own."""

    def __init__(self, core: PassCore, chunk: int) -> None:
        self.core = core
        self.chunk = chunk
        #: key -> (entry, admission) of every file sent and not decided yet
        self.sent: dict[int, tuple[Entry, Admitted]] = {}
        #: key -> result, back from the plan and not decided yet
        self.back: dict[int, FileResult] = {}
        #: sha256 -> an analysis of that content that no decided file has taken yet
        self.analysed: dict[str, Analysis] = {}
        self.next_key = 0
        self.redone = 0

    @property
    def out(self) -> int:
        """Files sent and not back yet."""
        return len(self.sent) - len(self.back)

    def send(self, entry: Entry, key: int) -> Ref | None:
        """The Ref of a file to read, or None when the core settled it without reading."""
        admitted = self.core.admit(entry)
        if admitted is None:
            return None
        self.sent[key] = (entry, admitted)
        fs = content_source(entry) if entry.data is None else None
        return Ref(
            key,
            entry.path,
            fs,
            entry.data,
            bool(entry.archive_kind),
            entry.error,
            admitted.update_of,
            admitted.old_sha,
        )

    def take(self, result: FileResult) -> None:
        if result.key not in self.sent or result.key in self.back:
            return  # decided already, or redone here
        self.back[result.key] = result
        sha = result.ident.digests.sha256 if result.ident.digests else None
        if sha and result.analysis is not None:
            self.analysed.setdefault(sha, result.analysis)
        self.decide_ready()

    def decide_ready(self) -> None:
        while self.next_key in self.back:
            if not self._decide(self.back[self.next_key], wait=True):
                return
            del self.back[self.next_key]
            del self.sent[self.next_key]
            self.next_key += 1  # keys are dense: one per file sent

    def _must_wait(self, r: FileResult) -> bool:
        """A copy whose content another file of this run claimed, when no earlier copy became
        the original yet (so this one will) and the analysis is still out."""
        sha = r.ident.digests.sha256 if r.ident.digests else None
        return (
            sha is not None
            and r.verdict == "duplicate"
            and r.owner is not None
            and r.owner in self.sent
            and r.owner not in self.back
            and sha not in self.analysed
            and sha not in self.core.seen_sha
        )

    def _decide(self, r: FileResult, *, wait: bool) -> bool:
        """Decide one file; False when it must wait for the copy that carries its analysis."""
        if wait and self._must_wait(r):
            return False
        entry, admitted = self.sent[r.key]
        decision = self.core.decide(entry, r.ident, admitted)
        if decision is None:
            return True
        sha = decision.sha256 or ""
        if not decision.decode:
            if decision.row["status"] in ("duplicate", "known_good"):
                self.analysed.pop(sha, None)  # no later copy needs it
            self.core.emit(decision)
            return True
        analysis = self.analysed.pop(sha, None)
        if analysis is None:
            # nothing in the plan analysed this content (its copy was lost, or the plan did not
            # decode what the core wants decoded): analysed here, in a process of its own
            analysis = analyze_alone(decision.job(entry), self.core.opts)
        self.core.finish(decision, analysis)
        return True

    def redo(self, key: int) -> None:
        """Decide a file the plan has not returned, reading and analysing it here."""
        entry, _admitted = self.sent[key]
        self.redone += 1
        self.back[key] = FileResult(key, identify_entry(entry, self.chunk), None, None, None)

    def finish(self) -> None:
        """After the plan: every file not back is redone, and everything is decided."""
        for key in sorted(self.sent):
            if key not in self.back:
                self.redo(key)
            self.next_key = key
            self._decide(self.back.pop(key), wait=False)
            del self.sent[key]


class RayEngine:
    """Hashing, decoding and models in a Ray Data plan; decisions and writes in the pass core."""

    def __init__(self, core: PassCore, settings: Settings, case_dir: Path) -> None:
        self.core = core
        self.settings = settings
        self.case_dir = case_dir
        self._first: float | None = None

    def run(self, entries: Iterator[Entry]) -> None:
        log = ray_temp_dir(self.case_dir, self.settings) / "heroes-ray-native.log"
        with NativeLogFilter(log):
            self._run(entries)

    def _run(self, entries: Iterator[Entry]) -> None:
        import ray

        t0 = time.perf_counter()
        summary = self.core.summary
        started, tmp = start_ray(self.case_dir, self.settings)
        try:
            plan = plan_for(self.settings, tmp)
            summary.engine = "ray"
            summary.ray = asdict(plan)
            summary.ray["start_s"] = round(time.perf_counter() - t0, 2)
            where = _here()
            ledger = (
                ray.remote(Ledger)
                .options(num_cpus=0, scheduling_strategy=where)
                .remote(str(self.case_dir), self.core.store.url)
            )
            feed = ledger
            ds = build_dataset(plan, feed, ledger, self.core.opts, self.settings.hash_chunk)
            pump = ResultPump(ds)
            pump.start()
            try:
                self._stream(entries, plan, feed, ledger, pump)
                end = time.perf_counter()
                if self._first is not None:
                    # from Ray's start to the first result (actors, models), then the rest
                    summary.ray["first_result_s"] = round(self._first - t0, 2)
                    summary.ray["after_first_s"] = round(end - self._first, 2)
            finally:
                self.core.flush(force=True)
        finally:
            stop_ray(started)

    def _stream(
        self, entries: Iterator[Entry], plan: RayPlan, feed: Any, ledger: Any, pump: ResultPump
    ) -> None:
        order = InOrder(self.core, self.settings.hash_chunk)
        cap = max(MIN_IN_FLIGHT, 4 * plan.batch_size * (plan.actors + plan.decoders))
        send: list[bytes] = []
        key = 0
        exhausted = closed = pump_done = False
        it = iter(entries)
        while True:
            while not exhausted and order.out < cap and len(order.back) < HOLD_MAX:
                entry = next(it, None)
                if entry is None:
                    exhausted = True
                    break
                ref = order.send(entry, key)
                if ref is None:
                    continue
                send.append(_pack(ref))
                key += 1
                if len(send) >= plan.batch_size:
                    feed.push.remote(send)
                    send = []
            if send or (exhausted and not closed):
                feed.push.remote(send, exhausted)
                send = []
                closed = exhausted
            if exhausted and not order.out:
                break
            try:
                got = pump.out.get(timeout=STALL_S if len(order.back) >= HOLD_MAX else None)
            except queue.Empty:
                # the hold is full and the file it waits on has not come back: redo it here
                order.redo(min(k for k in order.sent if k not in order.back))
                order.decide_ready()
                continue
            if got is ResultPump.DONE:
                pump_done = True
                break
            self._take(got, order, ledger)
        if pump_done and pump.error is not None:
            raise RuntimeError(f"the Ray plan failed: {pump.error}") from pump.error
        if not pump_done:
            pump.join()
        order.finish()
        self.core.summary.redone += order.redone

    def _take(self, packed: np.ndarray, order: InOrder, ledger: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        done = []
        for b in packed:
            result, _decoded = pickle.loads(b)
            done.append(result.key)
            self.core.summary.nodes[result.node] += 1
            order.take(result)
        ledger.forget.remote(done)

