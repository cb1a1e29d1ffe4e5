"""Hashing throughput: heroes (MD5+SHA-1+SHA-256 in one read, files spread over threads) against
``hashdeep -c md5,sha1,sha256`` and a plain hashlib loop, on the same files in the same run.

The files are read once before timing so that every tool hashes from the page cache: this measures
hashing, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import write_result

from heroes.pipeline.identify import hash_file


def plain_loop(paths: list[Path]) -> None:
    for p in paths:
        m, s1, s2 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                m.update(chunk)
                s1.update(chunk)
                s2.update(chunk)
        m.hexdigest(), s1.hexdigest(), s2.hexdigest()


def heroes_threads(paths: list[Path], threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: hash_file(p), paths))


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--mib", type=int, default=8, help="size of each file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"seed={args.seed} files={args.files} size={args.mib} MiB")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for i in range(args.files):
            p = root / f"f{i:04d}.bin"
            p.write_bytes(rng.integers(0, 256, args.mib << 20, dtype=np.uint8).tobytes())
            paths.append(p)
        total_mib = args.files * args.mib
        plain_loop(paths)  # warm the page cache
        res = {}
        res["plain_hashlib_loop"] = best_of(lambda: plain_loop(paths), args.repeat)
        threads = os.cpu_count() or 1
        res["heroes"] = best_of(lambda: heroes_threads(paths, threads), args.repeat)
        hashdeep = shutil.which("hashdeep")
        if hashdeep:
            cmd = [hashdeep, "-c", "md5,sha1,sha256", "-r", str(root)]
            res["hashdeep"] = best_of(
                lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeat
            )
        mibs = {k: total_mib / v for k, v in res.items()}
        base = mibs.get("hashdeep", mibs["plain_hashlib_loop"])
        write_result(
            "hashing",
            {
                "seed": args.seed,
                "files": args.files,
                "file_mib": args.mib,
                "threads": threads,
                "seconds": {k: round(v, 3) for k, v in res.items()},
                "mib_per_s": {k: round(v, 1) for k, v in mibs.items()},
                "ratio_vs_hashdeep": {k: round(v / base, 2) for k, v in mibs.items()},
            },
        )


if __name__ == "__main__":
    main()
