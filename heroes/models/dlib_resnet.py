"""dlib's 128-d face-recognition ResNet, read from dlib's own serialisation and rebuilt in ONNX.

``dlib.face_recognition_model_v1`` runs one face at a time on one CPU core. The same weights as
an ONNX graph run batched on ONNX Runtime (CPU or GPU), which is what triage of large seizures
needs. No dlib code is involved in the conversion: the ``.dat`` file is decoded here, so the
converter runs wherever numpy and onnx do.

Facts about dlib's format that this module relies on (all checked against the shipped file and
against dlib's own forward pass in the tests):

* Integers are a control byte followed by that many little-endian magnitude bytes; the low
  nibble of the control byte is the byte count and bit 0x80 the sign. Bits 0x70 are always
  clear, which is also how dlib tells its binary floats from its older ASCII ones.
* Scalar floats and doubles are a pair of integers ``(mantissa, exponent)`` worth
  ``mantissa * 2**exponent`` (dlib's ``float_details``); exponents 32000, 32001 and 32002 stand
  for +inf, -inf and NaN. Booleans are the ASCII characters ``'0'`` / ``'1'``. Strings are a
  length followed by raw bytes.
* Tensors are a version, then ``num_samples, k, nr, nc``, then the values (version 2: raw
  little-endian float32; version 1: one encoded float each). A layer keeps all its parameters
  in one tensor and records ``alias_tensor`` shapes (version 1, four dimensions, no offset):
  the aliases lie back to back from offset 0, filters or weights or gamma first.
* A network is serialised outside-in: every wrapper writes its version, then its subnetwork,
  and only then its own layer, so the layers come out input-to-output. ``add_layer`` writes
  version 2 and after its layer three booleans and three (empty) scratch tensors; the one that
  holds the input layer writes version 3, the input layer first, and an extra sample expansion
  factor (1) at the end. Tag and skip wrappers write version 1 and nothing else: neither their
  kind nor their tag id is in the file.
* ``con`` and ``max_pool``/``avg_pool`` default to padding ``k // 2`` only when the stride is 1
  and to no padding otherwise; the padding used is stored per layer and copied as is. Output
  sizes round down. Pooling ignores padded cells (``-inf`` for max, excluded from the mean).
* ``add_prev`` gives a tensor as large as the larger operand in every dimension and treats
  cells missing from the smaller one as zero: missing channels and the bottom/right border.
  In this network the last downsampling blocks add a 4x4 pooled skip to a 3x3 convolved
  branch, so this matters.
* ``loss_metric`` returns the ``fc`` output as is; dlib does not L2-normalise descriptors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

INPUT_MEAN: tuple[float, float, float] = (122.782, 117.001, 104.298)
"""Per-channel means (R, G, B) that dlib's ``input_rgb_image_sized`` subtracts."""
INPUT_SCALE: float = 1 / 256
"""dlib divides by 256 after subtracting the mean (not by a standard deviation)."""
INPUT_SIZE = 150
EMBEDDING_DIM = 128
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002
_CONV_MODE = 0
_FC_NO_BIAS = 1

Scalar = int | float | bool


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's serialisation of a supported network."""


@dataclass(frozen=True)
class Layer:
    """One layer of a dlib network, as serialised, with weights as numpy arrays.

    ``kind`` is the dlib layer family (``input_rgb_image_sized``, ``con``, ``affine``,
    ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``, ``tag``, ``skip``,
    ``loss_metric``); ``version`` is the version string dlib wrote for it (empty for tag and
    skip, which write none). ``tag`` is the tag id for ``tag``, ``skip`` and ``add_prev``.
    """

    kind: str
    version: str = ""
    attrs: Mapping[str, Scalar] = field(default_factory=dict)
    arrays: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)
    tag: int | None = None


