"""The triage pass on Ray: the same decisions as the local engine, spread over Ray's actors.

Data flow (see ``docs/ray-pass.md`` for the measurements behind it)::

    driver: walk + admit ──batch of refs──▶ Reader.hash ──hashes──▶ driver: Claims
        ──verdicts──▶ Reader.analyse
          fused: the readers run the models too, one actor per CPU
          split: readers decode ──frames──▶ InferWorker actors (GPU)
    ──results──▶ driver: in walk order, decide + write (the only reader and writer of the store)

- File references travel, not bytes: a file on disk travels as its path and is read once, where it
  is hashed and decoded. Archive members have no path, so they travel with their bytes (bounded by
  the walker's limits and by the batches in flight: two per reader).
- Exact duplicates and known-good files are not decoded: a reader hashes a batch and keeps its
  bytes; the driver's :class:`Claims` decides which files are the first of their SHA-256 in the
  case and not known-good; the reader decodes those.
- A file that kills its worker (a native crash in a decoder): Ray restarts the actor; the calls
  that were out on it fail back to the driver, which sends their files again one by one; a file
  that kills a worker again is analysed by the driver in a process of its own, where the crash
  becomes its error record.
- Anything sent and never returned (an actor lost with its node) is redone in the driver, each file
  in its own process, so every file is accounted for.
- Ray Core, not Ray Data: the plan is a stream of small batches from a walker whose results must be
  decided in walk order, with a claim between hashing and decoding; Ray Data's executor added a
  read task and three helper actors (about 770 MiB resident on a laptop) and seconds of start-up
  and CPU for no gain here.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from heroes.config import Settings
from heroes.pipeline.analyze import (
    Analysis,
    AnalyzeOptions,
    analyze_alone,
)
from heroes.pipeline.core import (
    Admitted,
    Identified,
    PassCore,
    identify_entry,
    needs_pixels,
    only_known_good,
)
from heroes.pipeline.discover import Entry, content_source
from heroes.pipeline.rayworkers import FileResult, InferWorker, Reader, Ref

#: how long the actors may take to start (process, imports, model loading) before the pass fails
ACTOR_START_S = 600
#: frames a model actor holding a GPU takes in one call (the detector chunks them by 64)
GPU_BATCH_FRAMES = 256
_UNIX_SOCKET_MAX = 107
#: the longest file name Ray puts under its temp dir (session_<date>_<pid>/sockets/plasma_store)
_RAY_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


# --------------------------------------------------------------------------------------------------
# the driver's claims


class Claims:
    """Which file of a SHA-256 is decoded (the first of this run to claim it) and which files are
    known-good, decided in the driver from the hashes a worker sends back, before anything is
    decoded. The case store is the driver's own (the pass core's): no second reader, no actor."""

    def __init__(self, core: PassCore) -> None:
        self.core = core
        self.store = core.store
        self.has_sets = bool(core.store.hashsets())
        self.claims: dict[bytes, int] = {}

    def verdict(self, ref: Ref, ident: Identified) -> tuple[str | None, int | None]:
        """(verdict, owner): ``decode``; ``duplicate`` (another file has this content: the key
        that claimed it in this run, or None for a file of the case); ``known_good``; or None
        when the file needs no pixels (nothing to decode, or unchanged since the last run)."""
        d = ident.digests
        if (
            d is None
            or not needs_pixels(ident, ref.entry_error, ref.is_archive)
            or (ref.old_sha is not None and ref.old_sha == d.sha256)
        ):
            return None, None
        if self.has_sets and only_known_good(self.core.hash_matches(d, ahead=True)):
            return "known_good", None
        owner = self.claims.setdefault(bytes.fromhex(d.sha256), ref.key)
        if owner != ref.key:
            return "duplicate", owner
        if self.core.case_had_items:
            first = self.store.first_with_sha256(d.sha256)
            if first is not None and first != ref.update_of:
                return "duplicate", None
        return "decode", None


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

    import ray  # noqa: F401  (configures the ray logger, which is adjusted below)

    for handler in logging.getLogger("ray").handlers:
        if not isinstance(handler, logging.FileHandler):
            # crash notices and retries are Ray's business: the pass accounts for every file
            handler.setLevel(logging.CRITICAL + 1)


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
    with _lean_head(), _ray_environ(tmp):
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


@contextmanager
def _ray_environ(tmp: Path) -> Iterator[None]:
    """The environment Ray's processes start with (they take the driver's, once, at the start):
    caches under the case's Ray folder, not the home folder. The driver's own environment is left
    as it was (the models' folder goes to the workers in their options: :func:`_models_here`)."""
    key = "XDG_CACHE_HOME"
    saved = os.environ.get(key)
    os.environ[key] = saved or str(tmp / "cache")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)


