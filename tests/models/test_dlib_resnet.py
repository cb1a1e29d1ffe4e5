"""dlib's face-recognition ResNet in ONNX: the parser, the graph, and agreement with dlib itself."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from skimage import data as skdata

from heroes.models.dlib_resnet import (
    INPUT_MEAN,
    INPUT_NAME,
    INPUT_SCALE,
    OUTPUT_NAME,
    DlibFormatError,
    Layer,
    _Reader,
    build_onnx,
    convert,
    preprocess,
    read_dlib_net,
)


def shipped_model(name: str) -> Path:
    """A file of ``face_recognition_models``, located without importing the package

    (its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    assert spec is not None and spec.submodule_search_locations, (
        "face_recognition_models is not installed (make install puts it in)"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    assert path.is_file(), f"face_recognition_models lacks {name}"
    return path


DLIB_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


# --- a test-side writer for dlib's serialisation, from the rules in dlib/serialize.h -----------


def enc_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def enc_float(value: float, digits: int = 24) -> bytes:
    """dlib's ``float_details``: frexp mantissa as a ``digits``-bit integer, zero bytes dropped."""
    if math.isnan(value):
        return enc_int(0) + enc_int(32002)
    if math.isinf(value):
        return enc_int(0) + enc_int(32000 if value > 0 else 32001)
    fraction, exp = math.frexp(value)
    mantissa, exponent = int(fraction * (1 << digits)), exp - digits
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_tensor(values: NDArray[np.float32], shape: tuple[int, int, int, int]) -> bytes:
    head = enc_int(2) + b"".join(enc_int(d) for d in shape)
    return head + np.asarray(values, dtype="<f4").reshape(-1).tobytes()


def enc_alias(*shape: int) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in shape)


EMPTY_TENSOR = enc_tensor(np.zeros(0, np.float32), (0, 0, 0, 0))
LAYER_STATE = b"110" + EMPTY_TENSOR * 3
MULTIPLIERS = enc_float(1.0, 53) * 3 + enc_float(0.0, 53)


def enc_con(w: NDArray[np.float32], b: NDArray[np.float32], stride: int, pad: int) -> bytes:
    f, c, kh, kw = w.shape
    params = np.concatenate([w.reshape(-1), b])
    return (
        enc_str("con_4")
        + enc_tensor(params, (params.size, 1, 1, 1))
        + b"".join(enc_int(v) for v in (f, kh, kw, stride, stride, pad, pad))
        + enc_alias(f, c, kh, kw)
        + enc_alias(1, f, 1, 1)
        + MULTIPLIERS
    )


def enc_affine(gamma: NDArray[np.float32], beta: NDArray[np.float32]) -> bytes:
    params = np.concatenate([gamma, beta])
    k = gamma.size
    return (
        enc_str("affine_")
        + enc_tensor(params, (params.size, 1, 1, 1))
        + enc_alias(1, k, 1, 1)
        + enc_alias(1, k, 1, 1)
        + enc_int(0)
    )


def enc_avg_pool(size: int, stride: int) -> bytes:
    fields = (size, size, stride, stride, 0, 0)
    return enc_str("avg_pool_2") + b"".join(enc_int(v) for v in fields)


def enc_fc_no_bias(w: NDArray[np.float32]) -> bytes:
    n_in, n_out = w.shape
    return (
        enc_str("fc_2")
        + enc_int(n_out)
        + enc_int(n_in)
        + enc_tensor(w, (n_in, n_out, 1, 1))
        + enc_alias(n_in, n_out, 1, 1)
        + enc_alias(1, n_out, 1, 1)
        + enc_int(1)
        + MULTIPLIERS
    )


# --- numpy reference of dlib's layer semantics for the tiny network -----------------------------


def ref_conv(
    x: NDArray[np.float64], w: NDArray[np.float64], b: NDArray[np.float64], stride: int, pad: int
) -> NDArray[np.float64]:
    c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = 1 + (h + 2 * pad - kh) // stride, 1 + (wd + 2 * pad - kw) // stride
    out = np.empty((f, oh, ow))
    for r in range(oh):
        for q in range(ow):
            patch = xp[:, r * stride : r * stride + kh, q * stride : q * stride + kw]
            out[:, r, q] = np.tensordot(w, patch, axes=3) + b
    return out


def ref_add_prev(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.zeros(tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True)))
    out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
    return out