class _Reader:
    """Sequential decoder for dlib's ``serialize`` primitives over an in-memory buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise DlibFormatError(f"truncated at byte {self.pos}: wanted {n} more bytes")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    @property
    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def int(self) -> int:
        control = self._take(1)[0]
        if control & 0x70:
            raise DlibFormatError(f"byte {self.pos - 1}: {control:#04x} is no integer control byte")
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise DlibFormatError(f"byte {self.pos - 1}: integer of {size} bytes")
        magnitude = int.from_bytes(self._take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise DlibFormatError(f"byte {self.pos}: ASCII float from an old dlib is unsupported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == _FLOAT_INF:
            return float("inf")
        if exponent == _FLOAT_NINF:
            return float("-inf")
        if exponent == _FLOAT_NAN:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"byte {self.pos - 1}: {char!r} is no serialised bool")
        return char == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def tensor(self) -> NDArray[np.float32]:
        version = self.int()
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:
            values = np.frombuffer(self._take(4 * count), dtype="<f4")
        elif version == 1:
            values = np.array([self.float() for _ in range(count)], dtype=np.float64)
        else:
            raise DlibFormatError(f"byte {self.pos}: unknown tensor version {version}")
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"byte {self.pos}: unknown alias_tensor version {version}")
        ns, k, nr, nc = (self.int() for _ in range(4))
        return ns, k, nr, nc


def _split(params: NDArray[np.float32], *shapes: tuple[int, ...]) -> list[NDArray[np.float32]]:
    """Cut a layer's parameter tensor into consecutive views of ``shapes``.

    dlib does not store alias offsets: each layer applies its aliases back to back from 0.
    """
    flat = params.reshape(-1)
    out, offset = [], 0
    for shape in shapes:
        count = int(np.prod(shape))
        if offset + count > flat.size:
            raise DlibFormatError(f"alias {shape} at {offset} outside {flat.size} parameters")
        out.append(flat[offset : offset + count].reshape(shape).copy())
        offset += count
    return out


def _read_input(r: _Reader) -> Layer:
    version = r.string()
    if version not in ("input_rgb_image_sized", "input_rgb_image"):
        raise DlibFormatError(f"unsupported input layer {version!r}")
    attrs: dict[str, Scalar] = {"avg_red": r.float(), "avg_green": r.float(), "avg_blue": r.float()}
    if version == "input_rgb_image_sized":
        attrs["nr"] = r.int()
        attrs["nc"] = r.int()
    return Layer(version, version, attrs)


def _read_pool(r: _Reader, version: str) -> Layer:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return Layer(version.removesuffix("_2"), version, {k: r.int() for k in keys})


def _read_con(r: _Reader, version: str) -> Layer:
    params = r.tensor()
    keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    attrs: dict[str, Scalar] = {k: r.int() for k in keys}
    filters_shape, biases_shape = r.alias(), r.alias()
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        attrs[name] = r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    attrs["use_bias"] = use_bias
    attrs["use_relu"] = r.bool() if version == "con_6" else False
    filters, biases = _split(params, filters_shape, biases_shape if use_bias else (0,))
    arrays = {"filters": filters}
    if use_bias:
        arrays["biases"] = biases.reshape(-1)
    return Layer("con", version, attrs, arrays)


def _read_affine(r: _Reader, version: str) -> Layer:
    params = r.tensor()
    gamma_shape, beta_shape = r.alias(), r.alias()
    attrs: dict[str, Scalar] = {"mode": r.int()}
    attrs["disabled"] = r.bool() if version == "affine_2" else False
    if attrs["disabled"]:
        return Layer("affine", version, attrs)
    gamma, beta = _split(params, gamma_shape, beta_shape)
    return Layer("affine", version, attrs, {"gamma": gamma, "beta": beta})


def _read_fc(r: _Reader, version: str) -> Layer:
    attrs: dict[str, Scalar] = {"num_outputs": r.int(), "num_inputs": r.int()}
    params = r.tensor()
    weights_shape, biases_shape = r.alias(), r.alias()
    attrs["bias_mode"] = r.int()
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        attrs[name] = r.float()
    if version == "fc_3":
        attrs["use_bias"] = r.bool()
    has_bias = attrs["bias_mode"] != _FC_NO_BIAS and bool(attrs.get("use_bias", True))
    weights, biases = _split(params, weights_shape, biases_shape if has_bias else (0,))
    arrays = {"weights": weights.reshape(int(attrs["num_inputs"]), int(attrs["num_outputs"]))}
    if has_bias:
        arrays["biases"] = biases.reshape(-1)
    return Layer("fc", version, attrs, arrays)


def _read_loss(r: _Reader) -> Layer:
    version = r.string()
    if version == "loss_metric_":
        return Layer("loss_metric", version, {"margin": r.float()})
    if version == "loss_metric_2":
        return Layer("loss_metric", version, {"margin": r.float(), "dist_thresh": r.float()})
    raise DlibFormatError(f"unsupported loss layer {version!r}")


def _read_details(r: _Reader) -> Layer:
    version = r.string()
    if version in ("con_4", "con_5", "con_6"):
        return _read_con(r, version)
    if version in ("affine_", "affine_2"):
        return _read_affine(r, version)
    if version == "relu_":
        return Layer("relu", version, {"disabled": False})
    if version == "relu_2":
        return Layer("relu", version, {"disabled": r.bool()})
    if version in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, version)
    if version == "add_prev_":
        return Layer("add_prev", version)
    if version in ("fc_2", "fc_3"):
        return _read_fc(r, version)
    raise DlibFormatError(f"byte {r.pos}: unsupported layer {version!r}")


def _skip_layer_state(r: _Reader) -> None:
    """Consume what ``add_layer`` stores after its layer: flags and training scratch tensors."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def _resolve_tags(layers: list[Layer]) -> list[Layer]:
    """Give tag/skip wrappers their meaning, which dlib does not serialise.

    The files come from dlib's ``residual`` (``add_prev1<block<tag1<x>>>``) and
    ``residual_down`` (``add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>``) templates: a lone
    wrapper is ``tag1``; two in a row are ``tag2`` followed by ``skip1``; ``add_prev`` adds the
    nearest tag below it. Anything else is rejected rather than guessed.
    """
    out: list[Layer] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind != "wrapper":
            if layer.kind == "add_prev":
                tags = [x.tag for x in reversed(out) if x.kind == "tag"]
                if not tags:
                    raise DlibFormatError(f"layer {i}: add_prev without a tag below it")
                layer = Layer("add_prev", layer.version, tag=tags[0])
            out.append(layer)
            i += 1
            continue
        run = 1
        while i + run < len(layers) and layers[i + run].kind == "wrapper":
            run += 1
        if run == 1:
            out.append(Layer("tag", tag=1))
        elif run == 2:
            out += [Layer("tag", tag=2), Layer("skip", tag=1)]
        else:
            raise DlibFormatError(f"layer {i}: {run} tag/skip wrappers in a row")
        i += run
    return out