def _models_here(opts: AnalyzeOptions, settings: Settings) -> AnalyzeOptions:
    """``opts`` with the driver's model folder named in them, for workers on this machine: they
    load the models this machine already converted (the dlib face model's ONNX copy, its INT8
    variant) instead of converting them again in every actor of every case."""
    if opts.models is None or opts.models.model_dir:
        return opts
    from heroes.models import registry

    with registry.using_model_dir(settings.model_dir):
        folder = str(registry.model_dir())
    return replace(opts, models=replace(opts.models, model_dir=folder))


@contextmanager
def _lean_head() -> Iterator[None]:
    """An embedded Ray head without what a pass on one machine never uses, and without its idle
    waits. ``include_dashboard=False`` alone still starts the dashboard's HTTP head, the
    autoscaler's monitor (nothing scales), the log monitor (workers' output stays in their log
    files: ``log_to_driver`` is off) and the full dashboard agent (its HTTP server, metrics
    and event modules); this head starts none of them and runs the agent in Ray's own
    ``--minimal`` mode. Ray then polls for its raylet once a second; this head looks every
    20 ms. On 2 cores: about 290 MiB resident and 1-2 s of start-up less.

    ``ray.init`` has no switch for these, so the head node is built with them turned off (Ray's
    own ``RayParams.no_monitor``, ``include_log_monitor`` and its test for a Ray installed
    without the dashboard's dependencies); a Ray whose internals differ from the pinned
    version's starts the usual head."""
    try:
        from ray._private import node as ray_node
        from ray._private import services, state, utils
    except ImportError:
        yield
        return
    node_cls: Any = ray_node.Node
    params = ray_node.ray._private.parameter.RayParams()
    needed = [
        (node_cls, "start_api_server"),
        (utils, "get_dashboard_dependency_error"),
        (services, "get_node"),
        (services, "_get_gcs_client_options"),
        (state, "GlobalState"),
    ]
    if not all(hasattr(o, a) for o, a in needed) or not all(
        hasattr(params, f) for f in ("no_monitor", "include_log_monitor")
    ):
        yield
        return
    init, get_node = node_cls.__init__, services.get_node

    def lean_init(self: Any, ray_params: Any, *args: Any, head: bool = False, **kw: Any) -> None:
        if head:
            ray_params.no_monitor = True
            ray_params.include_log_monitor = False
        init(self, ray_params, *args, head=head, **kw)

    def no_api_server(self: Any, **_kw: Any) -> None:
        self._webui_url = None

    def minimal_agent() -> ImportError:
        return ImportError("the embedded head runs the minimal dashboard agent")

    def node_when_up(gcs_address: str, node_id: str) -> Any:
        # Ray's own lookup waits a whole second whenever the raylet has not registered yet
        look = state.GlobalState()
        try:
            look._initialize_global_state(services._get_gcs_client_options(gcs_address))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                n.get("NodeID") == node_id for n in look.node_table()
            ):
                time.sleep(0.02)
        except Exception:  # whatever went wrong here, Ray's own lookup below decides
            pass
        finally:
            look.disconnect()
        return get_node(gcs_address, node_id)

    patches = [
        (node_cls, "__init__", lean_init),
        (node_cls, "start_api_server", no_api_server),
        (utils, "get_dashboard_dependency_error", minimal_agent),
        (services, "get_node", node_when_up),
    ]
    saved = [(o, a, getattr(o, a)) for o, a, _new in patches]
    for o, a, new in patches:
        setattr(o, a, new)
    try:
        yield
    finally:
        for o, a, old in saved:
            setattr(o, a, old)


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