@pytest.fixture(scope="module")
def tiny() -> dict[str, NDArray[np.float32]]:
    rng = np.random.default_rng(7)
    return {
        "w1": rng.normal(size=(3, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=3).astype(np.float32),
        "g1": rng.uniform(0.5, 2, size=3).astype(np.float32),
        "s1": rng.normal(size=3).astype(np.float32),
        "w2": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b2": rng.normal(size=4).astype(np.float32),
        "g2": rng.uniform(0.5, 2, size=4).astype(np.float32),
        "s2": rng.normal(size=4).astype(np.float32),
        "fc": rng.normal(size=(36, 5)).astype(np.float32),
    }


def tiny_net_bytes(p: dict[str, NDArray[np.float32]]) -> bytes:
    """``fc<relu<affine<add_prev2<avg_pool<skip1<tag2<con_s2<tag1<relu<affine<con<input>>>>>>>>>>>>``

    on a 6x6 input: the stride-2 branch is 4x2x2 and the pooled skip 3x3x3, so ``add_prev``
    must pad the branch spatially and the skip in channels.
    """
    headers = [2, 2, 2, 2, 2, 1, 1, 2, 1, 2, 2, 3]
    means = (10.5, 20.25, 30.0)
    body = [
        enc_str("input_rgb_image_sized") + b"".join(enc_float(m) for m in means),
        enc_int(6) + enc_int(6),
        enc_con(p["w1"], p["b1"], 1, 1) + LAYER_STATE + enc_int(1),
        enc_affine(p["g1"], p["s1"]) + LAYER_STATE,
        enc_str("relu_") + LAYER_STATE,
        enc_con(p["w2"], p["b2"], 2, 0) + LAYER_STATE,
        enc_avg_pool(2, 2) + LAYER_STATE,
        enc_str("add_prev_") + LAYER_STATE,
        enc_affine(p["g2"], p["s2"]) + LAYER_STATE,
        enc_str("relu_") + LAYER_STATE,
        enc_fc_no_bias(p["fc"]) + LAYER_STATE,
    ]
    loss = enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)
    return enc_int(1) + loss + b"".join(enc_int(h) for h in headers) + b"".join(body)


def tiny_reference(
    p: dict[str, NDArray[np.float32]], x: NDArray[np.float32]
) -> NDArray[np.float64]:
    q = {k: v.astype(np.float64) for k, v in p.items()}
    out = []
    for sample in x.astype(np.float64):
        y = ref_conv(sample, q["w1"], q["b1"], 1, 1)
        y = np.maximum(y * q["g1"][:, None, None] + q["s1"][:, None, None], 0)
        branch = ref_conv(y, q["w2"], q["b2"], 2, 0)
        pooled = y[:, :6, :6].reshape(3, 3, 2, 3, 2).mean(axis=(2, 4))
        z = ref_add_prev(pooled, branch)
        z = np.maximum(z * q["g2"][:, None, None] + q["s2"][:, None, None], 0)
        out.append(z.reshape(-1) @ q["fc"])
    return np.array(out)


def run_onnx(model: onnx.ModelProto, x: NDArray[np.float32]) -> NDArray[np.float32]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


# --- the serialisation primitives in isolation ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x96", 150),
        (b"\x81\x1c", -28),
        (b"\x02\x80\x12", 0x1280),
        (b"\x82\x00\x01", -256),
        (b"\x08" + (2**63 - 1).to_bytes(8, "little"), 2**63 - 1),
    ],
)
def test_integers_are_a_control_byte_then_little_endian_magnitude(raw: bytes, value: int) -> None:
    r = _Reader(raw)
    assert r.int() == value
    assert r.at_end
    assert enc_int(value) == raw


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x03\x0a\xd7\xa3\x81\x1c", np.float32(0.04)),
        (b"\x03\x62\x90\xf5\x81\x11", np.float32(122.782)),
        (b"\x01\x10\x81\x04", 1.0),
        (b"\x01\x00\x01\x0b", 0.0),
        (b"\x81\x03\x01\x00", -3.0),
    ],
)
def test_floats_are_a_mantissa_and_a_power_of_two(raw: bytes, value: float) -> None:
    r = _Reader(raw)
    assert r.float() == value
    assert r.at_end


def test_float_exponents_32000_to_32002_stand_for_infinities_and_nan() -> None:
    r = _Reader(enc_float(math.inf) + enc_float(-math.inf) + enc_float(math.nan))
    assert r.float() == math.inf
    assert r.float() == -math.inf
    assert math.isnan(r.float())


