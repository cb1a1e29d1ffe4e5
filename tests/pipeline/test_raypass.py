"""The Ray engine: same records as the local engine, crash isolation, kill -9 and resume, and a
simulated multi-node cluster."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from seizures import case_rows, first_rows, jpeg, seizure

from heroes.config import RaySettings, Settings
from heroes.pipeline.raypass import ray_temp_dir, reap_stale_ray
from heroes.pipeline.runner import choose_engine, triage
from heroes.store import CaseStore

ray = pytest.importorskip("ray")

HERE = Path(__file__).parent


def _seizure(root: Path, n: int) -> Path:
    return seizure(root, n, folders=5)


def _mixed(root: Path) -> Path:
    """Photos, exact copies (on disk and in a zip), a known-good file, an empty file, a text
    file named .jpg, and a truncated JPEG."""
    import zipfile

    _seizure(root, 12)
    shutil.copy(root / "d0/img_00000.jpg", root / "copy_a.jpg")
    shutil.copy(root / "d0/img_00000.jpg", root / "copy_b.jpg")
    (root / "good.jpg").write_bytes(jpeg(999))
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a picture")
    (root / "cut.jpg").write_bytes(jpeg(7, 128)[:300])
    with zipfile.ZipFile(root / "album.zip", "w") as z:
        z.writestr("inner/same.jpg", jpeg(1))
        z.writestr("inner/new.jpg", jpeg(500))
    return root


_rows = case_rows


def _complete_in_walk_order(case: Path, entries: list[Any]) -> None:
    """Every file of the walk has its record, analysed, with item ids in walk order."""
    rows = _rows(case)
    assert len(rows) == len(entries)
    assert all(r["status"] == "ok" and r["pdq"] for r in rows.values())
    ids = [rows[e.path]["item_id"] for e in entries]
    assert ids == sorted(ids), "item ids follow the walk"


def _ray_settings(**kw: Any) -> Settings:
    return Settings(engine="ray", models=False, ray=RaySettings(cpus=2, **kw))


def test_the_ray_engine_writes_the_same_records_as_the_local_engine(tmp_path: Path) -> None:
    ev = _mixed(tmp_path / "ev")
    good = tmp_path / "good.txt"
    import hashlib

    good.write_text(hashlib.md5((ev / "good.jpg").read_bytes()).hexdigest() + "\n")
    by_engine = {}
    for engine in ("local", "ray"):
        s = Settings(engine=engine, models=False, ray=RaySettings(cpus=2))
        summary = triage(ev, tmp_path / engine, settings=s, known_good=[good])
        assert summary.engine == engine
        by_engine[engine] = _rows(tmp_path / engine)
    local, on_ray = by_engine["local"], by_engine["ray"]
    assert len(on_ray) == 12 + 6 + 1 + 2  # photos, the other files, the zip, its members
    # the same records, ids included: ids follow the walk, and of a set of copies the first found
    # is the original whichever copy a Ray worker analysed
    assert on_ray == local
    assert on_ray["good.jpg"]["status"] == "known_good"
    # the walk takes a folder's files before its subfolders: copy_a.jpg is found first
    first = on_ray["copy_a.jpg"]
    assert first["status"] == "ok"
    for path in ("copy_b.jpg", "d0/img_00000.jpg"):
        assert on_ray[path]["duplicate_of"] == first["item_id"]
    member = on_ray["album.zip!/inner/same.jpg"]
    assert on_ray["d1/img_00001.jpg"]["duplicate_of"] == member["item_id"]
    assert on_ray["empty.jpg"]["status"] == "skipped"
    assert on_ray["cut.jpg"]["status"] == "error" and on_ray["notes.jpg"]["status"] == "error"


def _home_entries() -> set[str]:
    home = Path.home()
    out: set[str] = set()
    for sub in ("", ".cache", ".config", ".local", ".ray"):
        d = home / sub
        if d.is_dir():
            out |= {str(p) for p in d.iterdir()}
    return out


def test_ray_summary_names_the_plan_and_where_files_went(tmp_path: Path) -> None:
    ev = _seizure(tmp_path / "ev", 20)
    home_before = _home_entries()
    summary = triage(ev, tmp_path / "case", settings=_ray_settings(batch_size=4)).to_dict()
    assert _home_entries() == home_before, "an embedded Ray writes nothing to the home folder"
    r = summary["ray"]
    assert summary["engine"] == "ray" and summary["new"] == 20
    assert r["layout"] == "fused" and r["actors"] == 2 and r["batch_size"] == 4
    assert sum(r["files_per_node"].values()) == 20 and r["redone"] == 0
    # embedded Ray kept its session under the case (or a short folder named after it)
    tmp = ray_temp_dir(tmp_path / "case", Settings())
    assert r["temp_dir"] == str(tmp) and any(tmp.glob("session_*"))
    assert not ray.is_initialized(), "the embedded Ray is stopped after the pass"


def test_split_plan_runs_the_models_in_their_own_actors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heroes.demo import sample_photos

    # a user's machine: no model folder set, models in the user cache of the home folder
    monkeypatch.delenv("HEROES_MODEL_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    ev = tmp_path / "ev"
    ev.mkdir()
    photos = sample_photos()
    for name in ("astronaut", "coffee", "rocket"):
        Image.fromarray(photos[name]).save(ev / f"{name}.jpg", quality=90)
    s = Settings(engine="ray", scene_model="", ray=RaySettings(cpus=2, layout="split"))
    cache_before = os.environ.get("XDG_CACHE_HOME")
    summary = triage(ev, tmp_path / "case", settings=s).to_dict()
    assert summary["ray"]["layout"] == "split" and summary["frames"] == 3
    # the workers loaded the models of the driver's model folder: nothing was converted again
    # into the case's Ray folder, and the driver's own environment is as it was
    assert not list(Path(summary["ray"]["temp_dir"]).glob("cache/heroes/models/*"))
    assert list((tmp_path / "home/.cache/heroes/models").glob("*.onnx"))
    assert os.environ.get("XDG_CACHE_HOME") == cache_before
    rows = _rows(tmp_path / "case")
    faces = rows["astronaut.jpg"]["faces"]
    assert len(faces) == 1 and faces[0]["age"] >= 18
    assert all(r["nudity"] is not None for r in rows.values())


def test_a_file_that_kills_its_ray_worker_becomes_an_error_and_the_pass_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(HERE))
    from crash_hook import MARKER

    # Ray's workers inherit the driver's environment: let them import the hook
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    ev = _seizure(tmp_path / "ev", 15)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, "JPEG", comment=MARKER)
    (ev / "poison.jpg").write_bytes(buf.getvalue())
    (ev / "poison_copy.jpg").write_bytes(buf.getvalue())
    s = _ray_settings(batch_size=4).model_copy(update={"decode_hook": "crash_hook:crash_on_marker"})
    summary = triage(ev, tmp_path / "case", settings=s)
    rows = _rows(tmp_path / "case")
    assert summary.new == 17 and len(rows) == 17
    first, copy = rows["poison.jpg"], rows["poison_copy.jpg"]
    assert first["status"] == "error" and "decoder crashed" in first["error"]
    assert first["sha256"], "the hashes are kept"
    assert copy["status"] == "duplicate" and copy["duplicate_of"] == first["item_id"]
    others = [r for p, r in rows.items() if not p.startswith("poison")]
    assert all(r["status"] == "ok" and r["pdq"] for r in others)
    # Ray's own notices (its C++ core's log lines, the relayed crash reports) stay off the
    # examiner's terminal: they go to the case's Ray folder
    err = capfd.readouterr().err
    assert "core_worker" not in err and "(raylet)" not in err and "pid=" not in err, err[-2000:]
    native = ray_temp_dir(tmp_path / "case", s) / "heroes-ray-native.log"
    assert native.is_file()


def _ray_processes(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_kill_9_of_a_ray_run_then_the_same_command_completes_it(tmp_path: Path) -> None:
    n = 1500
    ev = _seizure(tmp_path / "ev", n)
    case = tmp_path / "case"
    cmd = [
        sys.executable,
        "-m",
        "heroes.cli",
        "triage",
        str(ev),
        "--case",
        str(case),
        "--json",
        "--engine",
        "ray",
        "--cpus",
        "2",
        "--no-models",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = case / "case.db"
    done = first_rows(proc, db, timeout=180)
    proc.send_signal(signal.SIGKILL)  # the driver only: Ray's processes are left behind
    proc.wait()
    assert 0 < done < n, f"the run was not interrupted part-way ({done} of {n})"
    tmp = str(ray_temp_dir(case, Settings()))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = _rows(case)
    assert len(rows) == n
    assert all(r["status"] == "ok" and r["pdq"] for r in rows.values())
    import json

    summary = json.loads(again.stdout)
    assert summary["new"] + summary["already_done"] == n
    # the processes the killed run left were stopped by the second run, which stopped its own
    for _ in range(50):
        if not _ray_processes(tmp):
            break
        time.sleep(0.2)
    assert reap_stale_ray(Path(tmp)) == 0


@pytest.mark.slow
def test_a_simulated_three_node_cluster_shares_the_work_and_loses_nothing(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    ev = _seizure(tmp_path / "ev", 120)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 150 * 1024 * 1024,
            "include_dashboard": False,
        },
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=150 * 1024 * 1024)
        cluster.wait_for_nodes()
        s = Settings(
            engine="auto", models=False, ray=RaySettings(address=cluster.address, batch_size=4)
        )
        assert choose_engine(s, ev) == "ray"
        summary = triage(ev, tmp_path / "case", settings=s).to_dict()
    finally:
        ray.shutdown()
        cluster.shutdown()
    per_node = summary["ray"]["files_per_node"]
    assert summary["ray"]["nodes"] == 3 and summary["ray"]["actors"] == 3
    assert len(per_node) == 3, per_node
    assert all(v > 0 for v in per_node.values()) and sum(per_node.values()) == 120
    rows = _rows(tmp_path / "case")
    assert len(rows) == 120 and all(r["status"] == "ok" for r in rows.values())


def test_auto_engine_uses_ray_only_for_large_seizures(tmp_path: Path) -> None:
    ev = _seizure(tmp_path / "ev", 6)
    small = Settings(engine="auto", ray=RaySettings(min_files=10))
    assert choose_engine(small, ev) == "local"
    assert choose_engine(Settings(engine="auto", ray=RaySettings(min_files=6)), ev) == "ray"
    assert choose_engine(Settings(engine="ray", ray=RaySettings(min_files=10)), ev) == "ray"
    assert choose_engine(Settings(engine="local", ray=RaySettings(min_files=0)), ev) == "local"


def test_ray_temp_dir_is_in_the_case_unless_its_sockets_would_not_fit(tmp_path: Path) -> None:
    assert ray_temp_dir(Path("/cases/c1"), Settings()) == Path("/cases/c1/.ray")
    deep = Path("/cases/" + "x" * 80)
    short = ray_temp_dir(deep, Settings())
    assert not str(short).startswith(str(deep)) and len(str(short)) < 60
    assert ray_temp_dir(deep, Settings(ray=RaySettings(temp_dir=tmp_path))) == tmp_path


def test_more_actors_than_the_cluster_can_place_is_a_clear_error(tmp_path: Path) -> None:
    ev = _seizure(tmp_path / "ev", 3)
    with pytest.raises(RuntimeError, match="needs 5 CPUs"):
        triage(ev, tmp_path / "case", settings=_ray_settings(actors=5))
    assert not ray.is_initialized()
    store = CaseStore(tmp_path / "case", create=False)
    try:
        from sqlalchemy import select

        from heroes.store.schema import RunRow

        with store.session() as s:
            assert [r.status for r in s.execute(select(RunRow)).scalars()] == ["failed"]
    finally:
        store.close()


@pytest.mark.parametrize("first_back", ["analysed copy", "first copy"])
def test_the_first_copy_in_walk_order_is_the_original_whichever_copy_a_worker_analysed(
    tmp_path: Path, first_back: str
) -> None:
    """The Ray driver hands results to the pass core in walk order: when a worker claimed and
    analysed the second copy, the first copy still becomes the original with that analysis, and
    the second its duplicate, whichever comes back first; nothing is rewritten afterwards."""
    from heroes.config import get_settings
    from heroes.demo import sample_photos
    from heroes.pipeline.analyze import analyze_media
    from heroes.pipeline.core import PassCore, identify_source
    from heroes.pipeline.discover import walk
    from heroes.pipeline.identify import MEDIA_IMAGE
    from heroes.pipeline.infer import InferOptions
    from heroes.pipeline.raypass import InOrder
    from heroes.pipeline.rayworkers import FileResult
    from heroes.pipeline.summary import Progress, TriageSummary

    ev = tmp_path / "ev"
    ev.mkdir()
    Image.fromarray(sample_photos()["astronaut"]).save(ev / "a.jpg", quality=90)
    shutil.copy(ev / "a.jpg", ev / "b.jpg")
    settings = get_settings()
    store = CaseStore(tmp_path / "case")
    try:
        run = store.start_run(str(ev), {})
        models = InferOptions(scene_embed=None)
        core = PassCore(
            store,
            ev,
            settings,
            run,
            TriageSummary(run, str(ev), "case"),
            Progress(False, 0),
            False,
            models,
        )
        order = InOrder(core, 1 << 20)
        entries = sorted(walk(ev, settings.limits), key=lambda e: e.path)
        refs = [order.send(e, k) for k, e in enumerate(entries)]
        idents = [identify_source(None, r.fs_path, False, 1 << 20) for r in refs if r]
        analysis = analyze_media(MEDIA_IMAGE, idents[1].data, None, core.opts)
        first = FileResult(0, idents[0].without_data(), "duplicate", 1, None, "n")
        second = FileResult(1, idents[1].without_data(), "decode", None, analysis, "n")
        if first_back == "first copy":
            order.take(first)
            assert order.next_key == 0, "the first copy waits for the analysis of the second"
            order.take(second)
        else:
            order.take(second)
            assert order.next_key == 0, "nothing is decided before the first file is back"
            order.take(first)
        assert order.next_key == 2 and not order.sent and not order.analysed
        order.finish()
        core.flush(force=True)
    finally:
        store.close()
    rows = _rows(tmp_path / "case")
    a, b = rows["a.jpg"], rows["b.jpg"]
    assert (
        a["status"] == "ok"
        and len(a["faces"]) == 1
        and a["faces"][0]["face_id"] == f"{a['item_id']}-0"
    )
    assert b["status"] == "duplicate" and b["duplicate_of"] == a["item_id"]
    store = CaseStore(tmp_path / "case", create=False)
    try:
        from sqlalchemy import select

        from heroes.store.schema import VectorRow

        with store.session() as ses:
            vectors = ses.execute(select(VectorRow.item_id, VectorRow.ref)).all()
    finally:
        store.close()
    assert {i for i, _ in vectors} == {a["item_id"]} and f"{a['item_id']}-0" in {
        r for _, r in vectors
    }


def test_files_the_plan_never_returned_are_redone_in_the_driver_in_walk_order(
    tmp_path: Path,
) -> None:
    """A batch lost with its node: the files never come back. What did come back waits for them
    (decisions stay in walk order); at the end the driver reads and analyses them itself."""
    from heroes.config import get_settings
    from heroes.pipeline.analyze import analyze_media
    from heroes.pipeline.core import PassCore, identify_source
    from heroes.pipeline.discover import walk
    from heroes.pipeline.identify import MEDIA_IMAGE
    from heroes.pipeline.raypass import InOrder
    from heroes.pipeline.rayworkers import FileResult
    from heroes.pipeline.summary import Progress, TriageSummary

    ev = _seizure(tmp_path / "ev", 4)
    settings = get_settings().model_copy(update={"models": False})
    store = CaseStore(tmp_path / "case")
    try:
        run = store.start_run(str(ev), {})
        summary = TriageSummary(run, str(ev), "case")
        core = PassCore(store, ev, settings, run, summary, Progress(False, 0), False, None)
        order = InOrder(core, 1 << 20)
        entries = sorted(walk(ev, settings.limits), key=lambda e: e.path)
        refs = [order.send(e, k) for k, e in enumerate(entries)]
        assert all(refs) and len(refs) == 4
        for ref in refs[1:]:  # key 0 is lost
            assert ref is not None
            ident = identify_source(None, ref.fs_path, False, 1 << 20)
            analysis = analyze_media(MEDIA_IMAGE, ident.data, None, core.opts)
            order.take(FileResult(ref.key, ident.without_data(), "decode", None, analysis))
        assert order.next_key == 0 and len(order.back) == 3 and order.out == 1
        order.finish()
        core.flush(force=True)
        assert order.redone == 1 and not order.sent
    finally:
        store.close()
    _complete_in_walk_order(tmp_path / "case", entries)


class _Actors:
    """The plan's actors in this process, for the driver's logic: every call runs at once, and a
    script says which calls fail as if their worker had died, or find their reader restarted."""

    def __init__(self, opts: Any, die_on: set[int], restart_before: set[int]) -> None:
        from types import SimpleNamespace

        from heroes.pipeline import rayworkers

        self.reader = rayworkers.Reader(opts, 1 << 20, True)
        self.plan = SimpleNamespace(batch_size=4)
        self.events: list[Any] = []
        self.down: dict[Any, Any] = {}
        self.alive = True
        self.die_on = die_on  # keys whose analyse kills the worker (every time)
        self.restart_before = restart_before  # keys whose batch finds its reader restarted, once
        self.calls: list[tuple[str, list[int], bool]] = []

    @property
    def pending(self) -> list[Any]:
        return self.events

    def room(self) -> bool:
        return len(self.events) < 4

    def submit(self, batch: Any) -> None:
        keys = [r.key for r in batch.refs]
        self.calls.append(("hash", keys, batch.alone))
        self.events.append(("hashed", batch, self.reader.hash(batch.bid, batch.refs)))

    def analyse(self, batch: Any, verdicts: list[Any]) -> bool:
        keys = {r.key for r in batch.refs}
        self.calls.append(("analyse", sorted(keys), batch.alone))
        if keys & self.restart_before:
            self.restart_before -= keys
            self.reader.held.clear()  # a new process: nothing held
        out = self.reader.analyse(batch.bid, verdicts)
        if keys & self.die_on:
            self.events.append(("failed", batch, None))
        elif out is None:
            self.events.append(("lost", batch, None))
        else:
            self.events.append(("done", batch, [r for r, _d in out]))
        return True

    def next(self, _timeout: float | None) -> Any:
        return self.events.pop(0) if self.events else None


@pytest.mark.parametrize("script", ["worker dies", "reader restarted"])
def test_the_driver_sends_a_dead_workers_files_again_one_by_one_and_analyses_a_killer_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """A batch whose worker died goes again file by file; a file out alone when a worker dies
    again is analysed by the driver in a process of its own; a batch whose reader was restarted
    between its two calls is sent again whole. Every file ends with its record, in walk order."""
    from heroes.pipeline import raypass, rayworkers
    from heroes.pipeline.core import PassCore
    from heroes.pipeline.summary import Progress, TriageSummary

    monkeypatch.setattr(rayworkers, "_node", lambda: "here")
    ev = _seizure(tmp_path / "ev", 10)
    settings = Settings(engine="ray", models=False)
    store = CaseStore(tmp_path / "case")
    try:
        run = store.start_run(str(ev), {})
        summary = TriageSummary(run, str(ev), "case")
        core = PassCore(store, ev, settings, run, summary, Progress(False, 0), False, None)
        from heroes.pipeline.discover import walk

        entries = sorted(walk(ev, settings.limits), key=lambda e: e.path)
        die_on = {5} if script == "worker dies" else set()
        restart = {2} if script == "reader restarted" else set()
        actors = _Actors(core.opts, die_on, restart)
        engine = raypass.RayEngine(core, settings, tmp_path / "case")
        engine._stream(iter(entries), actors, raypass.Claims(core))  # type: ignore[arg-type]
        core.flush(force=True)
    finally:
        store.close()
    _complete_in_walk_order(tmp_path / "case", entries)
    hashed = [(keys, alone) for what, keys, alone in actors.calls if what == "hash"]
    if script == "worker dies":
        # the batch of keys 4-7 died: its four files went again alone; key 5 killed again and
        # was analysed by the driver (here it does not crash a process of its own)
        assert ([4, 5, 6, 7], False) in hashed
        assert [k for k, alone in hashed if alone] == [[4], [5], [6], [7]]
        assert summary.redone == 1
    else:
        # the batch of keys 0-3 lost its reader between its calls and went again whole
        assert hashed.count(([0, 1, 2, 3], False)) == 2 and summary.redone == 0


def _descendants() -> list[list[bytes]]:
    """The command lines of this process's children, their children, and so on."""
    procs: dict[int, tuple[int, list[bytes]]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes()
        except OSError:
            continue
        procs[int(d.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd.split(b"\0"))
    mine, found = {os.getpid()}, []
    while True:
        more = [p for p, (parent, _c) in procs.items() if parent in mine and p not in mine]
        if not more:
            return found
        mine.update(more)
        found += [procs[p][1] for p in more]


def test_the_embedded_head_starts_without_monitors_or_dashboard_and_leaves_ray_as_it_was(
    tmp_path: Path,
) -> None:
    """The embedded head has no autoscaler monitor, log monitor or dashboard head (Python
    processes of their own beside Ray's titled ``ray::`` ones), runs the dashboard agent in Ray's
    ``--minimal`` mode, and answers tasks; Ray's functions that were switched for the start are
    Ray's own again afterwards."""
    from ray._private import node as ray_node
    from ray._private import services, utils

    from heroes.pipeline.raypass import start_ray, stop_ray

    before = (ray_node.Node.__init__, services.get_node, utils.get_dashboard_dependency_error)
    started, tmp = start_ray(tmp_path / "case", Settings(engine="ray"))
    try:
        assert started and tmp is not None
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        # Ray's processes among this one's descendants (earlier tests may have left a process
        # pool's helpers); a process still starting shows its command line, not yet its title
        names = []
        for c in _descendants():
            script = next((a for a in c[1:] if a.endswith(b".py")), b"")
            if b"/ray/" in script:
                names.append(Path(script.decode()).name)
            elif c[0].startswith(b"ray::") or c[0].endswith((b"/gcs_server", b"/raylet")):
                names.append(Path(c[0].decode()).name)
        names.sort()
        # GCS, raylet, the two agents the raylet starts, and its workers; nothing else
        assert names.count("gcs_server") == 1 and names.count("raylet") == 1, names
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= set(names), names
        workers = ("ray::", "default_worker.py", "setup_worker.py")
        assert all(n in ("gcs_server", "raylet") or n.startswith(workers) for n in names), names
        raylet = next(c for c in _descendants() if c[0].endswith(b"/raylet"))
        agent = next(a for a in raylet if a.startswith(b"--dashboard_agent_command="))
        assert b"--minimal" in agent
    finally:
        stop_ray(started)
    assert before == (
        ray_node.Node.__init__,
        services.get_node,
        utils.get_dashboard_dependency_error,
    )


def test_a_hash_set_look_up_made_ahead_of_the_decision_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's claims ask the hash sets before a file is decided (known-good files are not
    decoded); the core's decision takes that answer instead of asking the store again."""
    from heroes.pipeline import core as pass_core
    from heroes.pipeline.identify import hash_bytes
    from heroes.pipeline.summary import Progress, TriageSummary

    good = tmp_path / "good.txt"
    data = jpeg(5)
    d = hash_bytes(data)
    good.write_text(d.md5 + "\n")
    store = CaseStore(tmp_path / "case")
    try:
        from heroes.pipeline.runner import import_hashsets

        import_hashsets(store, [good], known_good=True)
        run = store.start_run(str(tmp_path), {})
        core = pass_core.PassCore(
            store,
            tmp_path,
            Settings(models=False),
            run,
            TriageSummary(run, "e", "c"),
            Progress(False, 0),
            False,
            None,
        )
        asked: list[str] = []
        real = pass_core.exact_matches
        monkeypatch.setattr(pass_core, "exact_matches", lambda *a: asked.append(a[3]) or real(*a))
        ahead = core.hash_matches(d, ahead=True)
        assert pass_core.only_known_good(ahead)
        assert core.hash_matches(d, ahead=True) is ahead  # a copy's claim: no second look-up
        assert core.hash_matches(d) is ahead  # the decision takes it, and it is let go
        assert asked == [d.sha256]
        assert pass_core.only_known_good(core.hash_matches(d))  # asked again: not kept
        assert asked == [d.sha256, d.sha256]
    finally:
        store.close()