def read_dlib_net(path: Path) -> list[Layer]:
    """Parse a serialised dlib ``loss_metric`` network into layers, input first, loss last.

    Reads the whole file and fails unless every byte is accounted for, so a format
    misunderstanding cannot pass silently as plausible-looking weights.
    """
    r = _Reader(Path(path).read_bytes())
    if (version := r.int()) != 1:
        raise DlibFormatError(f"unsupported add_loss_layer version {version}")
    loss = _read_loss(r)
    headers: list[int] = []
    while True:
        version = r.int()
        if version not in (1, 2, 3):
            raise DlibFormatError(f"byte {r.pos}: unknown wrapper version {version}")
        headers.append(version)
        if version == 3:
            break
    layers = [_read_input(r)]
    for version in reversed(headers):
        if version == 1:
            layers.append(Layer("wrapper"))
            continue
        layers.append(_read_details(r))
        _skip_layer_state(r)
        if version == 3 and (factor := r.int()) != 1:
            raise DlibFormatError(f"sample expansion factor {factor}, expected 1")
    if not r.at_end:
        raise DlibFormatError(f"{len(r.data) - r.pos} unread bytes after the network")
    return [*_resolve_tags(layers), loss]


class _Graph:
    """Accumulates ONNX nodes and initialisers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def const(self, name: str, value: NDArray[np.generic]) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name


Shape = tuple[int, int, int]


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - kernel) // stride


def _pad_to(g: _Graph, x: str, shape: Shape, target: Shape, name: str) -> str:
    if shape == target:
        return x
    extra = [0, 0, 0, 0, 0, *(t - s for s, t in zip(shape, target, strict=True))]
    return g.node("Pad", [x, g.const(f"{name}_pads", np.array(extra, np.int64))], name)


def _affine_arrays(layer: Layer, shape: Shape) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``gamma`` and ``beta`` as [1,C,H,W]-broadcastable arrays."""
    gamma = layer.arrays["gamma"].astype(np.float64)
    beta = layer.arrays["beta"].astype(np.float64)
    if layer.attrs["mode"] == _CONV_MODE:
        return gamma.reshape(1, shape[0], 1, 1), beta.reshape(1, shape[0], 1, 1)
    return gamma.reshape(1, *shape), beta.reshape(1, *shape)