def test_every_float32_survives_dlibs_float_encoding() -> None:
    values = np.random.default_rng(3).normal(scale=1e3, size=200).astype(np.float32)
    raw = b"".join(enc_float(float(v)) for v in values)
    r = _Reader(raw)
    assert all(r.float() == v for v in values)
    assert r.at_end


def test_tensors_come_in_raw_float32_or_as_encoded_floats() -> None:
    values = np.array([1.5, -2.25, 0.0, 3e-3, 7.0, 8.5], dtype=np.float32)
    v2 = enc_tensor(values, (1, 2, 3, 1))
    v1 = enc_int(1) + b"".join(enc_int(d) for d in (1, 2, 3, 1))
    v1 += b"".join(enc_float(float(v)) for v in values)
    for raw in (v2, v1):
        r = _Reader(raw)
        np.testing.assert_array_equal(r.tensor(), values.reshape(1, 2, 3, 1))
        assert r.at_end


def test_bools_and_strings_decode_as_dlib_writes_them() -> None:
    r = _Reader(b"10" + enc_str("con_4"))
    assert r.bool() is True
    assert r.bool() is False
    assert r.string() == "con_4"


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        (b"\x31", "int"),
        (b"0.5 ", "float"),
        (b"\x02\x01", "int"),
        (b"\x01\x02\x01\x01\x01\x01\x01\x01\x01\x02\x00\x00", "tensor"),
        (b"x", "bool"),
    ],
)
def test_malformed_bytes_raise_a_format_error(raw: bytes, read: str) -> None:
    with pytest.raises(DlibFormatError):
        getattr(_Reader(raw), read)()


# --- a hand-built network through parser and graph ----------------------------------------------


def test_a_hand_built_network_parses_into_input_to_output_layers(
    tmp_path: Path, tiny: dict[str, NDArray[np.float32]]
) -> None:
    path = tmp_path / "tiny.dat"
    path.write_bytes(tiny_net_bytes(tiny))
    layers = read_dlib_net(path)
    assert [(x.kind, x.tag) for x in layers] == [
        ("input_rgb_image_sized", None),
        ("con", None),
        ("affine", None),
        ("relu", None),
        ("tag", 1),
        ("con", None),
        ("tag", 2),
        ("skip", 1),
        ("avg_pool", None),
        ("add_prev", 2),
        ("affine", None),
        ("relu", None),
        ("fc", None),
        ("loss_metric", None),
    ]
    np.testing.assert_array_equal(layers[1].arrays["filters"], tiny["w1"])
    np.testing.assert_array_equal(layers[5].arrays["biases"], tiny["b2"])
    np.testing.assert_array_equal(layers[12].arrays["weights"], tiny["fc"])
    assert "biases" not in layers[12].arrays
    assert layers[0].attrs["avg_green"] == 20.25


def test_a_hand_built_network_runs_with_dlibs_add_prev_zero_padding(
    tmp_path: Path, tiny: dict[str, NDArray[np.float32]]
) -> None:
    path = tmp_path / "tiny.dat"
    path.write_bytes(tiny_net_bytes(tiny))
    model = build_onnx(read_dlib_net(path))
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(11).normal(size=(3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model, x), tiny_reference(tiny, x), rtol=1e-4, atol=1e-4)


