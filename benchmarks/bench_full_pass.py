"""The full default pass against a detector-only loop, side by side in one run (issue 11).

Inputs: ``--files`` generated web-size JPEGs (random crops, mirrors and resizes of the benign
sample photos shipped by scikit-image and scikit-learn, 560-720 px wide; ``bench_ray.make_files``),
written once.

- ``nudenet``: the baseline a user would otherwise run: ``nudenet.NudeDetector().detect(path)``
  looped over the same files (it decodes each file itself; onnxruntime's default threads).
- ``local``: ``heroes.pipeline.runner.triage`` with the default settings on the local engine:
  hash + decode + PDQ + detector + faces (landmarks, confirmation, age, face embedding) + scene
  embedding + store + finalise + indexes, into a fresh case.
- ``ray``: the same on the Ray engine (embedded Ray started and stopped inside the timing).

Configurations take turns pass by pass (``--repeat``); the best pass of each is kept, and every
number is reported as a ratio to ``nudenet`` in the same run.

``--stages`` also times each stage of the per-image work in one process on one thread (decode +
EXIF + PDQ, detector, faces, scene embedding) over the same files: the cost per image that the
pass spreads over the cores.

``--rss`` also runs ``heroes triage`` on the demo seizure on each engine under
``rss_tree.py`` and reports the peak process-tree RSS and PSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, write_result  # noqa: E402
from bench_ray import make_files, versions  # noqa: E402


def nudenet_loop(paths: list[Path]) -> dict[str, Any]:
    from nudenet import NudeDetector

    detector = NudeDetector()
    detector.detect(str(paths[0]))  # session warm
    t0 = time.perf_counter()
    found = sum(len(detector.detect(str(p))) for p in paths)
    return {"wall_s": time.perf_counter() - t0, "rows": len(paths), "detections": found}


def heroes_pass(ev: Path, case: Path, engine: str) -> dict[str, Any]:
    from heroes.config import Settings
    from heroes.pipeline.runner import triage

    shutil.rmtree(case, ignore_errors=True)
    t0 = time.perf_counter()
    summary = triage(ev, case, settings=Settings(engine=engine)).to_dict()
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "rows": summary["new"],
        "faces": summary["faces"],
        "models": summary["models"],
        "indexed": summary["indexed"],
        "ray": summary.get("ray"),
    }


def stages(paths: list[Path]) -> dict[str, float]:
    """Milliseconds per image of each stage, one process, one thread."""
    import cv2

    from heroes.config import Settings
    from heroes.pipeline.decode import analyze_image
    from heroes.pipeline.infer import Analyzer
    from heroes.pipeline.runner import model_plan

    cv2.setNumThreads(1)
    datas = [p.read_bytes() for p in paths]
    t0 = time.perf_counter()
    decoded = [analyze_image(b, working_size=512, keep_pixels=True) for b in datas]
    decode_ms = 1000 * (time.perf_counter() - t0) / len(datas)
    frames = [d.pixels for d in decoded]
    plan = model_plan(Settings(ort_threads=1))
    assert plan is not None
    from dataclasses import replace

    out = {"decode_exif_pdq": decode_ms}
    full = Analyzer(plan)
    full.analyze(frames[:8], [None] * 8)  # load every model
    t0 = time.perf_counter()
    dets = [full.detector.detect(frames[i : i + 8]) for i in range(0, len(frames), 8)]
    out["detector"] = 1000 * (time.perf_counter() - t0) / len(frames)
    out["faces_per_image"] = sum(len(d.faces) for b in dets for d in b) / len(frames)
    if full.scene is not None:
        t0 = time.perf_counter()
        for i in range(0, len(frames), 8):
            full.scene.embed(frames[i : i + 8])
        out["scene"] = 1000 * (time.perf_counter() - t0) / len(frames)
    no_scene = Analyzer(replace(plan, scene_embed=None))
    no_scene.analyze(frames[:8], [None] * 8)
    t0 = time.perf_counter()
    for i in range(0, len(frames), 8):
        no_scene.analyze(frames[i : i + 8], [None] * len(frames[i : i + 8]))
    out["detector_and_faces"] = 1000 * (time.perf_counter() - t0) / len(frames)
    out["faces"] = out["detector_and_faces"] - out["detector"]
    t0 = time.perf_counter()
    for i in range(0, len(frames), 8):
        full.analyze(frames[i : i + 8], [None] * len(frames[i : i + 8]))
    out["all_models"] = 1000 * (time.perf_counter() - t0) / len(frames)
    out["models"] = {
        k: v
        for k, v in vars(plan).items()
        if k in ("detector", "landmarks", "age", "face_embed", "scene_embed")
    }
    return out


def rss(engine: str, tmp: Path) -> dict[str, Any]:
    import json

    demo = tmp / "demo" / "seizure"
    if not demo.exists():
        subprocess.run(
            [sys.executable, "-m", "heroes.demo", "build", str(demo)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    case = tmp / f"demo-case-{engine}"
    shutil.rmtree(case, ignore_errors=True)
    heroes = str(Path(sys.executable).with_name("heroes"))
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("rss_tree.py")),
            "--pss",
            "--json",
            "--",
            heroes,
            "triage",
            str(demo),
            "--case",
            str(case),
            "--engine",
            engine,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def scrub(obj: Any, places: dict[str, str]) -> Any:
    """The result without this machine's paths (the work folder, the Python environment)."""
    if isinstance(obj, str):
        for path, name in places.items():
            obj = obj.replace(path, name)
        return obj
    if isinstance(obj, dict):
        return {k: scrub(v, places) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub(v, places) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=1200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="folder for the files and cases")
    args = ap.parse_args(argv)
    tmp = args.work or Path(tempfile.mkdtemp(prefix="heroes-fullpass-"))
    ev = tmp / "ev"
    if not ev.is_dir() or len(list(ev.glob("*.jpg"))) != args.files:
        shutil.rmtree(ev, ignore_errors=True)
        ev.mkdir(parents=True)
        make_files(ev, args.files, args.seed)
    paths = sorted(ev.glob("*.jpg"))
    print(f"seed {args.seed}, {len(paths)} files in {ev}; {os.cpu_count()} cores", flush=True)
    engines = [e for e in args.engines.split(",") if e]
    best: dict[str, dict[str, Any]] = {}
    by_pass: list[dict[str, float]] = []
    for rep in range(args.repeat):
        this: dict[str, float] = {}
        for name in ["nudenet", *engines]:
            run = (
                nudenet_loop(paths)
                if name == "nudenet"
                else heroes_pass(ev, tmp / f"case-{name}", name)
            )
            run["images_per_s"] = run["rows"] / run["wall_s"]
            this[name] = round(run["images_per_s"], 2)
            ray = run.get("ray") or {}
            start = (
                f" (Ray up in {ray['start_s']} s, first result at {ray['first_result_s']} s)"
                if "first_result_s" in ray
                else ""
            )
            print(f"pass {rep + 1} {name}: {run['images_per_s']:.1f} images/s{start}", flush=True)
            if name not in best or run["wall_s"] < best[name]["wall_s"]:
                best[name] = run
        by_pass.append(this)
    base = best["nudenet"]["images_per_s"]
    for run in best.values():
        run["vs_nudenet"] = round(run["images_per_s"] / base, 3)
    result: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "seed": args.seed,
        "files": len(paths),
        "best": best,
    }
    #: images/s of every configuration in every pass (they take turns, so a pass's numbers were
    #: measured minutes apart at most)
    result["passes"] = by_pass
    if "local" in best and "ray" in best:
        result["ray_vs_local"] = round(
            best["ray"]["images_per_s"] / best["local"]["images_per_s"], 3
        )
        result["ray_vs_local_by_pass"] = [round(p["ray"] / p["local"], 3) for p in by_pass]
    if args.stages:
        result["stages_ms_per_image"] = stages(paths[: min(len(paths), 240)])
    if args.rss:
        result["demo_rss"] = {e: rss(e, tmp) for e in engines}
    for name, run in best.items():
        print(f"{name:8s} {run['images_per_s']:7.1f} images/s  {run['vs_nudenet']:.2f}x nudenet")
    if "ray_vs_local" in result:
        each = ", ".join(f"{r:.2f}" for r in result["ray_vs_local_by_pass"])
        print(f"ray / local: {result['ray_vs_local']:.2f}x best against best; pass by pass {each}")
    if args.stages:
        print("stages, ms per image on one thread:", result["stages_ms_per_image"])
    if args.rss:
        for e, r in result["demo_rss"].items():
            print(
                f"demo on {e}: peak tree RSS {r['peak_rss_mib']} MiB, PSS {r['peak_pss_mib']} MiB"
            )
    places = {str(tmp): "WORK", str(Path(sys.prefix)): "VENV", str(Path.cwd()): "."}
    write_result("full_pass", scrub(result, places))
    if args.work is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
