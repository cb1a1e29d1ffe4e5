"""Forensic images: how fast files are listed and read out of an E01, and what reading a large
file inside it costs in memory.

Builds an ext4 volume holding ``--files`` small files and one ``--big-mib`` file (``mkfs.ext4
-d``), acquires it as E01 (``ewfacquire``, fast compression), then times (1) the walk (listing,
reading small files, the image hash check), (2) a triage with the models off on the local engine,
and (3) hashing the large file by reference in a fresh process, with that process's peak RSS
(VmHWM) before and after the read. Needs e2fsprogs and ewf-tools.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

from heroes.config import DiskImageSettings, Settings
from heroes.pipeline.discover import walk
from heroes.pipeline.runner import triage

_PROBE = """
import pickle, sys, time
ref = pickle.loads(sys.stdin.buffer.read())
from heroes.pipeline.identify import hash_source
import heroes.pipeline.diskimage

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = hwm()
t0 = time.perf_counter()
digests, _, _ = hash_source(ref)
print(before, hwm(), digests.size, time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"seed={args.seed} files={args.files} big={args.big_mib} MiB")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        for i in range(args.files):
            d = src / f"d{i % 50:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:06d}.bin").write_bytes(rng.bytes(int(rng.integers(200, 20_000))))
        with open(src / "big.bin", "wb") as f:
            for _ in range(args.big_mib):
                f.write(rng.bytes(1 << 20))
        vol = root / "vol.raw"
        size_mib = args.big_mib + args.files * 24 // 1024 + 64
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-d", str(src), str(vol), f"{size_mib}M"],
            check=True,
            capture_output=True,
        )
        ev = root / "ev"
        ev.mkdir()
        cmd = ["ewfacquire", "-q", "-u", "-t", str(ev / "disk"), "-c", "fast", "-d", "sha1"]
        cmd += ["-C", "c", "-D", "d", "-e", "e", "-E", "1", "-N", "n", str(vol)]
        subprocess.run(cmd, check=True, capture_output=True)
        image = ev / "disk.E01"

        t0 = time.perf_counter()
        n = 0
        big_ref = None
        for e in walk(image, disk=DiskImageSettings()):
            n += 1
            if e.path.endswith("/big.bin"):
                big_ref = e.ref
        walk_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        summary = triage(image, root / "case", settings=Settings(engine="local", models=False))
        triage_s = time.perf_counter() - t0

        import pickle

        probe = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=pickle.dumps(big_ref),
            check=True,
            capture_output=True,
        )
        fields = probe.stdout.split()
        before, after, read = (int(x) for x in fields[:3])
        hash_s = float(fields[3])
        write_result(
            "diskimage",
            {
                "seed": args.seed,
                "files": args.files,
                "big_mib": args.big_mib,
                "image_mib": round(image.stat().st_size / 2**20, 1),
                "walk": {"entries": n, "seconds": round(walk_s, 2), "per_s": round(n / walk_s)},
                "triage_models_off": {
                    "seconds": round(triage_s, 2),
                    "files_per_s": round(summary.new / triage_s),
                    "errors": dict(summary.errors),
                },
                "hash_big_by_reference": {
                    "bytes": read,
                    "seconds": round(hash_s, 2),
                    "mib_per_s": round(read / 2**20 / hash_s, 1),
                    "rss_before_mib": round(before / 1024, 1),
                    "rss_peak_mib": round(after / 1024, 1),
                },
                "walker_rss_peak_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            },
        )


if __name__ == "__main__":
    main()