def build_onnx(layers: Sequence[Layer], *, opset: int = 17) -> onnx.ModelProto:
    """Rebuild the parsed network as an ONNX graph ``images [N,3,H,W] -> embeddings [N,D]``.

    Each ``affine`` that directly follows a ``con`` is folded into its weights (done in float64)
    so inference runs one fused convolution per pair; other layers map one-to-one onto ONNX
    operators with dlib's padding, rounding and ``add_prev`` semantics.
    """
    if opset < 11:
        raise ValueError("opset >= 11 is needed (Pad with tensor inputs)")
    if not layers or layers[0].kind != "input_rgb_image_sized":
        raise ValueError("the first layer must be dlib's fixed-size input_rgb_image_sized")
    first = layers[0]
    nr, nc = int(first.attrs["nr"]), int(first.attrs["nc"])
    g = _Graph()
    x, shape = INPUT_NAME, (3, nr, nc)
    tags: dict[int, tuple[str, Shape]] = {}
    out_dim: int | None = None
    i = 1
    while i < len(layers):
        layer, name = layers[i], f"l{i:03d}_{layers[i].kind}"
        c, h, w = shape
        if layer.kind == "con":
            a = layer.attrs
            weights = layer.arrays["filters"].astype(np.float64)
            bias = layer.arrays.get("biases", np.zeros(weights.shape[0], np.float32))
            bias = bias.astype(np.float64)
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if (
                not a.get("use_relu")
                and nxt is not None
                and nxt.kind == "affine"
                and not nxt.attrs.get("disabled")
                and nxt.attrs["mode"] == _CONV_MODE
            ):
                gamma = nxt.arrays["gamma"].astype(np.float64).reshape(-1)
                beta = nxt.arrays["beta"].astype(np.float64).reshape(-1)
                weights = weights * gamma[:, None, None, None]
                bias = bias * gamma + beta
                i += 1
            sy, sx, py, px = (int(a[k]) for k in ("stride_y", "stride_x", "padding_y", "padding_x"))
            kh, kw = weights.shape[2:]
            x = g.node(
                "Conv",
                [
                    x,
                    g.const(f"{name}_w", weights.astype(np.float32)),
                    g.const(f"{name}_b", bias.astype(np.float32)),
                ],
                name,
                kernel_shape=[kh, kw],
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            shape = (weights.shape[0], _conv_out(h, kh, sy, py), _conv_out(w, kw, sx, px))
            if a.get("use_relu"):
                x = g.node("Relu", [x], f"{name}_relu")
        elif layer.kind in ("affine", "relu") and layer.attrs.get("disabled"):
            pass
        elif layer.kind == "affine":
            gamma, beta = _affine_arrays(layer, shape)
            x = g.node("Mul", [x, g.const(f"{name}_gamma", gamma.astype(np.float32))], name)
            x = g.node("Add", [x, g.const(f"{name}_beta", beta.astype(np.float32))], f"{name}_b")
        elif layer.kind == "relu":
            x = g.node("Relu", [x], name)
        elif layer.kind in ("max_pool", "avg_pool"):
            a = layer.attrs
            if a["nr"] == 0 and a["nc"] == 0:
                op = "GlobalMaxPool" if layer.kind == "max_pool" else "GlobalAveragePool"
                x = g.node(op, [x], name)
                shape = (c, 1, 1)
            else:
                kh = int(a["nr"]) or h
                kw = int(a["nc"]) or w
                sy, sx = int(a["stride_y"]), int(a["stride_x"])
                py, px = int(a["padding_y"]), int(a["padding_x"])
                op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
                x = g.node(
                    op, [x], name, kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px]
                )
                shape = (c, _conv_out(h, kh, sy, py), _conv_out(w, kw, sx, px))
        elif layer.kind == "tag":
            assert layer.tag is not None
            tags[layer.tag] = (x, shape)
        elif layer.kind == "skip":
            if layer.tag not in tags:
                raise ValueError(f"layer {i}: skip{layer.tag} without tag{layer.tag} below it")
            x, shape = tags[layer.tag]
        elif layer.kind == "add_prev":
            if layer.tag not in tags:
                raise ValueError(f"layer {i}: add_prev{layer.tag} without tag{layer.tag}")
            y, yshape = tags[layer.tag]
            target = (max(c, yshape[0]), max(h, yshape[1]), max(w, yshape[2]))
            a = _pad_to(g, x, shape, target, f"{name}_pad_a")
            b = _pad_to(g, y, yshape, target, f"{name}_pad_b")
            x, shape = g.node("Add", [a, b], name), target
        elif layer.kind == "fc":
            weights = layer.arrays["weights"]
            if weights.shape[0] != c * h * w:
                raise ValueError(f"layer {i}: fc expects {weights.shape[0]} inputs, gets {shape}")
            flat = g.node("Flatten", [x], f"{name}_flat", axis=1)
            gemm_in = [flat, g.const(f"{name}_w", weights.astype(np.float32))]
            if "biases" in layer.arrays:
                gemm_in.append(g.const(f"{name}_b", layer.arrays["biases"].astype(np.float32)))
            x = g.node("Gemm", gemm_in, name)
            out_dim = int(weights.shape[1])
            shape = (out_dim, 1, 1)
        elif layer.kind == "loss_metric":
            pass
        else:
            raise ValueError(f"layer {i}: cannot convert a {layer.kind!r} layer")
        i += 1
    if out_dim is None:
        raise ValueError("the network has no fc layer to produce embeddings")
    g.node("Identity", [x], OUTPUT_NAME)
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, nr, nc])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", out_dim])],
        initializer=g.inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="heroes",
    )
    model.doc_string = (
        "dlib face-recognition ResNet; input (RGB - mean) / 256, planar; output unnormalised"
    )
    return model


