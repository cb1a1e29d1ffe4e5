"""Peak resident memory of a command and every process it starts (the whole tree, sampled).

``python benchmarks/rss_tree.py -- heroes triage demo/seizure --case CASE --engine ray``
prints the peak of the summed RSS of the process tree, sampled every 0.1 s, and the largest
processes at that peak. Ray's processes (raylet, GCS, workers) are children of the driver, so
they are counted; shared memory (the object store) is counted once per process that maps it,
as RSS reports it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss(root: psutil.Process, pss: bool = False) -> tuple[int, list[tuple[int, str]]]:
    """Summed RSS (or PSS: shared pages split between the processes mapping them) of a process
    and its descendants, and each process's share."""
    procs = [root]
    try:
        procs += root.children(recursive=True)
    except psutil.Error:
        pass
    total, each = 0, []
    for p in procs:
        try:
            rss = p.memory_full_info().pss if pss else p.memory_info().rss
            name = " ".join(p.cmdline()[:3])[:90] or p.name()
        except psutil.Error:
            continue
        total += rss
        each.append((rss, name))
    return total, sorted(each, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pss", action="store_true", help="also sample PSS (slower: reads smaps)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak, at_peak, peak_pss = 0, [], 0
    while proc.poll() is None:
        total, each = tree_rss(root)
        if total > peak:
            peak, at_peak = total, each
        if args.pss:
            peak_pss = max(peak_pss, tree_rss(root, pss=True)[0])
        time.sleep(args.interval)
    result = {
        "cmd": cmd,
        "rc": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "peak_pss_mib": round(peak_pss / 2**20, 1) if args.pss else None,
        "processes_at_peak": [(round(r / 2**20, 1), n) for r, n in at_peak[:15]],
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        pss = f", PSS {result['peak_pss_mib']} MiB" if args.pss else ""
        print(
            f"peak tree RSS {result['peak_rss_mib']} MiB{pss}, {result['wall_s']} s, "
            f"rc {proc.returncode}"
        )
        for mib, name in result["processes_at_peak"]:
            print(f"  {mib:8.1f} MiB  {name}")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
