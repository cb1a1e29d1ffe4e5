"""The whole triage pass (``heroes.pipeline.runner.triage``) on the Ray engine, side by side with
the same stages in one plain Python loop, in one run.

Inputs: ``--files`` generated web-size JPEGs (random crops, mirrors and resizes of the benign
sample photos shipped by scikit-image and scikit-learn, 560-720 px wide), written once.

- ``plain_loop``: one process, models loaded once, ORT threads = all cores: hash (MD5/SHA-1/
  SHA-256 in one read), decode to 512 px with EXIF and PDQ, detector, landmarks, age and face
  embedding per file. Nothing is stored. This is the baseline (``vs_plain`` = 1.0).
- ``ray``: ``triage(..., engine="ray")`` into a fresh case: the same stages plus everything a pass
  does besides (walk, resume checks, store writes, finalise, rank, FAISS indexes), with Ray
  started and stopped inside the timing (embedded, fused plan, one actor per core).
- ``local``: ``triage(..., engine="local")``, the process-pool engine, for reference.
- ``--cluster N``: also ``ray.cluster_utils.Cluster`` runs with 1..N simulated nodes of one CPU
  each on this machine, reporting images/s and files per node.

The scene embedding is off in every configuration (the plain loop does not run it).
Configurations take turns pass by pass; the best pass of each is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, write_result  # noqa: E402
from bench_ray import make_files, new_analyzer, plain_loop, versions  # noqa: E402

RATIO_TARGET = 0.8


def run_triage(ev: Path, case: Path, engine: str, **ray: Any) -> dict[str, Any]:
    from heroes.config import RaySettings, Settings
    from heroes.pipeline.runner import triage

    shutil.rmtree(case, ignore_errors=True)
    settings = Settings(engine=engine, scene_model="", ray=RaySettings(**ray))
    t0 = time.perf_counter()
    summary = triage(ev, case, settings=settings).to_dict()
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "rows": summary["new"],
        "faces": summary["faces"],
        "files_per_node": (summary.get("ray") or {}).get("files_per_node"),
    }


def cluster_run(ev: Path, case: Path, nodes: int, tmp: Path) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 300 * 1024 * 1024,
            "include_dashboard": False,
            "temp_dir": str(tmp / "ray"),
        },
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=300 * 1024 * 1024)
        cluster.wait_for_nodes()
        out = run_triage(ev, case, "ray", address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="passes per configuration")
    ap.add_argument("--cluster", type=int, default=0, help="also simulate 1..N one-CPU nodes")
    ap.add_argument("--no-local", action="store_true", help="skip the process-pool engine")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    with tempfile.TemporaryDirectory(prefix="heroes-bench-pass-") as td:
        tmp = Path(td)
        ev = tmp / "ev"
        ev.mkdir()
        t0 = time.perf_counter()
        paths = make_files(ev, args.files, args.seed)
        made = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in paths)
        print(f"{len(paths)} JPEGs, {size / len(paths) / 1024:.0f} KiB mean, made in {made:.1f} s")
        analyzer = new_analyzer(None)

        best: dict[str, dict[str, Any]] = {}

        def keep(name: str, r: dict[str, Any]) -> None:
            r["img_s"] = r["rows"] / r["wall_s"]
            print(
                f"  {name:<10} {r['img_s']:7.1f} img/s  ({r['wall_s']:.1f} s, {r['faces']} faces)"
            )
            if name not in best or r["img_s"] > best[name]["img_s"]:
                best[name] = r

        for k in range(args.repeat):
            print(f"pass {k + 1}")
            keep("plain_loop", plain_loop(paths, analyzer))
            keep("ray", run_triage(ev, tmp / "case", "ray"))
            if not args.no_local:
                keep("local", run_triage(ev, tmp / "case", "local"))
        base = best["plain_loop"]["img_s"]
        for r in best.values():
            r["vs_plain"] = round(r["img_s"] / base, 3)
        cluster: list[dict[str, Any]] = []
        for n in range(1, args.cluster + 1):
            r = cluster_run(ev, tmp / f"case-c{n}", n, tmp)
            r["nodes"] = n
            r["img_s"] = r["rows"] / r["wall_s"]
            r["vs_plain"] = round(r["img_s"] / base, 3)
            print(f"  cluster {n} node(s): {r['img_s']:.1f} img/s, per node {r['files_per_node']}")
            cluster.append(r)

    ratio = best["ray"]["vs_plain"]
    print(f"ray / plain loop = {ratio:.2f} (target >= {RATIO_TARGET})")
    write_result(
        "pass",
        {
            "machine": machine(),
            "versions": versions(),
            "files": args.files,
            "mean_kib": round(size / len(paths) / 1024, 1),
            "repeat": args.repeat,
            "results": best,
            "cluster": cluster,
            "ratio_ray_vs_plain": ratio,
            "target": RATIO_TARGET,
        },
    )


if __name__ == "__main__":
    main()
