"""INT8 copies of the FP32 models for CPU: made on first use, measured against FP32 on benign sets.

A variant's manifest (``fp32_model = "NAME"``, ``file = "converted:..."``,
``convert_from = "model:NAME"``) carries a ``[quantize]`` recipe; :func:`build` applies it to the
FP32 model's verified file with ONNX Runtime's static QDQ quantiser (uint8 activations, int8
weights, per-channel by default: the u8s8 kernels that use AVX-512 VNNI / AVX-VNNI on x86) and
writes the result into the model directory, atomically, like the dlib conversion.

Calibration needs images, and heroes installs no image set at run time, so the activation ranges
are measured once, offline, on benign photos shipped by scikit-image and scikit-learn (crops,
flips, resizes and face chips cut from them; never sexual content) and shipped as a small JSON
file per FP32 model (``assets/int8/NAME.json``, its sha256 in the manifest). Building from FP32
weights plus those ranges is deterministic: the same files give the same INT8 model.

Whether a variant is used by default is decided by measurement, not hope: :func:`measure`
compares it with FP32 on benign sets by the rules of issue 11 (detections matched at IoU >= 0.9
with scores within 0.05; face-embedding cosine >= 0.99 per chip; P(minor) within 0.05 and age
within a year) and the manifest records the verdict in ``[params] agrees``, which
:func:`heroes.models.registry.preferred_variant` reads. ``python -m heroes.models.int8 calibrate``
rewrites the ranges; ``python -m heroes.models.int8 measure`` prints the agreement
(benchmarks/bench_int8.py adds speed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heroes.models import registry
from heroes.models.registry import ModelError, ModelSpec

ASSETS = Path(__file__).parent / "assets" / "int8"

#: the rules of issue 11 ("Cost per image") for a variant to stand in for its FP32 model
IOU_MIN = 0.9
SCORE_TOL = 0.05
COSINE_MIN = 0.99
P_MINOR_TOL = 0.05
AGE_TOL = 1.0


@dataclass(frozen=True)
class Recipe:
    """How a variant is quantised, from its manifest's ``[quantize]`` table."""

    ranges: str  # ``package:heroes/models/assets/int8/NAME.json``
    ranges_sha256: str
    per_channel: bool = True
    activations: str = "uint8"
    weights: str = "int8"
    #: operator types to quantise (empty: every type ONNX Runtime can)
    op_types: tuple[str, ...] = ()
    #: regular expressions over node names kept in float (``re.search``)
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: ModelSpec) -> Recipe:
        q = dict(spec.quantize)
        try:
            q["op_types"] = tuple(q.get("op_types", ()))
            q["exclude"] = tuple(q.get("exclude", ()))
            return cls(**q)
        except TypeError as exc:
            raise ModelError(f"model {spec.name!r}: bad [quantize] table: {exc}") from exc


def ranges_path(recipe: Recipe) -> Path:
    if recipe.ranges.startswith("package:"):
        path = registry.package_file(recipe.ranges)
        if path is None:
            raise ModelError(f"calibration ranges {recipe.ranges} not found")
        return path
    return Path(recipe.ranges)


def load_ranges(recipe: Recipe) -> dict[str, tuple[float, float]]:
    """The shipped activation ranges, checked against the manifest's sha256."""
    path = ranges_path(recipe)
    registry.verify(path, recipe.ranges_sha256)
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {k: (float(v[0]), float(v[1])) for k, v in raw["ranges"].items()}


def excluded_nodes(model: Any, patterns: Sequence[str]) -> list[str]:
    rx = [re.compile(p) for p in patterns]
    return [n.name for n in model.graph.node if any(r.search(n.name) for r in rx)]