def test_newer_layer_versions_with_fused_relu_and_disabled_layers_convert(tmp_path: Path) -> None:
    """``con_6`` (no bias, fused relu), disabled ``affine_2``/``relu_2``, ``fc_3`` with bias:

    what dlib writes after ``fuse_layers`` or for bias-free convolutions.
    """
    rng = np.random.default_rng(5)
    w = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    fc_w = rng.normal(size=(32, 3)).astype(np.float32)
    fc_b = rng.normal(size=3).astype(np.float32)
    con6 = (
        enc_str("con_6")
        + enc_tensor(w, (w.size, 1, 1, 1))
        + b"".join(enc_int(v) for v in (2, 3, 3, 1, 1, 1, 1))
        + enc_alias(2, 3, 3, 3)
        + enc_alias(0, 0, 0, 0)
        + MULTIPLIERS
        + b"01"
    )
    affine2_off = enc_str("affine_2") + EMPTY_TENSOR + enc_alias(1, 2, 1, 1) * 2 + enc_int(0) + b"1"
    fc3 = (
        enc_str("fc_3")
        + enc_int(3)
        + enc_int(32)
        + enc_tensor(np.concatenate([fc_w.reshape(-1), fc_b]), (33, 3, 1, 1))
        + enc_alias(32, 3, 1, 1)
        + enc_alias(1, 3, 1, 1)
        + enc_int(0)
        + MULTIPLIERS
        + b"1"
    )
    raw = (
        enc_int(1)
        + enc_str("loss_metric_2")
        + enc_float(0.04) * 2
        + b"".join(enc_int(h) for h in (2, 2, 2, 3))
        + enc_str("input_rgb_image_sized")
        + enc_float(0.0) * 3
        + enc_int(4) * 2
        + con6
        + LAYER_STATE
        + enc_int(1)
        + affine2_off
        + LAYER_STATE
        + enc_str("relu_2")
        + b"1"
        + LAYER_STATE
        + fc3
        + LAYER_STATE
    )
    path = tmp_path / "fused.dat"
    path.write_bytes(raw)
    layers = read_dlib_net(path)
    assert [x.kind for x in layers] == [
        "input_rgb_image_sized", "con", "affine", "relu", "fc", "loss_metric"
    ]  # fmt: skip
    assert layers[1].attrs["use_relu"] and not layers[1].attrs["use_bias"]
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    conv = np.stack([ref_conv(v, w.astype(np.float64), np.zeros(2), 1, 1) for v in x])
    expected = np.maximum(conv, 0).reshape(2, -1) @ fc_w + fc_b
    np.testing.assert_allclose(run_onnx(build_onnx(layers), x), expected, rtol=1e-4, atol=1e-4)


def test_trailing_or_missing_bytes_are_rejected(
    tmp_path: Path, tiny: dict[str, NDArray[np.float32]]
) -> None:
    raw = tiny_net_bytes(tiny)
    for name, blob in (("long.dat", raw + b"\x00"), ("short.dat", raw[:-1])):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DlibFormatError):
            read_dlib_net(tmp_path / name)


def test_preprocess_subtracts_dlibs_means_and_divides_by_256_in_planar_rgb() -> None:
    chip = np.zeros((1, 150, 150, 3), np.uint8)
    chip[0, 5, 7] = (255, 128, 0)
    x = preprocess(chip)
    assert x.shape == (1, 3, 150, 150)
    assert x.dtype == np.float32
    mean = np.float32(INPUT_MEAN)
    expected = (np.float32([255, 128, 0]) - mean) * np.float32(INPUT_SCALE)
    np.testing.assert_array_equal(x[0, :, 5, 7], expected)
    np.testing.assert_array_equal(x[0, :, 0, 0], -mean * np.float32(INPUT_SCALE))
    with pytest.raises(ValueError):
        preprocess(chip[0])


# --- the shipped model against dlib --------------------------------------------------------------


@pytest.fixture(scope="module")
def dat() -> Path:
    return shipped_model(DLIB_MODEL)


@pytest.fixture(scope="module")
def dlib() -> ModuleType:
    import dlib

    return dlib


