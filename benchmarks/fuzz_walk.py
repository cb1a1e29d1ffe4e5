"""Fuzz the walker with hostile archives for a bounded time.

Seeds are small nested archives (zip, tar, gz, tgz) with repeated, empty, control-character and
invalid UTF-8 names; each round mutates one (bit flips, truncation, splices, a zip appended to
other bytes) and walks it under small limits. Every walk must finish without raising, give every
entry a unique path, account for every member that the standard library can list (zip and plain
tar, when the walk of that archive did not stop with an error) and write nothing.

    python benchmarks/fuzz_walk.py --seconds 60 --seed 1 [--out results/fuzz_walk.json]

Prints (and writes with ``--out``) a JSON summary with the seed, rounds, entries walked and the
machine; exits 1 with the failing input saved next to the summary when an invariant breaks.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heroes.config import Limits
from heroes.names import UNSAFE
from heroes.pipeline.discover import walk

#: names that have broken walkers: separators, escapes, controls, invalid UTF-8 (as
#: surrogate escapes), repeats, an empty name
ODD_NAMES = (
    "",
    "a",
    "a",
    "x.zip!",
    "x.zip!/y",
    "!/",
    "\\xff",
    "\udcff",
    "bad\udc80\udcfe.jpg",
    "\\",
    "[red]",
    "[/x]",
    "esc\x1b[2J",
    "bell\x07",
    "nl\nname",
    "\u009b31m",
    "evil\u202egpj.exe",
    "\u00a0nbsp",
    "../../etc/passwd",
    "/abs",
    "dir/",
    "d/e/f.txt",
    "\\#2",
)

KINDS = ("zip", "tar", "tgz", "gz")
_UNSAFE = {chr(c) for c in UNSAFE}

#: small enough that bombs and floods are cut within a round
LIMITS = Limits(
    max_depth=3,
    max_member_bytes=256 * 1024,
    max_archive_bytes=4 * 1024 * 1024,
    max_members=200,
    max_nested_bytes=8 * 1024 * 1024,
    max_nested_members=400,
)


@dataclass
class Node:
    """An archive to build: its kind and its members (bytes, or a nested :class:`Node`)."""

    kind: str
    members: list[tuple[str, bytes | Node]] = field(default_factory=list)


def _tar_name(name: str) -> str:
    # tarfile cannot store an empty name or one that ends in "/" as a regular file
    return name.rstrip("/") or "empty"


def build(node: Node) -> bytes:
    """The bytes of ``node``, members built depth first (zip warns of repeated names: wanted)."""
    members = [(n, build(m) if isinstance(m, Node) else m) for n, m in node.members]
    if node.kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                raw = name.encode("utf-8", "surrogateescape").decode("cp437")
                info = zipfile.ZipInfo(raw.rstrip("/") if name.endswith("/") else raw)
                info.date_time = (2020, 1, 2, 3, 4, 6)
                zf.writestr(info, data)
        return buf.getvalue()
    if node.kind in ("tar", "tgz"):
        buf = io.BytesIO()
        with tarfile.open(
            fileobj=buf,
            mode="w",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
        ) as tf:
            for name, data in members:
                info = tarfile.TarInfo(_tar_name(name))
                info.size, info.mtime = len(data), 1_600_000_000
                tf.addfile(info, io.BytesIO(data))
        raw = buf.getvalue()
        return gzip.compress(raw, mtime=0) if node.kind == "tgz" else raw
    if node.kind == "gz":
        data = members[0][1] if members else b""
        return gzip.compress(data, mtime=0)
    raise ValueError(f"unknown kind {node.kind}")


def random_node(rng: random.Random, depth: int = 0) -> Node:
    kind = rng.choice(KINDS)
    count = 1 if kind == "gz" else rng.randint(0, 6)
    members: list[tuple[str, bytes | Node]] = []
    for _ in range(count):
        name = rng.choice(ODD_NAMES) if rng.random() < 0.7 else f"m{rng.randint(0, 99)}.bin"
        if depth < 3 and rng.random() < 0.3:
            members.append((name, random_node(rng, depth + 1)))
        else:
            members.append((name, rng.randbytes(rng.randint(0, 300))))
    return Node(kind, members)


def mutate(rng: random.Random, data: bytes, others: Sequence[bytes]) -> bytes:
    """One of: unchanged, bit flips, a cut, a splice of another input, bytes before a zip."""
    choice = rng.randrange(5)
    buf = bytearray(data)
    if choice == 1 and buf:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif choice == 2 and buf:
        del buf[rng.randrange(len(buf)) :]
    elif choice == 3 and others:
        other = rng.choice(others)
        at = rng.randrange(len(buf) + 1)
        buf[at:] = other[rng.randrange(len(other) + 1) :]
    elif choice == 4:
        buf[:0] = b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(0, 64))
    return bytes(buf)


def listed(data: bytes) -> int | None:
    """Members the standard library lists for a plain tar or a zip (None for other input)."""
    if data[257:262] == b"ustar":
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                return sum(1 for m in tf.getmembers() if not m.isdir())
        except Exception:
            return None
    if not data.startswith(b"PK"):
        return None  # zipfile also finds a zip nested at the end of other bytes
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return sum(1 for i in zf.infolist() if not i.orig_filename.endswith("/"))
    except Exception:
        return None


def check(path: Path, data: bytes, limits: Limits = LIMITS) -> int:
    """Walk ``path`` (holding ``data``) and assert the invariants; returns the entries seen."""
    before = sorted(p.name for p in path.parent.iterdir())
    entries = list(walk(path, limits))
    paths = [e.path for e in entries]
    assert len(paths) == len(set(paths)), f"duplicate paths: {paths}"
    assert entries and entries[-1].path == path.name, "the root file is not the last entry"
    top = entries[-1]
    for e in entries:
        assert not _UNSAFE & set(e.path), f"unsafe character in {e.path!r}"
        if e.container is not None:
            assert e.path.startswith(e.container + "!/"), e.path
    direct = sum(1 for e in entries if e.container == top.path)
    if top.archive_kind is not None:
        assert top.members == direct, (top.members, direct)
        expected = listed(data)
        if top.error is None and expected is not None and top.archive_kind in ("zip", "tar"):
            assert direct == expected, f"{direct} member records, the archive lists {expected}"
    assert sorted(p.name for p in path.parent.iterdir()) == before, "the walk wrote a file"
    return len(entries)


def run(seconds: float, seed: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    seeds = [build(random_node(rng)) for _ in range(16)]
    rounds = entries = 0
    started = time.monotonic()
    target = work / "input.bin"
    while time.monotonic() - started < seconds:
        data = mutate(rng, rng.choice(seeds), seeds)
        target.write_bytes(data)
        try:
            entries += check(target, data)
        except BaseException:
            (work / f"failing-{seed}-{rounds}.bin").write_bytes(data)
            raise
        rounds += 1
        if rng.random() < 0.2:
            seeds.append(data if len(data) < 64 * 1024 else seeds[0])
            seeds = seeds[-64:]
    return {"seed": seed, "seconds": seconds, "rounds": rounds, "entries": entries}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import machine

    with tempfile.TemporaryDirectory(prefix="heroes-fuzz-") as tmp:
        try:
            result = run(args.seconds, args.seed, Path(tmp))
        except AssertionError as exc:
            print(json.dumps({"seed": args.seed, "failed": str(exc)}))
            return 1
    result["machine"] = machine()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