def convert(dat_path: Path, onnx_path: Path) -> str:
    """Convert a dlib ``.dat`` to an ONNX file and return the file's sha256 (hex).

    The file is written next to its destination and renamed into place, so a reader never
    sees a half-written model and an interrupted run leaves the previous file intact.
    """
    model = build_onnx(read_dlib_net(Path(dat_path)))
    onnx.checker.check_model(model)
    from heroes.models.registry import write_model

    return write_model(Path(onnx_path), model.SerializeToString())


def preprocess(chips: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Turn aligned RGB chips ``[N,150,150,3]`` into the network input ``[N,3,150,150]``.

    Same arithmetic as dlib's ``input_rgb_image_sized::to_tensor``: float32 subtraction of the
    float32 channel means, then an exact division by 256.
    """
    chips = np.asarray(chips)
    if (
        chips.dtype != np.uint8
        or chips.ndim != 4
        or chips.shape[1:]
        != (
            INPUT_SIZE,
            INPUT_SIZE,
            3,
        )
    ):
        raise ValueError(
            f"expected uint8 [N,{INPUT_SIZE},{INPUT_SIZE},3] RGB chips, "
            f"got {chips.dtype} {chips.shape}"
        )
    mean = np.asarray(INPUT_MEAN, dtype=np.float32)
    planar = np.empty((chips.shape[0], 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for channel in range(3):
        np.subtract(chips[..., channel], mean[channel], out=planar[:, channel], dtype=np.float32)
    planar *= np.float32(INPUT_SCALE)
    return planar