@pytest.fixture(scope="module")
def converted(dat: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("onnx") / "dlib_face_resnet.onnx"
    return path, convert(dat, path)


@pytest.fixture(scope="module")
def session(converted: tuple[Path, str]) -> ort.InferenceSession:
    return ort.InferenceSession(str(converted[0]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def recogniser(dlib: ModuleType, dat: Path) -> Any:
    return dlib.face_recognition_model_v1(str(dat))


@pytest.fixture(scope="module")
def astronaut_face(dlib: ModuleType) -> tuple[NDArray[np.uint8], Any]:
    """The astronaut photo and the 5-point landmarks of the face dlib's HOG detector finds."""
    img = skdata.astronaut()
    boxes, scores, _ = dlib.get_frontal_face_detector().run(img, 1)
    box = boxes[int(np.argmax(scores))]
    assert box.bottom() < img.shape[0] // 2
    predictor = dlib.shape_predictor(str(shipped_model("shape_predictor_5_face_landmarks.dat")))
    return img, predictor(img, box)


def crop(img: NDArray[np.uint8], top: int, left: int) -> NDArray[np.uint8]:
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[top : top + 150, left : left + 150, :3])


@pytest.fixture(scope="module")
def chips(
    dlib: ModuleType, astronaut_face: tuple[NDArray[np.uint8], Any]
) -> dict[str, NDArray[np.uint8]]:
    img, shape = astronaut_face
    rng = np.random.default_rng(0)
    return {
        "astronaut_face": dlib.get_face_chip(img, shape, size=150, padding=0.25),
        "coffee": crop(skdata.coffee(), 100, 200),
        "chelsea": crop(skdata.chelsea(), 50, 100),
        "camera": crop(skdata.camera(), 60, 180),
        "rocket": crop(skdata.rocket(), 200, 250),
        "astronaut_flag": crop(img, 300, 50),
        "noise": rng.integers(0, 256, (150, 150, 3), dtype=np.uint8),
        "grey": np.full((150, 150, 3), 77, np.uint8),
    }


@pytest.fixture(scope="module")
def dlib_descriptors(
    recogniser: Any, chips: dict[str, NDArray[np.uint8]]
) -> dict[str, NDArray[np.float64]]:
    return {k: np.array(recogniser.compute_face_descriptor(v)) for k, v in chips.items()}


def test_the_shipped_model_parses_into_dlibs_face_resnet(dat: Path) -> None:
    layers = read_dlib_net(dat)
    kinds = [x.kind for x in layers]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {
        "input_rgb_image_sized": 1, "con": 29, "affine": 29, "relu": 29, "max_pool": 1,
        "tag": 18, "skip": 4, "avg_pool": 5, "add_prev": 14, "fc": 1, "loss_metric": 1,
    }  # fmt: skip
    assert tuple(np.float32(layers[0].attrs[k]) for k in ("avg_red", "avg_green", "avg_blue")) == (
        tuple(np.float32(INPUT_MEAN))
    )
    for con in (x for x in layers if x.kind == "con"):
        stride, pad, size = con.attrs["stride_y"], con.attrs["padding_y"], con.attrs["nr"]
        assert pad == (size // 2 if stride == 1 else 0)
    assert layers[-2].arrays["weights"].shape == (256, 128)
    assert "biases" not in layers[-2].arrays


def test_conversion_writes_a_checked_model_with_a_dynamic_batch(
    converted: tuple[Path, str],
) -> None:
    path, sha = converted
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    assert in_dims == ["N", 3, 150, 150]
    assert out_dims == ["N", 128]


def test_conversion_is_deterministic(
    dat: Path, converted: tuple[Path, str], tmp_path: Path
) -> None:
    assert convert(dat, tmp_path / "again.onnx") == converted[1]


def test_the_aligned_chip_gives_dlibs_full_image_descriptor(
    recogniser: Any,
    astronaut_face: tuple[NDArray[np.uint8], Any],
    dlib_descriptors: dict[str, NDArray[np.float64]],
) -> None:
    img, shape = astronaut_face
    full = np.array(recogniser.compute_face_descriptor(img, shape))
    np.testing.assert_allclose(dlib_descriptors["astronaut_face"], full, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    ["astronaut_face", "coffee", "chelsea", "camera", "rocket", "astronaut_flag", "noise", "grey"],
)
def test_onnx_runtime_reproduces_dlibs_descriptor(
    name: str,
    session: ort.InferenceSession,
    chips: dict[str, NDArray[np.uint8]],
    dlib_descriptors: dict[str, NDArray[np.float64]],
) -> None:
    expected = dlib_descriptors[name]
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: preprocess(chips[name][None])})[0]
    cosine = float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine >= 0.999
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_descriptors_are_raw_fc_outputs_not_unit_vectors(
    dlib_descriptors: dict[str, NDArray[np.float64]],
) -> None:
    norms = [np.linalg.norm(v) for v in dlib_descriptors.values()]
    assert max(abs(n - 1) for n in norms) > 0.1


def test_a_batch_of_eight_equals_eight_single_runs(
    session: ort.InferenceSession, chips: dict[str, NDArray[np.uint8]]
) -> None:
    batch = preprocess(np.stack(list(chips.values())))
    assert batch.shape[0] == 8
    together = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    alone = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[None]})[0] for x in batch])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_build_onnx_rejects_a_network_without_a_sized_input() -> None:
    with pytest.raises(ValueError):
        build_onnx([Layer("relu", "relu_")])
    with pytest.raises(ValueError):
        build_onnx([Layer("input_rgb_image_sized", attrs={"nr": 150, "nc": 150})], opset=9)
