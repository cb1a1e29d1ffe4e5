"""INT8 variants against their FP32 models on CPU: agreement on benign sets, and speed side by side.

For each INT8 manifest (``nudenet-320n-int8``, ``dlib-face-resnet-int8``, ``age-v1-int8``):

- agreement with the FP32 model by the rules of issue 11 (heroes/models/int8.py): detector
  detections matched by label at IoU >= 0.9 with scores within 0.05 (and the image nudity score
  within 0.05); face-embedding cosine >= 0.99 per chip; P(minor) within 0.05 and age within a
  year. Each set: the demo's benign sample photos (scikit-image, scikit-learn) and seeded crops,
  flips and resizes of them (seeds other than the calibration seed), and aligned face chips cut
  from those by the detector and the landmark model, with jittered boxes. A variant agrees when
  it agrees on every set;
- speed of the network alone, FP32 and INT8 in one process, with 1 and 2 intra-op threads:
  images/s at batch 8 for the detector, faces/s at batch 64 for the face models. The two take
  turns round by round and each figure is the best round, so load from other processes falls on
  both alike.

Writes benchmarks/results/int8.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import package_versions, write_result

from heroes.models import int8, registry
from heroes.models.base import OnnxModel
from heroes.models.detect import Detector


def versions() -> dict[str, str]:
    return package_versions("onnxruntime", "onnx", "numpy", "scikit-image", "scikit-learn")


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(have & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return []


def speed(
    fp32: OnnxModel, q: OnnxModel, x: np.ndarray, rounds: int, calls: int
) -> dict[str, float]:
    """Inputs per second of each model on ``x`` (one batch), best of ``rounds``, taking turns."""
    best = {"fp32": float("inf"), "int8": float("inf")}
    for m in (fp32, q):
        m.run(x)  # warm up: session, allocations
    for _ in range(rounds):
        for key, m in (("fp32", fp32), ("int8", q)):
            t0 = time.perf_counter()
            for _ in range(calls):
                m.run(x)
            best[key] = min(best[key], (time.perf_counter() - t0) / calls)
    out = {k: round(len(x) / v, 1) for k, v in best.items()}
    out["ratio"] = round(out["int8"] / out["fp32"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--sets",
        nargs="+",
        default=[f"{int8.EVALUATION_SEED}:4", "2:12"],
        help="benign sets as SEED:VARIANTS_PER_PHOTO (the sample photos are in every set)",
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5, help="timed calls per round")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--detector-batch", type=int, default=8)
    ap.add_argument("--chip-batch", type=int, default=64)
    args = ap.parse_args(argv)
    print(f"seeds: calibration {int8.CALIBRATION_SEED}, evaluation {int8.EVALUATION_SEED}")

    sets = []
    for item in args.sets:
        seed, per_photo = (int(v) for v in item.split(":"))
        if seed == int8.CALIBRATION_SEED:
            raise SystemExit(f"seed {seed} is the calibration seed")
        images = int8.benign_images(seed, per_photo, originals=True)
        sets.append((item, images, int8.benign_chips(images.values(), seed)))
    _, images, chips = sets[0]
    results: dict[str, Any] = {}
    for spec in int8.int8_variants():
        assert spec.fp32_model is not None
        base = registry.get_spec(spec.fp32_model)
        t0 = time.perf_counter()
        registry.resolve(spec)  # made on first use; timed once here
        build_s = time.perf_counter() - t0
        agreement = {name: int8.measure(spec, ims, ch) for name, ims, ch in sets}
        agrees = all(a.agrees for a in agreement.values())
        entry: dict[str, Any] = {
            "fp32_model": base.name,
            "manifest_agrees": spec.params.get("agrees"),
            "measured_agrees": agrees,
            "build_seconds": round(build_s, 2),
            "agreement": {name: a.to_dict() for name, a in agreement.items()},
            "speed": {},
        }
        if spec.task == "detect":
            det = Detector(base, device="cpu")
            x, _ = det.preprocess(list(images.values())[: args.detector_batch])
            unit = "images/s"
        else:
            arr = chips.identity if spec.task == "face_embed" else chips.age
            reps = -(-args.chip_batch // max(1, len(arr)))
            x = OnnxModel(base).normalise(np.tile(arr, (reps, 1, 1, 1))[: args.chip_batch])
            unit = "faces/s"
        entry["speed_unit"] = unit
        entry["batch"] = len(x)
        for n in args.threads:
            a = OnnxModel(base, device="cpu", threads=n)
            b = OnnxModel(spec, device="cpu", threads=n)
            a.max_batch = b.max_batch = len(x)
            entry["speed"][f"threads_{n}"] = speed(a, b, x, args.rounds, args.calls)
        results[spec.name] = entry
        print(spec.name, entry["speed"], "agrees" if agrees else "does not agree")
    write_result(
        "int8",
        {
            "config": vars(args),
            "cpu_flags": cpu_flags(),
            "versions": versions(),
            "evaluation": {
                name: {"images": len(ims), "chips": len(ch.identity)} for name, ims, ch in sets
            },
            "rules": {
                "iou_min": int8.IOU_MIN,
                "score_tol": int8.SCORE_TOL,
                "cosine_min": int8.COSINE_MIN,
                "p_minor_tol": int8.P_MINOR_TOL,
                "age_tol_years": int8.AGE_TOL,
            },
            "models": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
