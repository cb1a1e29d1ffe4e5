"""Generated hostile archives (nested zip/tar/gz, repeated, empty, control-character and invalid
UTF-8 names): every member gets exactly one record, paths are unique, nothing is written outside
the case, the walk finishes, memory does not grow with the number of members.

Bounded and seeded: hypothesis runs derandomized with a fixed number of examples; the fuzz target
(benchmarks/fuzz_walk.py) runs for a few seconds.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seizures import jpeg

from heroes.config import Settings
from heroes.pipeline.discover import walk
from heroes.pipeline.report import records
from heroes.pipeline.runner import triage
from heroes.store import CaseStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fuzz_walk import LIMITS, ODD_NAMES, Node, build, check  # noqa: E402
from fuzz_walk import run as fuzz  # noqa: E402

MiB = 1024 * 1024

names = st.one_of(
    st.sampled_from(ODD_NAMES),
    st.text(max_size=10),
    st.binary(max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
# a leading "L" keeps a leaf from starting with an archive's magic bytes
leaves = st.binary(max_size=120).map(lambda b: b"L" + b)


def _nodes(children: st.SearchStrategy[bytes | Node]) -> st.SearchStrategy[Node]:
    return st.builds(
        Node,
        kind=st.sampled_from(("zip", "tar", "tgz", "gz")),
        members=st.lists(st.tuples(names, children), max_size=5),
    )


trees = _nodes(st.recursive(leaves, _nodes, max_leaves=12))


def _bytes(node: Node) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the repeated names we want
        return build(node)


def expected_records(member: bytes | Node, depth: int = 0) -> int:
    """Records the walk must give for ``member`` found at ``depth``: one for it, and when it is an
    archive opened within the depth limit, the records of its members."""
    if not isinstance(member, Node):
        return 1
    if member.kind == "tar" and not member.members:
        return 1  # an empty tar is zeros, not an archive
    if depth >= LIMITS.max_depth:
        return 1
    if member.kind == "tgz" and not member.members:
        return 2  # a gzip'd run of zeros: one member
    if member.kind == "gz":
        inner = member.members[0][1] if member.members else b"L"
        if isinstance(inner, Node) and inner.kind == "tar" and inner.members:
            # a gzip'd tar is walked as a tar: its members come straight out of the gz
            return 1 + sum(expected_records(m, depth + 1) for _, m in inner.members)
        return 1 + expected_records(inner, depth + 1)
    return 1 + sum(expected_records(m, depth + 1) for _, m in member.members)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(trees)
def test_every_member_of_a_generated_archive_gets_exactly_one_record(tree: Node) -> None:
    data = _bytes(tree)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seized.bin"
        path.write_bytes(data)
        seen = check(path, data)  # unique paths, members listed, nothing written
        entries = list(walk(path, LIMITS))
    assert seen == len(entries) == expected_records(tree)
    for e in entries:
        assert (e.data is None) or e.error is None or e.archive_kind is not None


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(trees, min_size=1, max_size=2), st.lists(names, min_size=1, max_size=3))
def test_triage_of_generated_seizures_records_each_item_once_and_writes_only_the_case(
    archives: list[Node], disk_names: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ev = root / "ev"
        ev.mkdir()
        for i, node in enumerate(archives):
            (ev / f"a{i}.bin").write_bytes(_bytes(node))
        for i, name in enumerate(disk_names):
            raw = name.encode("utf-8", "surrogateescape").replace(b"/", b"_").replace(b"\0", b"_")
            if raw in (b"", b".", b".."):
                raw = b"n"
            try:
                with open(os.fsencode(ev) + b"/" + raw + str(i).encode(), "xb") as f:
                    f.write(b"L" + raw)
            except FileExistsError:
                pass
        walked = [e.path for e in walk(ev, LIMITS)]
        before = {p: p.stat().st_mtime_ns for p in ev.rglob("*")}
        s = Settings(workers=1, models=False, limits=LIMITS)
        triage(ev, root / "case", settings=s)
        again = triage(ev, root / "case", settings=s)
        store = CaseStore(root / "case", create=False)
        try:
            paths = [r["path"] for r in records(store)]
        finally:
            store.close()
        assert sorted(paths) == sorted(walked) and len(set(paths)) == len(paths)
        assert again.new == 0 and again.updated == 0
        assert {p: p.stat().st_mtime_ns for p in ev.rglob("*")} == before
        assert sorted(p.name for p in root.iterdir()) == ["case", "ev"]


def test_the_fuzz_target_runs_clean_for_a_few_seconds(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fuzz(8.0, seed=20261201, work=tmp_path)
    assert result["rounds"] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.bin"]


def _tar_of(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n):
            info = tarfile.TarInfo(f"d{i % 50}/m{i:06}.txt")
            payload = f"{i:06}".encode() * 170
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _sparse_bomb() -> bytes:
    import gzip

    buf = io.BytesIO()
    real = 500 * MiB
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(13):
            info = tarfile.TarInfo(f"hole{i}.bin")
            info.size = 512
            info.pax_headers = {
                "GNU.sparse.map": f"{real - 512},512",
                "GNU.sparse.size": str(real),
            }
            tf.addfile(info, io.BytesIO(b"x" * 512))
    return gzip.compress(buf.getvalue(), 9)


def _walk_peak(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in walk(path))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_walker_memory_does_not_grow_with_the_members_of_a_tar(tmp_path: Path) -> None:
    small, large = tmp_path / "small.tar", tmp_path / "large.tar"
    small.write_bytes(_tar_of(1_000))
    large.write_bytes(_tar_of(20_000))  # 20 MB of member data
    n_small, peak_small = _walk_peak(small)
    n_large, peak_large = _walk_peak(large)
    assert (n_small, n_large) == (1_001, 20_001)
    # what stays per member is its name (for the occurrence suffix): about 100 bytes, bounded by
    # max_members; no member's data is kept
    assert peak_large - peak_small < 4 * MiB, (peak_small, peak_large)


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


def test_peak_rss_of_the_whole_process_tree_stays_bounded_on_a_tar_of_many_files(
    tmp_path: Path,
) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "many.tar").write_bytes(_tar_of(5_000))
    for i in range(12):  # pictures, so that decode workers start
        (ev / f"p{i}.jpg").write_bytes(jpeg(i, 256))
    (ev / "sparse.tgz").write_bytes(_sparse_bomb())  # 500 MB a member once expanded
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(os.getpid()))
            time.sleep(0.05)

    base = _tree_rss(os.getpid())
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = triage(ev, tmp_path / "case", settings=Settings(workers=2, models=False))
    finally:
        done.set()
        sampler.join()
    assert summary.new == 5_001 + 12 + 2
    # the driver, the forkserver and two workers: about 0.1 GiB over the test process here; the
    # sparse members alone used to take 1.5 GiB
    assert peak - base < 512 * MiB, (base, peak)