def quantize(source: Path, ranges: dict[str, tuple[float, float]], recipe: Recipe) -> bytes:
    """The INT8 (QDQ) model for the FP32 file ``source`` and measured ``ranges``, serialised.

    ``quantize_static`` wants a calibration data reader, so its quantiser is driven directly
    with the shipped ranges (the same steps: shape inference, QDQ insertion, topological order).
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if recipe.activations not in types or recipe.weights not in types:
        raise ModelError(f"unsupported quantisation types {recipe.activations}/{recipe.weights}")
    # ORT's shape inference writes SOURCE-inferred.onnx beside its input: on a private copy, so
    # two worker processes building the same variant at once never read each other's file
    with tempfile.TemporaryDirectory(prefix="heroes-int8-") as private:
        copy = Path(private) / Path(source).name
        shutil.copyfile(source, copy)
        model = load_model_with_shape_infer(copy)
    op_types = list(recipe.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {
            k: TensorData(
                lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32)
            )
            for k, (lo, hi) in sorted(ranges.items())
        },
    )
    quantizer = QDQQuantizer(
        model,
        recipe.per_channel,
        False,  # reduce_range: 7-bit weights are for CPUs without VNNI
        types[recipe.weights],
        types[recipe.activations],
        tensors,
        [],  # nodes_to_quantize: all
        excluded_nodes(model, recipe.exclude),
        op_types,
        {"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    quantizer.quantize_model()
    quantizer.model.topological_sort()
    out = quantizer.model.model
    # the FP32 file's own metadata (e.g. its licence) stays; the ranges used are added
    out.metadata_props.add(key="heroes_int8_ranges_sha256", value=recipe.ranges_sha256)
    onnx.checker.check_model(out)
    return bytes(out.SerializeToString())


def build(spec: ModelSpec, source: Path, target: Path) -> str:
    """Quantise ``source`` (the FP32 model's verified file) by ``spec``'s recipe into ``target``;
    returns the new file's sha256. Written beside ``target`` and renamed into place, so a reader
    never sees half a model."""
    recipe = Recipe.of(spec)
    return registry.write_model(target, quantize(source, load_ranges(recipe), recipe))


# --- calibration (offline) ---------------------------------------------------------------------


def calibrate(
    fp32: ModelSpec, batches: Iterable[NDArray[np.float32]], op_types: Sequence[str] = ()
) -> dict[str, tuple[float, float]]:
    """Min/max of every tensor the quantiser may touch, over prepared input ``batches``."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(self.it, None)
            return None if x is None else {fp32.input.name: np.ascontiguousarray(x)}

    types = list(op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    with tempfile.TemporaryDirectory(prefix="heroes-calib-") as tmp:
        cal = create_calibrator(
            registry.resolve(fp32),
            types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            providers=["CPUExecutionProvider"],
        )
        cal.collect_data(Reader())
        data = cal.compute_data()
    out: dict[str, tuple[float, float]] = {}
    for k, v in sorted(data.data.items()):
        lo, hi = (np.asarray(r, dtype=np.float32).reshape(-1) for r in v.range_value)
        if lo.size != 1 or hi.size != 1:
            raise ModelError(f"calibration of {fp32.name}: tensor {k} has no single range")
        out[k] = (float(lo[0]), float(hi[0]))
    return out


def write_ranges(name: str, ranges: dict[str, tuple[float, float]], about: str) -> Path:
    ASSETS.mkdir(parents=True, exist_ok=True)
    path = ASSETS / f"{name}.json"
    payload = {"model": name, "method": "minmax", "calibration": about, "ranges": ranges}
    path.write_text(json.dumps(payload, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    return path


# --- benign sets -------------------------------------------------------------------------------


def _fit(image: NDArray[np.uint8], side: int) -> NDArray[np.uint8]:
    import cv2

    h, w = image.shape[:2]
    r = side / max(h, w)
    size = (max(1, round(w * r)), max(1, round(h * r)))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interp))


def benign_images(seed: int, per_photo: int, originals: bool) -> dict[str, NDArray[np.uint8]]:
    """The demo's benign sample photos (scikit-image, scikit-learn) and ``per_photo`` seeded
    crops (60-100% of each side), mirrored half the time, resized to 256-640 px, per photo."""
    from heroes.demo import sample_photos

    rng = np.random.default_rng(seed)
    out: dict[str, NDArray[np.uint8]] = {}
    for name, photo in sample_photos().items():
        im = np.ascontiguousarray(photo)
        if originals:
            out[name] = im
        h, w = im.shape[:2]
        for k in range(per_photo):
            fy, fx = rng.uniform(0.6, 1.0, 2)
            ch, cw = int(h * fy), int(w * fx)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = im[y0 : y0 + ch, x0 : x0 + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[f"{name}/{seed}.{k}"] = _fit(crop, int(rng.choice([256, 320, 480, 640])))
    return out


@dataclass(frozen=True)
class Chips:
    age: NDArray[np.uint8]  # [N, 64, 64, 3]
    identity: NDArray[np.uint8]  # [N, 150, 150, 3]


def benign_chips(images: Iterable[NDArray[np.uint8]], seed: int, jitter: int = 3) -> Chips:
    """Aligned face chips (as the pass cuts them) from detected faces in ``images``, each face
    also through ``jitter`` boxes moved by a few percent, so the landmarks see varied crops."""
    from heroes.models.detect import Detector
    from heroes.models.faces import Landmarks

    det, lm = Detector(device="cpu"), Landmarks()
    rng = np.random.default_rng(seed)
    small: list[NDArray[np.uint8]] = []
    large: list[NDArray[np.uint8]] = []
    ims = list(images)
    for image, found in zip(ims, det.detect(ims), strict=True):
        boxes = [f.bbox for f in found.faces]
        for x1, y1, x2, y2 in list(boxes):
            w, h = x2 - x1, y2 - y1
            for _ in range(jitter):
                dx, dy, dw, dh = rng.normal(0, 0.08, 4)
                boxes.append(
                    (
                        x1 + (dx - dw) * w,
                        y1 + (dy - dh) * h,
                        x2 + (dx + dw) * w,
                        y2 + (dy + dh) * h,
                    )
                )
        if boxes:
            shapes = lm.shapes(image, boxes)
            small.append(lm.chips(image, shapes, 64, 0.2))
            large.append(lm.chips(image, shapes, 150, 0.25))
    if not small:
        return Chips(np.zeros((0, 64, 64, 3), np.uint8), np.zeros((0, 150, 150, 3), np.uint8))
    return Chips(np.concatenate(small), np.concatenate(large))


CALIBRATION_SEED = 1
EVALUATION_SEED = 0


def calibration_batches(fp32: ModelSpec) -> tuple[list[NDArray[np.float32]], str]:
    """Prepared input batches of the calibration set for ``fp32``'s task, and what they are."""
    # 100 images for the detector: with 30, ranges missed parts of unseen crops and scores moved
    images = benign_images(CALIBRATION_SEED, 10 if fp32.task == "detect" else 3, originals=False)
    about = (
        f"{len(images)} seeded crops/flips/resizes (seed {CALIBRATION_SEED}) of the benign "
        "sample photos of heroes.demo.sample_photos (scikit-image, scikit-learn)"
    )
    if fp32.task == "detect":
        from heroes.models.detect import Detector

        det = Detector(fp32, device="cpu")
        x, _ = det.preprocess(list(images.values()))
        return [x[i : i + 1] for i in range(len(x))], about
    chips = benign_chips(
        benign_images(CALIBRATION_SEED, 6, originals=False).values(), CALIBRATION_SEED
    )
    from heroes.models.base import OnnxModel

    model = OnnxModel(fp32)
    arr = chips.identity if fp32.task == "face_embed" else chips.age
    x = model.normalise(arr)
    about = (
        f"{len(arr)} aligned face chips (detected faces and 3 jittered boxes each) from seeded "
        f"crops (seed {CALIBRATION_SEED}) of the benign sample photos"
    )
    return [x[i : i + 8] for i in range(0, len(x), 8)], about


# --- agreement ---------------------------------------------------------------------------------


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Agreement:
    """How closely a variant follows its FP32 model on a benign set; ``agrees`` by issue 11."""

    model: str
    fp32_model: str
    inputs: int
    agrees: bool = False
    # detector
    detections: int | None = None  # FP32 detections and faces
    unmatched: int | None = None  # detections (either side) with no partner at IoU >= 0.9
    min_iou: float | None = None  # over matched pairs
    max_score_diff: float | None = None  # over matched pairs
    face_label_flips: int | None = None
    max_nudity_diff: float | None = None  # image nudity score (max explicit probability)
    # face embedding
    min_cosine: float | None = None
    mean_cosine: float | None = None
    # age
    max_p_minor_diff: float | None = None
    max_age_diff: float | None = None
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def compare_detections(
    fp32: Sequence[Any],
    int8: Sequence[Any],
    *,
    score_threshold: float,
    face_threshold: float,
    names: Sequence[str] | None = None,
    model: str = "",
    fp32_model: str = "",
) -> Agreement:
    """Match each side's detections to the other's (same label, IoU >= 0.9).

    Faces are matched across FACE_FEMALE / FACE_MALE, which the detector itself treats as one
    face (one box per face; the label is not a gender finding); a changed label is counted in
    ``face_label_flips``. A detection within ``SCORE_TOL`` of its reporting threshold may lack a
    partner (the other side's score may sit just under the threshold); any other lone detection
    breaks agreement, as does a matched pair whose scores differ by more than ``SCORE_TOL``, or an
    image nudity score that moves by more than ``SCORE_TOL``.
    """
    res = Agreement(model, fp32_model, len(fp32), detections=0, unmatched=0, face_label_flips=0)
    ious: list[float] = []
    diffs: list[float] = []
    nudity: list[float] = []
    labels = names or [str(i) for i in range(len(fp32))]
    for name, a, b in zip(labels, fp32, int8, strict=True):
        nudity.append(abs(a.nudity_score - b.nudity_score))
        if nudity[-1] > SCORE_TOL:
            res.failures.append(
                f"{name}: nudity score {a.nudity_score:.3f} vs {b.nudity_score:.3f}"
            )
        for xs, ys, thr, face in (
            (a.detections, b.detections, score_threshold, False),
            (a.faces, b.faces, face_threshold, True),
        ):
            for side, (p, q) in enumerate(((xs, ys), (ys, xs))):
                for d in p:
                    if side == 0:
                        res.detections = (res.detections or 0) + 1
                    cands = [e for e in q if face or e.label == d.label]
                    best = max(cands, key=lambda e: iou(d.bbox, e.bbox), default=None)
                    if best is None or iou(d.bbox, best.bbox) < IOU_MIN:
                        if d.score >= thr + SCORE_TOL:
                            res.unmatched = (res.unmatched or 0) + 1
                            which = "FP32" if side == 0 else "INT8"
                            res.failures.append(
                                f"{name}: {which} {d.label} {d.score:.3f} has no partner"
                            )
                        continue
                    if side == 1:
                        continue  # pairs are measured once, from the FP32 side
                    ious.append(iou(d.bbox, best.bbox))
                    diffs.append(abs(d.score - best.score))
                    if best.label != d.label:
                        res.face_label_flips = (res.face_label_flips or 0) + 1
                    if diffs[-1] > SCORE_TOL:
                        res.failures.append(f"{name}: {d.label} {d.score:.3f} vs {best.score:.3f}")
    res.min_iou = round(min(ious), 4) if ious else None
    res.max_score_diff = round(max(diffs), 4) if diffs else None
    res.max_nudity_diff = round(max(nudity), 4) if nudity else None
    res.agrees = not res.failures
    return res


def compare_embeddings(
    fp32: NDArray[np.float32], int8: NDArray[np.float32], *, model: str = "", fp32_model: str = ""
) -> Agreement:
    cos = np.sum(fp32 * int8, axis=1) / np.clip(
        np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1), 1e-12, None
    )
    res = Agreement(model, fp32_model, len(cos))
    if len(cos):
        res.min_cosine = round(float(cos.min()), 5)
        res.mean_cosine = round(float(cos.mean()), 5)
    res.failures = [f"chip {i}: cosine {c:.4f}" for i, c in enumerate(cos) if c < COSINE_MIN]
    res.agrees = bool(len(cos)) and not res.failures
    return res


def compare_ages(
    fp32: Sequence[Any], int8: Sequence[Any], *, model: str = "", fp32_model: str = ""
) -> Agreement:
    res = Agreement(model, fp32_model, len(fp32))
    dp = [abs(a.p_minor - b.p_minor) for a, b in zip(fp32, int8, strict=True)]
    da = [abs(a.age - b.age) for a, b in zip(fp32, int8, strict=True)]
    if dp:
        res.max_p_minor_diff = round(max(dp), 4)
        res.max_age_diff = round(max(da), 3)
    res.failures = [
        f"chip {i}: P(minor) {a.p_minor:.3f} vs {b.p_minor:.3f}, age {a.age:.1f} vs {b.age:.1f}"
        for i, (a, b, p, g) in enumerate(zip(fp32, int8, dp, da, strict=True))
        if p > P_MINOR_TOL or g > AGE_TOL
    ]
    res.agrees = bool(dp) and not res.failures
    return res


def measure(
    variant: str | ModelSpec,
    images: dict[str, NDArray[np.uint8]],
    chips: Chips | None = None,
    *,
    threads: int | None = None,
) -> Agreement:
    """Run a variant and its FP32 model on the same benign inputs (images for a detector, face
    chips cut from them otherwise) and compare them by the rules above."""
    from heroes.models.detect import Detector
    from heroes.models.faces import AgeEstimator, FaceEmbedder

    spec = registry.get_spec(variant) if isinstance(variant, str) else variant
    if spec.fp32_model is None:
        raise ValueError(f"model {spec.name!r} is no variant (it names no fp32_model)")
    base = registry.get_spec(spec.fp32_model)
    kw: dict[str, Any] = {"device": "cpu", "threads": threads}
    tag = {"model": spec.name, "fp32_model": base.name}
    if spec.task == "detect":
        a_det, b_det = Detector(base, **kw), Detector(spec, **kw)
        ims = list(images.values())
        return compare_detections(
            a_det.detect(ims),
            b_det.detect(ims),
            score_threshold=a_det.score_threshold,
            face_threshold=a_det.face_threshold,
            names=list(images),
            **tag,
        )
    chips = chips if chips is not None else benign_chips(images.values(), EVALUATION_SEED)
    if spec.task == "face_embed":
        a_emb, b_emb = FaceEmbedder(base, **kw), FaceEmbedder(spec, **kw)
        return compare_embeddings(a_emb.embed(chips.identity), b_emb.embed(chips.identity), **tag)
    if spec.task == "age":
        a_age, b_age = AgeEstimator(base, **kw), AgeEstimator(spec, **kw)
        return compare_ages(a_age.estimate(chips.age), b_age.estimate(chips.age), **tag)
    raise ValueError(f"no agreement rule for task {spec.task!r}")


def evaluation_images() -> dict[str, NDArray[np.uint8]]:
    """The benign evaluation set: the sample photos and 2 seeded variants of each (seed 0, not
    the calibration seed)."""
    return benign_images(EVALUATION_SEED, 2, originals=True)


def int8_variants() -> list[ModelSpec]:
    return sorted(
        (s for s in registry.manifest_specs().values() if s.quantize), key=lambda s: s.name
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m heroes.models.int8", description=__doc__)
    ap.add_argument("command", choices=["calibrate", "measure"])
    ap.add_argument("models", nargs="*", help="INT8 variant names (default: all)")
    args = ap.parse_args(argv)
    variants = [registry.get_spec(m) for m in args.models] or int8_variants()
    if args.command == "calibrate":
        for spec in variants:
            assert spec.fp32_model is not None
            fp32 = registry.get_spec(spec.fp32_model)
            batches, about = calibration_batches(fp32)
            path = write_ranges(fp32.name, calibrate(fp32, batches), about)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{spec.name}: {path.name} ranges_sha256 = {digest!r}")
        return 0
    images = evaluation_images()
    chips = benign_chips(images.values(), EVALUATION_SEED)
    for spec in variants:
        print(json.dumps(measure(spec, images, chips).to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