#: batches each reader has in flight: one being analysed, one being hashed or waiting, so no
#: actor idles while the driver decides what to decode and sends the next call
DEPTH = 2
#: times a batch is sent again after a restarted reader no longer held it, before its files
#: are treated as if their worker had died on them
MAX_LOST = 3


@dataclass(slots=True)
class Batch:
    """Files sent together. ``alone``: a single file sent again after a worker died while its
    batch was out; if a worker dies on it again, the driver analyses it in a process of its own
    (where a crash becomes its error record)."""

    bid: int
    refs: list[Ref]
    alone: bool = False
    lost: int = 0
    reader: int = -1


def _actor_id(handle: Any) -> str:
    return str(handle._actor_id.hex())


class Workers:
    """The running plan: its actors, and the batches in flight on each.

    Every batch makes two calls on one :class:`Reader`: ``hash``, then (once the driver has
    claimed its contents) ``analyse``. Fused (no GPU): the readers run the models too, one actor
    per CPU. Split (GPUs): the output of ``analyse`` goes straight (worker to worker, through the
    object store) to the least busy :class:`InferWorker` actor. The driver only ever holds hashes
    and results.

    Actors are restarted when they die (``max_restarts`` unlimited) but their calls are not
    retried: a call that fails hands its batch back to the driver, which sends its files again
    one by one; a reader that failed gets nothing more until it answers again."""

    def __init__(self, plan: RayPlan, opts: AnalyzeOptions, chunk: int) -> None:
        import ray

        self.plan = plan
        gpu = plan.gpus / plan.actors if plan.gpus else 0
        device = _gpu_device(opts) if plan.gpus else None
        reader = ray.remote(Reader)
        lasting = {"max_restarts": -1, "max_task_retries": 0}
        self.infers: list[Any] = []
        if plan.layout == "fused":
            # ORT with one thread per actor, one actor per CPU: every stage keeps every core busy
            # (asked for with GPUs: the actors share them)
            opts1 = _with_threads(opts, 1, device)
            self.readers = [
                reader.options(
                    num_cpus=1, num_gpus=gpu, scheduling_strategy="SPREAD", **lasting
                ).remote(opts1, chunk, True)
                for _ in range(plan.actors)
            ]
        else:
            decode_opts = AnalyzeOptions(**{**_opts_dict(opts), "models": opts.models})
            self.readers = [
                reader.options(num_cpus=1, scheduling_strategy="SPREAD", **lasting).remote(
                    decode_opts, chunk, False
                )
                for _ in range(plan.decoders)
            ]
            infer_opts = _with_threads(
                opts, max(1, plan.cpus // max(1, plan.actors + plan.decoders)), device
            )
            infer = ray.remote(InferWorker).options(num_cpus=1, num_gpus=gpu, **lasting)
            self.infers = [infer.remote(infer_opts) for _ in range(plan.actors)]
        self.reader_load = [0] * len(self.readers)
        self.infer_load = [0] * len(self.infers)
        #: readers and model actors that failed, until they answer again: index -> ready() ref
        self.down: dict[Any, tuple[str, int]] = {}
        self.gone: set[tuple[str, int]] = set()
        #: call in flight -> (phase, batch, model actor index or -1)
        self.pending: dict[Any, tuple[str, Batch, int]] = {}
        self.batches = 0

    def _all(self) -> list[tuple[str, int, Any]]:
        return [("reader", i, a) for i, a in enumerate(self.readers)] + [
            ("infer", i, a) for i, a in enumerate(self.infers)
        ]

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every actor has started (process, imports); a pool the cluster cannot
        place in time is a clear error, not a hang."""
        import ray

        ready = [a.ready.remote() for _k, _i, a in self._all()]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        if len(done) < len(ready):
            raise RuntimeError(
                f"only {len(done)} of {len(ready)} Ray actors started within "
                f"{timeout_s:.0f} s: the cluster cannot place them (CPUs, GPUs, memory)"
            )
        ray.get(done)  # an actor that failed to start raises here

    def _usable(self, kind: str) -> list[int]:
        n = len(self.readers if kind == "reader" else self.infers)
        down = set(self.down.values())
        return [i for i in range(n) if (kind, i) not in down and (kind, i) not in self.gone]

    @property
    def alive(self) -> bool:
        """Whether the plan can still make progress (some reader, and in the split plan some
        model actor, is up or may come back)."""
        readers = any(("reader", i) not in self.gone for i in range(len(self.readers)))
        infers = not self.infers or any(
            ("infer", i) not in self.gone for i in range(len(self.infers))
        )
        return readers and infers

    def room(self) -> bool:
        usable = len(self._usable("reader"))
        return usable > 0 and self.batches < DEPTH * (usable + len(self._usable("infer")))

    def submit(self, batch: Batch) -> None:
        usable = self._usable("reader")
        i = min(usable, key=self.reader_load.__getitem__)
        batch.reader = i
        self.reader_load[i] += 1
        self.batches += 1
        self.pending[self.readers[i].hash.remote(batch.bid, batch.refs)] = ("hash", batch, -1)

    def analyse(self, batch: Batch, verdicts: list[tuple[str | None, int | None]]) -> bool:
        """Send a hashed batch on; False when its reader failed meanwhile (the batch is out of
        the plan: the driver sends it again)."""
        if batch.reader not in self._usable("reader"):
            self.reader_load[batch.reader] -= 1
            self.batches -= 1
            return False
        fut = self.readers[batch.reader].analyse.remote(batch.bid, verdicts)
        j = -1
        if self.infers:
            usable = self._usable("infer") or list(range(len(self.infers)))
            j = min(usable, key=self.infer_load.__getitem__)
            self.infer_load[j] += 1
            fut = self.infers[j].run.remote(fut)
        self.pending[fut] = ("analyse", batch, j)
        return True

    def _failed(self, exc: Any, batch: Batch, j: int) -> None:
        """Hold back the actor that died until it answers again (Ray restarts it)."""
        who = getattr(exc, "actor_id", None)
        kind, i = ("reader", batch.reader)
        if j >= 0 and who is not None and who == _actor_id(self.infers[j]):
            kind, i = "infer", j
        if (kind, i) in self.down.values() or (kind, i) in self.gone:
            return
        actor = self.readers[i] if kind == "reader" else self.infers[i]
        self.down[actor.ready.options(max_task_retries=-1).remote()] = (kind, i)

    def next(self, timeout_s: float | None) -> tuple[str, Batch | None, Any] | None:
        """One event: ``("hashed", batch, idents)``, ``("done", batch, results)``, ``("lost",
        batch, None)`` (a restarted reader no longer held it), ``("failed", batch, None)`` (its
        worker died while it was out), ``("back", None, None)`` (a failed actor answers again);
        None when nothing happened in time."""
        import ray

        done, _ = ray.wait([*self.pending, *self.down], num_returns=1, timeout=timeout_s)
        if not done:
            return None
        fut = done[0]
        if fut in self.down:
            who = self.down.pop(fut)
            try:
                ray.get(fut)
            except ray.exceptions.RayActorError:
                self.gone.add(who)
            return ("back", None, None)
        phase, batch, j = self.pending.pop(fut)
        try:
            value = ray.get(fut)
        except ray.exceptions.RayActorError as exc:
            self._failed(exc, batch, j)
            value, phase = None, "failed"
        except ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"the Ray plan failed: {exc}") from exc
        if phase == "hash":
            return ("hashed", batch, value)
        self.reader_load[batch.reader] -= 1
        self.batches -= 1
        if j >= 0:
            self.infer_load[j] -= 1
        if phase == "failed":
            return ("failed", batch, None)
        if value is None:
            return ("lost", batch, None)
        return ("done", batch, [r for r, _d in value])


def _gpu_device(opts: AnalyzeOptions) -> str:
    """The device for actors that hold GPUs: as configured (cuda, tensorrt), cuda otherwise."""
    device = opts.models.device if opts.models else None
    return device if device not in (None, "cpu") else "cuda"


def _opts_dict(opts: AnalyzeOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__}


def _with_threads(opts: AnalyzeOptions, threads: int, device: str | None) -> AnalyzeOptions:
    """Options for model actors: their threads, and on a GPU its device and larger batches."""
    if opts.models is None:
        return opts
    models = replace(opts.models, threads=threads)
    if device is not None:
        models = replace(models, device=device)
        return replace(opts, models=models, batch_frames=GPU_BATCH_FRAMES)
    return replace(opts, models=models)


# --------------------------------------------------------------------------------------------------
# the driver's side


def stop_ray(started_here: bool) -> None:
    import ray

    if started_here and ray.is_initialized():
        ray.shutdown()


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
    """Hashing, decoding and models in Ray actors; claims, decisions and writes in the driver
    (the pass core)."""

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
        t0 = time.perf_counter()
        summary = self.core.summary
        started, tmp = start_ray(self.case_dir, self.settings)
        try:
            plan = plan_for(self.settings, tmp)
            summary.engine = "ray"
            summary.ray = asdict(plan)
            summary.ray["start_s"] = round(time.perf_counter() - t0, 2)
            # embedded: the workers share this machine's model folder
            opts = self.core.opts if tmp is None else _models_here(self.core.opts, self.settings)
            workers = Workers(plan, opts, self.settings.hash_chunk)
            workers.wait_ready(ACTOR_START_S)
            try:
                self._stream(entries, workers, Claims(self.core))
                end = time.perf_counter()
                if self._first is not None:
                    # from Ray's start to the first result (actors, models), then the rest
                    summary.ray["first_result_s"] = round(self._first - t0, 2)
                    summary.ray["after_first_s"] = round(end - self._first, 2)
            finally:
                self.core.flush(force=True)
        finally:
            stop_ray(started)

    def _stream(self, entries: Iterator[Entry], workers: Workers, claims: Claims) -> None:
        order = InOrder(self.core, self.settings.hash_chunk)
        size = workers.plan.batch_size
        again: deque[Batch] = deque()  # batches to send before new files
        refs: list[Ref] = []
        key = bid = 0
        exhausted = False
        it = iter(entries)

        def send(batch: Batch) -> None:
            """Submit a batch under a new id (a batch sent again keeps its counts)."""
            nonlocal bid
            batch.bid = bid
            workers.submit(batch)
            bid += 1

        while True:
            while again and workers.room():
                send(again.popleft())
            while not again and not exhausted and workers.room() and len(order.back) < HOLD_MAX:
                entry = next(it, None)
                if entry is None:
                    exhausted = True
                    break
                ref = order.send(entry, key)
                if ref is None:
                    continue
                refs.append(ref)
                key += 1
                if len(refs) >= size:
                    send(Batch(-1, refs))
                    refs = []
            if refs and workers.room() and (exhausted or not workers.pending):
                send(Batch(-1, refs))
                refs = []
            if not workers.pending and not workers.down:
                if not workers.alive:
                    raise RuntimeError("every Ray actor was lost: run the same command again")
                if exhausted and not refs and not again:
                    break
                if not again and not exhausted and len(order.back) >= HOLD_MAX:
                    order.redo(min(k for k in order.sent if k not in order.back))
                    order.decide_ready()
                continue
            if not workers.pending:  # only failed actors are out: wait for them to come back
                if workers.next(ACTOR_START_S) is None:
                    raise RuntimeError(
                        f"the Ray actors that died did not come back within {ACTOR_START_S} s"
                    )
                continue
            event = workers.next(STALL_S if len(order.back) >= HOLD_MAX else None)
            if event is None:
                # the hold is full and the file it waits on has not come back: redo it here
                order.redo(min(k for k in order.sent if k not in order.back))
                order.decide_ready()
                continue
            what, batch, value = event
            if batch is None:
                continue
            if what == "hashed":
                verdicts = [claims.verdict(r, i) for r, i in zip(batch.refs, value, strict=True)]
                if not workers.analyse(batch, verdicts):
                    again.append(batch)
            elif what == "done":
                self._take(value, order)
            elif what == "lost" and batch.lost < MAX_LOST:
                batch.lost += 1
                again.append(batch)
            elif batch.alone:
                # a worker died again while this file was out: analysed here, in a process of
                # its own (a file that kills it gets its error record)
                order.redo(batch.refs[0].key)
                order.decide_ready()
            else:
                # a worker died while this batch was out: its files go again one by one
                again.extend(Batch(-1, [r], alone=True) for r in batch.refs)
        order.finish()
        self.core.summary.redone += order.redone

    def _take(self, results: list[FileResult], order: InOrder) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        for result in results:
            self.core.summary.nodes[result.node] += 1
            order.take(result)
