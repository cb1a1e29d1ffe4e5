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
from heroes.pipeline.analyze import AnalyzeOptions, _models, decode_media, infer_decoded
from heroes.pipeline.discover import Entry, content_source
from heroes.pipeline.identify import MEDIA_IMAGE, MEDIA_VIDEO, StreamSource
from heroes.pipeline.runner import _Identified, _isolated, _Pass, identify_source

#: how long the actors may take to start (process, imports, model loading) before the pass fails
ACTOR_START_S = 600
#: Ray Data block size for the whole plan (see build_dataset)
BLOCK_BYTES = 8 * 1024
#: files in flight at least: their refs must fill more than one block (a ref is >= 40 bytes)
MIN_IN_FLIGHT = 512
CRASHED = "decoder crashed: the worker process died on this file"
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


class Ledger:
    """Which file of a SHA-256 is decoded (the first to claim it), which files are known-good,
    and which batches and files were being worked on when a worker died."""

    def __init__(self, case_dir: str, db_url: str | None) -> None:
        from heroes.store.db import CaseStore

        self.store = CaseStore(Path(case_dir), db_url, create=False)
        self.has_sets = bool(self.store.hashsets())
        self.had_items = self.store.count_items() > 0
        self.claims: dict[bytes, int] = {}
        self.batch_attempts: Counter[int] = Counter()
        self.open_alone: set[int] = set()

    def claim(self, rows: list[tuple[int, str, str, str, int | None]]) -> list[tuple[str, int]]:
        """For each (key, md5, sha1, sha256, update_of): (verdict, earlier attempts) where the
        verdict is ``decode``, ``duplicate`` (another file of the case has this content) or
        ``known_good``; attempts counts how often this file's batch was started before."""
        out = []
        for key, md5, sha1, sha256, update_of in rows:
            if self.has_sets:
                matches = self.store.match_exact(md5, sha1, sha256)
                if matches and all(m[0].known_good for m in matches):
                    out.append(("known_good", 0))
                    continue
            digest = bytes.fromhex(sha256)
            owner = self.claims.setdefault(digest, key)
            if owner != key:
                out.append(("duplicate", 0))
                continue
            if self.had_items:
                first = self.store.first_with_sha256(sha256)
                if first is not None and first != update_of:
                    out.append(("duplicate", 0))
                    continue
            out.append(("decode", self.batch_attempts[key]))
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


def _prepare(refs: list[Ref], ledger: Any, chunk: int) -> list[dict[str, Any]]:
    """Hash and sniff each file, then ask the ledger which ones to decode."""
    import ray

    outs: list[dict[str, Any]] = []
    ask: list[tuple[int, str, str, str, int | None]] = []
    for ref in refs:
        ident = identify_source(ref.data, ref.fs_path, ref.is_archive, chunk)
        out: dict[str, Any] = {
            "key": ref.key,
            "digests": ident.digests,
            "media_type": ident.media_type,
            "mime": ident.mime,
            "error": ident.error,
            "verdict": None,
            "fields": None,
            "_data": ident.data,
            "_ref": ref,
        }
        d = ident.digests
        if (
            d is not None
            and ref.entry_error is None
            and d.size > 0
            and ident.media_type in (MEDIA_IMAGE, MEDIA_VIDEO)
            and not (ref.old_sha is not None and ref.old_sha == d.sha256)
        ):
            ask.append((ref.key, d.md5, d.sha1, d.sha256, ref.update_of))
            out["verdict"] = "ask"
        outs.append(out)
    answers = iter(ray.get(ledger.claim.remote(ask)) if ask else [])
    for out in outs:
        if out["verdict"] == "ask":
            out["verdict"], out["_attempts"] = next(answers)
    return outs


def _decode_all(
    outs: list[dict[str, Any]], ledger: Any, opts: AnalyzeOptions, *, infer: bool
) -> None:
    """Decode (and with ``infer``, run the models on) every file the ledger gave this worker.

    After a worker died on this batch, files are decoded one at a time, each announced to the
    ledger first: the one that was being decoded alone when a worker died is not tried again."""
    import ray

    todo = [o for o in outs if o["verdict"] == "decode"]
    alone = any(o.get("_attempts", 0) > 0 for o in todo)
    finished: int | None = None
    for o in todo:
        ref: Ref = o["_ref"]
        if alone:
            died_on_it = ray.get(ledger.alone.remote(ref.key, finished))
            finished = ref.key
            if died_on_it:
                o["fields"] = {"status": "error", "error": CRASHED}
                continue
        dec = decode_media(o["media_type"], o["_data"], ref.fs_path, opts)
        if infer:
            o["fields"] = infer_decoded(dec, opts)
        else:
            o["fields"] = dec.fields
            o["_decoded"] = dec
    if alone and finished is not None:
        ray.get(ledger.alone.remote(-1, finished))


