"""INT8 variants: they build from the FP32 models, load, agree where their manifests say so, and
are preferred only on CPU, only when agreeing and usable."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage.data as data

from heroes.models import int8, registry, runtime
from heroes.models.detect import Detection, Detector, ImageDetections
from heroes.models.registry import ChecksumError, ModelSpec

VARIANTS = {
    "nudenet-320n-int8": "nudenet-320n",
    "dlib-face-resnet-int8": "dlib-face-resnet",
    "age-v1-int8": "age-v1",
}


@pytest.fixture(scope="module")
def benign() -> dict[str, np.ndarray]:
    astronaut = data.astronaut()
    camera = np.stack([data.camera()] * 3, -1)
    return {
        "astronaut": astronaut,
        "astronaut/flip": np.ascontiguousarray(astronaut[:, ::-1]),
        "camera": camera,
        "camera/flip": np.ascontiguousarray(camera[:, ::-1]),
    }


@pytest.fixture(scope="module")
def chips(benign: dict[str, np.ndarray]) -> int8.Chips:
    found = int8.benign_chips(benign.values(), seed=3, jitter=2)
    assert len(found.identity) >= 8, "the benign photos give faces to compare on"
    return found


def test_each_variant_stands_for_its_fp32_model_with_its_licence_input_and_decoding() -> None:
    specs = registry.builtin_specs()
    for name, fp32_name in VARIANTS.items():
        spec, fp32 = specs[name], specs[fp32_name]
        assert spec.fp32_model == fp32_name and spec.task == fp32.task
        assert spec.licence == fp32.licence
        assert spec.input == fp32.input and spec.output == fp32.output
        assert spec.file.startswith("converted:") and spec.convert_from == f"model:{fp32_name}"
        assert isinstance(spec.params["agrees"], bool)
        assert {k: spec.params[k] for k in fp32.params} == fp32.params
        recipe = int8.Recipe.of(spec)
        # the shipped ranges are the ones the manifest names
        digest = hashlib.sha256(int8.ranges_path(recipe).read_bytes()).hexdigest()
        assert digest == recipe.ranges_sha256


def test_agreeing_variants_agree_with_fp32_on_benign_photos_and_chips(
    benign: dict[str, np.ndarray], chips: int8.Chips
) -> None:
    agreeing = [s for s in int8.int8_variants() if s.params.get("agrees") is True]
    assert agreeing, "at least one variant was measured to agree"
    for spec in agreeing:
        result = int8.measure(spec, benign, chips)
        assert result.agrees, (spec.name, result.failures)
        if spec.task == "face_embed":
            assert result.min_cosine is not None and result.min_cosine >= int8.COSINE_MIN


def test_face_embedding_variant_is_quantised_and_runs_in_int8(chips: int8.Chips) -> None:
    import onnx

    from heroes.models.faces import FaceEmbedder

    spec = registry.get_spec("dlib-face-resnet-int8")
    path = registry.resolve(spec)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    emb = FaceEmbedder(spec, device="cpu").embed(chips.identity[:4])
    assert emb.shape == (4, 128)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_detector_variant_builds_and_finds_the_astronauts_face_where_fp32_does(
    benign: dict[str, np.ndarray],
) -> None:
    image = benign["astronaut"]
    (a,) = Detector("nudenet-320n", device="cpu").detect([image])
    (b,) = Detector("nudenet-320n-int8", device="cpu").detect([image])
    fa, fb = max(a.faces, key=lambda f: f.score), max(b.faces, key=lambda f: f.score)
    assert int8.iou(fa.bbox, fb.bbox) >= int8.IOU_MIN
    # the copy keeps the FP32 file's own metadata (its licence among it) and names its ranges
    import onnx

    def meta(name: str) -> dict[str, str]:
        path = registry.resolve(registry.get_spec(name))
        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}

    fp32_meta, int8_meta = meta("nudenet-320n"), meta("nudenet-320n-int8")
    assert fp32_meta and fp32_meta.items() <= int8_meta.items()
    assert (
        int8_meta["heroes_int8_ranges_sha256"]
        == (registry.get_spec("nudenet-320n-int8").quantize["ranges_sha256"])
    )


def test_the_build_is_deterministic_and_refuses_ranges_that_fail_their_checksum(
    tmp_path: Path,
) -> None:
    spec = registry.get_spec("age-v1-int8")
    source = registry.resolve(registry.get_spec("age-v1"))
    one = int8.build(spec, source, tmp_path / "one.onnx")
    two = int8.build(spec, source, tmp_path / "two.onnx")
    assert one == two == hashlib.sha256((tmp_path / "one.onnx").read_bytes()).hexdigest()
    bad = replace(spec, quantize={**spec.quantize, "ranges_sha256": "0" * 64})
    with pytest.raises(ChecksumError):
        int8.build(bad, source, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert not list(tmp_path.glob(".bad.onnx.*")), "no partial file is left behind"


def test_workers_building_the_same_variant_at_once_do_not_trip_over_each_other(
    tmp_path: Path,
) -> None:
    """Every worker process of a pass builds a missing variant on first use; the quantiser's
    intermediate files must not be shared between them (one once read the other's, deleted)."""
    from concurrent.futures import ThreadPoolExecutor

    spec = registry.get_spec("age-v1-int8")
    source = tmp_path / "src" / "age.onnx"
    source.parent.mkdir()
    source.write_bytes(registry.resolve(registry.get_spec("age-v1")).read_bytes())
    with ThreadPoolExecutor(4) as pool:
        digests = list(pool.map(lambda _: int8.build(spec, source, tmp_path / "v.onnx"), range(4)))
    assert len(set(digests)) == 1
    assert hashlib.sha256((tmp_path / "v.onnx").read_bytes()).hexdigest() == digests[0]
    assert sorted(p.name for p in source.parent.iterdir()) == ["age.onnx"], "nothing beside it"


# --- agreement rules ---------------------------------------------------------------------------


def _dets(*items: tuple[str, float, tuple[float, float, float, float]]) -> ImageDetections:
    res = ImageDetections()
    for label, score, box in items:
        target = res.faces if label.startswith("FACE_") else res.detections
        target.append(Detection(label, score, box))
    return res


def test_detections_agree_only_when_matched_at_iou_and_scores_within_tolerance() -> None:
    box = (10.0, 10.0, 110.0, 110.0)
    near = (11.0, 10.0, 111.0, 110.0)  # IoU 0.98
    off = (20.0, 10.0, 120.0, 110.0)  # IoU 0.82
    kw = {"score_threshold": 0.2, "face_threshold": 0.3}
    ok = int8.compare_detections(
        [_dets(("FEET_COVERED", 0.6, box))], [_dets(("FEET_COVERED", 0.63, near))], **kw
    )
    assert ok.agrees and ok.min_iou == pytest.approx(0.9802, abs=1e-3)
    assert not int8.compare_detections(
        [_dets(("FEET_COVERED", 0.6, box))], [_dets(("FEET_COVERED", 0.6, off))], **kw
    ).agrees
    assert not int8.compare_detections(
        [_dets(("FEET_COVERED", 0.6, box))], [_dets(("FEET_COVERED", 0.66, box))], **kw
    ).agrees
    assert not int8.compare_detections(
        [_dets(("FEET_COVERED", 0.6, box))], [_dets(("BELLY_COVERED", 0.6, box))], **kw
    ).agrees
    # a detection just over its threshold may be missing on the other side
    assert int8.compare_detections([_dets(("FEET_COVERED", 0.23, box))], [_dets()], **kw).agrees
    # the face classes are one face; a changed label is counted, not a miss
    faces = int8.compare_detections(
        [_dets(("FACE_FEMALE", 0.8, box))], [_dets(("FACE_MALE", 0.79, box))], **kw
    )
    assert faces.agrees and faces.face_label_flips == 1
    moved = _dets()
    moved.nudity_score = 0.1
    assert not int8.compare_detections([_dets()], [moved], **kw).agrees


def test_embeddings_and_ages_agree_by_cosine_p_minor_and_years() -> None:
    from heroes.models.faces import AgeEstimate

    a = np.eye(3, dtype=np.float32)
    assert int8.compare_embeddings(a, a * 2).agrees
    b = a.copy()
    b[1] = [0.0, 0.98, 0.2]  # cosine 0.98
    res = int8.compare_embeddings(a, b)
    assert not res.agrees and res.failures == ["chip 1: cosine 0.9798"]
    x = [AgeEstimate(30.0, 0.1, (25.0, 35.0))]
    assert int8.compare_ages(x, [AgeEstimate(30.9, 0.14, (25.0, 35.0))]).agrees
    assert not int8.compare_ages(x, [AgeEstimate(31.2, 0.1, (25.0, 35.0))]).agrees
    assert not int8.compare_ages(x, [AgeEstimate(30.0, 0.16, (25.0, 35.0))]).agrees


# --- preferred_variant -------------------------------------------------------------------------


def _cpu_only(monkeypatch: pytest.MonkeyPatch, *, cuda: bool = False) -> None:
    have = ["CPUExecutionProvider"] + (["CUDAExecutionProvider"] if cuda else [])
    monkeypatch.setattr(runtime, "available_providers", lambda: have)
    monkeypatch.delenv("HEROES_DEVICE", raising=False)


def test_preferred_variant_is_the_agreeing_int8_copy_on_cpu_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cpu_only(monkeypatch)
    assert registry.get_spec("dlib-face-resnet-int8").params["agrees"] is True
    assert registry.preferred_variant("dlib-face-resnet", "cpu") == "dlib-face-resnet-int8"
    assert registry.preferred_variant("dlib-face-resnet", None) == "dlib-face-resnet-int8"
    assert registry.preferred_variant("dlib-face-resnet", "cpu", allow_int8=False) == (
        "dlib-face-resnet"
    )
    assert registry.preferred_variant("dlib-face-resnet", "cuda") == "dlib-face-resnet"
    assert registry.preferred_variant("dlib-face-resnet", "tensorrt") == "dlib-face-resnet"
    # models whose INT8 copy was measured not to agree, and models without one, stay as they are
    for name in ("nudenet-320n", "age-v1"):
        assert registry.get_spec(f"{name}-int8").params["agrees"] is False
        assert registry.preferred_variant(name, "cpu") == name
    assert registry.preferred_variant("scene-vlad", "cpu") == "scene-vlad"
    with pytest.raises(ValueError, match="unknown model"):
        registry.preferred_variant("nope", "cpu")


def test_no_device_means_cpu_only_without_a_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_only(monkeypatch, cuda=True)
    assert registry.preferred_variant("dlib-face-resnet", None) == "dlib-face-resnet"
    assert registry.preferred_variant("dlib-face-resnet", "cpu") == "dlib-face-resnet-int8"
    # the device setting (HEROES_DEVICE) reaches the choice through the settings, passed down
    _cpu_only(monkeypatch)
    monkeypatch.setenv("HEROES_DEVICE", "cuda")
    from heroes.config import Settings

    assert registry.preferred_variant("dlib-face-resnet", Settings().device) == "dlib-face-resnet"


def _user_models(root: Path, *, agrees: bool) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["out"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (root / "tiny.onnx").write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(root / "tiny.onnx"))
    (root / "tiny.toml").write_text(
        'name = "tiny"\ntask = "test"\nfile = "tiny.onnx"\nlicence = "CC0-1.0"\n'
        '[input]\nname = "images"\nsize = [4, 4]\n[params]\nkeep = 1\n'
    )
    (root / "tiny-int8.toml").write_text(
        'name = "tiny-int8"\ntask = "test"\nfile = "converted:tiny-int8.onnx"\n'
        'convert_from = "model:tiny"\nfp32_model = "tiny"\nlicence = "CC0-1.0"\n'
        '[quantize]\nranges = "ranges.json"\nranges_sha256 = "0"\n'
        f"[params]\nagrees = {str(agrees).lower()}\n"
    )


def test_a_variant_takes_input_output_and_params_from_its_fp32_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path))
    _user_models(tmp_path, agrees=True)
    spec: ModelSpec = registry.get_spec("tiny-int8")
    assert spec.input.size == (4, 4) and spec.params == {"keep": 1, "agrees": True}
    assert [s.name for s in registry.variants_of("tiny")] == ["tiny-int8"]


def test_preferred_variant_needs_a_usable_variant_marked_as_agreeing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cpu_only(monkeypatch)
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path))
    _user_models(tmp_path, agrees=False)
    assert registry.preferred_variant("tiny", "cpu") == "tiny"
    _user_models(tmp_path, agrees=True)
    assert registry.status(registry.get_spec("tiny-int8")).usable
    assert registry.preferred_variant("tiny", "cpu") == "tiny-int8"
    (tmp_path / "tiny.onnx").unlink()  # the FP32 model it is made from is gone
    st = registry.status(registry.get_spec("tiny-int8"))
    assert not st.usable and "made from tiny" in st.reason
    assert registry.preferred_variant("tiny", "cpu") == "tiny"
