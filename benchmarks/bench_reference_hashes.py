"""Agreement of heroes' PDQ and vPDQ with the hashes Meta's reference tools publish, and its cost.

By default it reads the copy of the reference data in tests/data/threatexchange; with
``--threatexchange CHECKOUT`` (a clone of github.com/facebook/ThreatExchange) it reads all of it:
the PDQ regression images with the C++ hasher's output (``pdq/sql/README.md``), the WebAssembly
port's test CSV, python-threatexchange's hashing tests and every ``tmk/sample-videos`` clip with
its ``vpdq/sample-hashes``.

Reported: the Hamming distance of every image hash, and per video the median and maximum distance
of heroes' vPDQ (reference package on whole frames, and the PyAV fallback) against the published
per-frame hashes, next to vPDQ at the 512 px working size (what heroes did before); then the cost
of whole frames against working-size frames, and of PDQ's 8 dihedral hashes against one.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pdqhash

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402

from heroes.pipeline.decode import analyze_image, load_rgb, pdq_distance, pdq_hex  # noqa: E402
from heroes.pipeline.video import _fit, analyze_video  # noqa: E402

try:
    import vpdq
except ImportError:  # pragma: no cover
    vpdq = None

DATA = Path(__file__).parent.parent / "tests" / "data" / "threatexchange"
PYTX = {
    "LA.png": "accb6d39648035f8125c8ce6ba65007de7b54c67a2d93ef7b8f33b0611306715",
    "I16.png": "de2ef0e99ecdfc1d248a0eb055f023d1d61e79c3920cbb55d561c02accab1763",
    "rgb.jpeg": "fb4eed46cb8a6c78819ca06b756c541f7b07ef6d02c82fccd00f862166272cda",
}


def image_references(checkout: Path | None) -> list[tuple[str, Path, str]]:
    """(source, file, reference hash) for every image with a published hash."""
    if checkout is None:
        with (DATA / "pdq" / "reference.csv").open(newline="") as f:
            return [
                (r["source"].split(" ")[0], DATA / "pdq" / r["file"], r["pdq"])
                for r in csv.DictReader(f)
            ]
    out = []
    sql = (checkout / "pdq" / "sql" / "README.md").read_text()
    for h, p in re.findall(r"^([0-9a-f]{64}),\./(\S+)$", sql, re.M):
        out.append(("cpp", checkout / "pdq" / "data" / "reg-test-input" / p, h))
    wasm = checkout / "pdq" / "wasm" / "test" / "TestData" / "PDQMD5TestData.csv"
    for line in wasm.read_text().splitlines()[1:]:
        p, h = line.split(",")
        if len(h) == 64:
            out.append(("wasm", checkout / "pdq" / "data" / p.split("data/", 1)[1], h))
    res = checkout / "python-threatexchange/threatexchange/tests/hashing/resources"
    out += [("pytx", res / name, h) for name, h in PYTX.items()]
    return out


def videos(checkout: Path | None) -> list[tuple[Path, Path]]:
    if checkout is None:
        return [(v, v.with_suffix(".txt")) for v in sorted((DATA / "vpdq").glob("*.mp4"))]
    hashes = checkout / "vpdq" / "sample-hashes"
    return [
        (v, hashes / f"{v.stem}.txt")
        for v in sorted((checkout / "tmk" / "sample-videos").glob("*.mp4"))
        if (hashes / f"{v.stem}.txt").exists() and v.stat().st_size > 1000
    ]


def distances(features: list[dict[str, Any]], reference: Path) -> list[int]:
    rows = [line.split(",") for line in reference.read_text().split()]
    times = np.array([float(r[3]) for r in rows])
    out = []
    for f in features:
        j = int(np.argmin(np.abs(times - f["time"])))
        if int(rows[j][1]) >= 50:
            out.append(pdq_distance(f["pdq"], rows[j][2]))
    return out


def vpdq_at(video: Path, size: tuple[int, int]) -> tuple[list[dict[str, Any]], float]:
    t = time.perf_counter()
    features = vpdq.computeHash(
        str(video),
        seconds_per_hash=1.0,
        downsample_width=size[0],
        downsample_height=size[1],
        thread_count=1,
    )
    took = time.perf_counter() - t
    return [{"time": f.timestamp, "pdq": f.hex} for f in features], took


def frame_cost(video: Path, working_size: int) -> tuple[float, float]:
    """Seconds spent on one PDQ per second of video: whole frame, and working-size frame."""
    full = small = 0.0
    next_second = 0.0
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_second:
                continue
            next_second = np.floor(t) + 1.0
            t0 = time.perf_counter()
            pdq_hex(frame.to_ndarray(format="rgb24"))
            t1 = time.perf_counter()
            w, h = _fit(frame.width, frame.height, working_size)
            pdq_hex(frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA"))
            t2 = time.perf_counter()
            full, small = full + t1 - t0, small + t2 - t1
    return full, small


def synthetic(path: Path, width: int, height: int, seconds: int, fps: int = 25) -> Path:
    """A moving gradient clip (MPEG-4 part 2, fast to encode) for the cost at large sizes."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            img = np.repeat(np.repeat(np.roll(base, i, axis=1), 8, axis=0), 8, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threatexchange", type=Path, help="a ThreatExchange checkout (all data)")
    ap.add_argument("--working-size", type=int, default=512)
    ap.add_argument("--large", action="store_true", help="also time a 1080p and a 4K clip")
    args = ap.parse_args()
    ws = args.working_size
    print(f"seed 0; data: {args.threatexchange or DATA}")

    images = []
    for source, path, ref in image_references(args.threatexchange):
        if not path.is_file() or path.stat().st_size == 0:
            continue
        result = analyze_image(path.read_bytes(), working_size=ws)
        d = pdq_distance(result.pdq or "0" * 64, ref)
        images.append(
            {"source": source, "file": path.name, "distance": d, "quality": result.pdq_quality}
        )
        print(f"{source:5} {d:4d} q={result.pdq_quality:3d} {path.name}")
    usable = [r["distance"] for r in images if (r["quality"] or 0) >= 50]

    clips = []
    for video, ref in videos(args.threatexchange):
        t = time.perf_counter()
        ours = analyze_video(video, working_size=ws)
        took = time.perf_counter() - t
        memfd = os.memfd_create
        del os.memfd_create  # bytes without an anonymous file: the PyAV fallback
        try:
            t = time.perf_counter()
            fallback = analyze_video(video.read_bytes(), working_size=ws)
            took_fb = time.perf_counter() - t
        finally:
            os.memfd_create = memfd
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            size = _fit(s.width, s.height, ws)
        old, took_old = vpdq_at(video, size)
        _full, took_new = vpdq_at(video, (0, 0))
        full_s, small_s = frame_cost(video, ws)
        row = {
            "video": video.name,
            "heroes": distances(ours.vpdq, ref),
            "source": ours.vpdq_source,
            "fallback": distances(fallback.vpdq, ref),
            "working_size": distances(old, ref),
            "analyze_s": round(took, 3),
            "analyze_fallback_s": round(took_fb, 3),
            "vpdq_full_s": round(took_new, 3),
            "vpdq_working_size_s": round(took_old, 3),
            "per_second_pdq_full_s": round(full_s, 4),
            "per_second_pdq_working_size_s": round(small_s, 4),
        }
        clips.append(row)
        print(
            f"{video.name:36} heroes med {statistics.median(row['heroes'])} max "
            f"{max(row['heroes'])} | fallback max {max(row['fallback'])} | {ws} px med "
            f"{statistics.median(row['working_size'])} max {max(row['working_size'])} | vpdq "
            f"{took_new:.2f}s vs {took_old:.2f}s"
        )

    large = []
    if args.large:
        tmp = Path(tempfile.gettempdir())
        for w, h in ((1920, 1080), (3840, 2160)):
            clip = synthetic(tmp / f"heroes-bench-{w}x{h}.mp4", w, h, 6)
            try:
                best = {"full": np.inf, "ws": np.inf, "analyze": np.inf}
                for _ in range(2):
                    best["full"] = min(best["full"], vpdq_at(clip, (0, 0))[1])
                    best["ws"] = min(best["ws"], vpdq_at(clip, _fit(w, h, ws))[1])
                    t = time.perf_counter()
                    analyze_video(clip, working_size=ws)
                    best["analyze"] = min(best["analyze"], time.perf_counter() - t)
                full_s, small_s = frame_cost(clip, ws)
            finally:
                clip.unlink()
            large.append(
                {
                    "size": f"{w}x{h}",
                    "seconds": 6,
                    "vpdq_full_s": round(best["full"], 3),
                    "vpdq_working_size_s": round(best["ws"], 3),
                    "analyze_s": round(best["analyze"], 3),
                    "per_second_pdq_full_s": round(full_s, 4),
                    "per_second_pdq_working_size_s": round(small_s, 4),
                }
            )
            print(large[-1])

    rgb, _info = load_rgb((DATA / "pdq" / "bridge-1-original.jpg").read_bytes(), working_size=ws)
    timing = {}
    for name, fn in (("compute", pdqhash.compute), ("compute_dihedral", pdqhash.compute_dihedral)):
        best_ms = np.inf
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(20):
                fn(rgb)
            best_ms = min(best_ms, (time.perf_counter() - t) / 20 * 1000)
        timing[name] = round(best_ms, 2)
    print(f"PDQ at {rgb.shape[1]}x{rgb.shape[0]}: {timing}")

    all_heroes = [d for c in clips for d in c["heroes"]]
    all_old = [d for c in clips for d in c["working_size"]]
    write_result(
        "reference_hashes",
        {
            "images": images,
            "images_summary": {
                "count": len(images),
                "usable": len(usable),
                "max_usable": max(usable) if usable else None,
                "within_10": sum(d <= 10 for d in usable),
            },
            "videos": clips,
            "videos_summary": {
                "frames": len(all_heroes),
                "median": statistics.median(all_heroes) if all_heroes else None,
                "max": max(all_heroes) if all_heroes else None,
                "working_size_median": statistics.median(all_old) if all_old else None,
                "working_size_max": max(all_old) if all_old else None,
            },
            "large_videos": large,
            "pdq_ms": timing,
            "git": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip(),
        },
    )


if __name__ == "__main__":
    main()