def _emit(outs: list[dict[str, Any]], node: str, keep_pixels: bool = False) -> dict[str, Any]:
    rows = []
    for o in outs:
        dec = o.pop("_decoded", None)
        for k in ("_data", "_ref", "_attempts"):
            o.pop(k, None)
        o["node"] = node
        if keep_pixels and dec is not None and dec.frames:
            o["_decoded"] = dec
        rows.append(_pack(o))
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
        refs = [pickle.loads(b) for b in batch["ref"]]
        outs = _prepare(refs, self.ledger, self.chunk)
        _decode_all(outs, self.ledger, self.opts, infer=True)
        return _emit(outs, self.node)


def decode_batch(
    batch: dict[str, np.ndarray], opts: AnalyzeOptions, ledger: Any, chunk: int
) -> dict[str, Any]:
    """The split layout's CPU stage: hash + decode; frames go on to the model actors."""
    refs = [pickle.loads(b) for b in batch["ref"]]
    outs = _prepare(refs, ledger, chunk)
    _decode_all(outs, ledger, opts, infer=False)
    return _emit(outs, _node(), keep_pixels=True)


class InferWorker:
    """The split layout's model stage: one actor per GPU (or as asked), sessions loaded once."""

    def __init__(self, opts: AnalyzeOptions) -> None:
        self.opts = opts
        self.node = _node()
        _models(opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = []
        for b in batch["out"]:
            o = pickle.loads(b)
            dec = o.pop("_decoded", None)
            if dec is not None:
                o["fields"] = infer_decoded(dec, self.opts)
                o["infer_node"] = self.node
            rows.append(_pack(o))
        return {"out": np.array(rows, dtype=object)}


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
                handler.setLevel(logging.ERROR)
    # the feed is one streaming read task, so Ray Data estimates one input block; it is not
    warnings.filterwarnings("ignore", message=".*operator only received.*")


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
    from dataclasses import replace

    if opts.models is None:
        return opts
    models = replace(opts.models, threads=threads)
    if device is not None:
        models = replace(models, device=device)
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


class RayPass(_Pass):
    """The local engine's decisions and writes, with hashing, decoding and models in Ray."""

    case_dir: Path
    _preset_id: int | None = None

    def _assign_id(self, row: dict[str, Any], update_of: int | None) -> None:
        """The id given when the file was sent (walk order), not at decision time."""
        if self._preset_id is None:
            super()._assign_id(row, update_of)
            return
        row["id"] = self._preset_id
        if row.get("sha256") and row["status"] not in ("duplicate", "skipped", "error"):
            self.seen_sha.setdefault(row["sha256"], row["id"])

    def run(self, entries: Iterator[Entry]) -> None:
        import ray

        t0 = time.perf_counter()
        started, tmp = start_ray(self.case_dir, self.settings)
        self._first: float | None = None
        try:
            plan = plan_for(self.settings, tmp)
            self.summary.engine = "ray"
            self.summary.ray = asdict(plan)
            self.summary.ray["start_s"] = round(time.perf_counter() - t0, 2)
            where = _here()
            feed = ray.remote(Feed).options(num_cpus=0, scheduling_strategy=where).remote()
            ledger = (
                ray.remote(Ledger)
                .options(num_cpus=0, scheduling_strategy=where)
                .remote(str(self.case_dir), self.store.url)
            )
            ds = build_dataset(plan, feed, ledger, self.opts, self.settings.hash_chunk)
            pump = ResultPump(ds)
            pump.start()
            try:
                self._stream(entries, plan, feed, ledger, pump)
                end = time.perf_counter()
                if self._first is not None:
                    # from Ray's start to the first result (actors, models), then the rest
                    self.summary.ray["first_result_s"] = round(self._first - t0, 2)
                    self.summary.ray["after_first_s"] = round(end - self._first, 2)
            finally:
                self.flush(force=True)
        finally:
            stop_ray(started)

    def _stream(
        self, entries: Iterator[Entry], plan: RayPlan, feed: Any, ledger: Any, pump: ResultPump
    ) -> None:
        #: key -> (entry, id to update, earlier sha256, item id) of every file sent, not back yet
        self.outstanding: dict[int, tuple[Entry, int | None, str | None, int]] = {}
        #: copies whose original is still in flight, by sha256
        self.parked: dict[str, list[tuple[Entry, _Identified, int | None, str | None, int]]] = {}
        cap = max(MIN_IN_FLIGHT, 4 * plan.batch_size * (plan.actors + plan.decoders))
        send: list[bytes] = []
        key = 0
        exhausted = closed = pump_done = False
        it = iter(entries)
        while True:
            while not exhausted and len(self.outstanding) < cap:
                entry = next(it, None)
                if entry is None:
                    exhausted = True
                    break
                ref = self._send(entry, key)
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
            if exhausted and not self.outstanding:
                break
            got = pump.out.get()
            if got is ResultPump.DONE:
                pump_done = True
                break
            self._take(got, ledger)
        if pump_done and pump.error is not None:
            raise RuntimeError(f"the Ray plan failed: {pump.error}") from pump.error
        if not pump_done:
            pump.join()
        self._redo_lost()

    def _send(self, entry: Entry, key: int) -> Ref | None:
        """The Ref of a file to read, or None when :meth:`admit` settled it."""
        admitted = self.admit(entry)
        if admitted is None:
            return None
        upd, old_sha = admitted
        # item ids follow the walk, as in the local engine, whatever order results come back in
        if upd is None:
            item_id = self.next_id
            self.next_id += 1
        else:
            item_id = upd
        self.outstanding[key] = (entry, upd, old_sha, item_id)
        fs = content_source(entry) if entry.data is None else None
        return Ref(
            key, entry.path, fs, entry.data, bool(entry.archive_kind), entry.error, upd, old_sha
        )

    def _take(self, packed: np.ndarray, ledger: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        done = []
        for b in packed:
            o = pickle.loads(b)
            done.append(o["key"])
            entry, upd, old_sha, item_id = self.outstanding.pop(o["key"])
            self.summary.nodes[o["node"]] += 1
            ident = _Identified(o["digests"], o["media_type"], o["mime"], None, o["error"])
            sha = ident.digests.sha256 if ident.digests else None
            if o["verdict"] == "duplicate" and sha and self._original_of(sha) is None:
                # its original (the file that claimed this content) has not come back yet
                self.parked.setdefault(sha, []).append((entry, ident, upd, old_sha, item_id))
                continue
            self._settle(entry, ident, upd, old_sha, item_id, o["fields"])
            if sha and sha in self.parked and sha in self.seen_sha:
                for args in self.parked.pop(sha):
                    self._settle(*args, None)
        ledger.forget.remote(done)

    def _settle(
        self,
        entry: Entry,
        ident: _Identified,
        upd: int | None,
        old_sha: str | None,
        item_id: int,
        fields: dict[str, Any] | None,
    ) -> None:
        self._preset_id = item_id
        try:
            row = self.decide(entry, ident, upd, old_sha)
        finally:
            self._preset_id = None
        self.progress.advance((entry.size or 0) if entry.depth == 0 else 0)
        if row is None:
            return
        if "_decode" not in row:
            self._emit(row, new=upd is None)
            return
        row.pop("_decode")
        if fields is None:
            # the plan did not decode what the driver wants decoded (its original was lost):
            # decode it here, in a process of its own
            fs = content_source(entry) if entry.data is None else None
            fields = _isolated(_forkserver(), (row["media_type"], entry.data, fs, self.opts))
        self._finish_decode(row, dict(fields), upd is None)

    def _redo_lost(self) -> None:
        """Files sent and never returned (a node lost with its batches), and copies whose
        original never came back: done here, each in a process of its own."""
        for key in sorted(self.outstanding):
            entry, upd, old_sha, item_id = self.outstanding.pop(key)
            fs = content_source(entry) if entry.data is None else None
            ident = identify_source(
                entry.data, fs, bool(entry.archive_kind), self.settings.hash_chunk
            )
            self.summary.redone += 1
            self._settle(entry, ident, upd, old_sha, item_id, None)
        for sha in list(self.parked):
            for args in self.parked.pop(sha):
                self._settle(*args, None)


def _forkserver() -> Any:
    from multiprocessing import get_context

    return get_context("forkserver")
