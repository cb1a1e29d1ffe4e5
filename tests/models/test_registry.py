"""Model manifests, lookup, checksums, fetch over HTTP, providers, and plumbing on tiny models."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from heroes.models import registry, runtime
from heroes.models.base import OnnxModel
from heroes.models.registry import ChecksumError, ModelError, ModelSpec


def tiny_model(path: Path, *, scale: float = 2.0, channels: int = 3, size: int = 4) -> Path:
    """y = x * scale summed over H, W: a model with a dynamic batch, built in the test."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", channels, size, size])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", channels])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["images", "k"], ["m"]),
            helper.make_node("ReduceSum", ["m", "axes"], ["out"], keepdims=0),
        ],
        "tiny",
        [x],
        [y],
        initializer=[k, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def spec_for(path: Path, sha: str | None, **extra: str) -> ModelSpec:
    lines = [
        'name = "tiny"',
        'task = "test"',
        f'file = "{path}"',
        'licence = "Apache-2.0"',
        *(f'{k} = "{v}"' for k, v in extra.items()),
    ]
    if sha:
        lines.append(f'sha256 = "{sha}"')
    lines += [
        "[input]",
        'name = "images"',
        "size = [4, 4]",
        "mean = [1.0, 1.0, 1.0]",
        "scale = 0.5",
    ]
    return ModelSpec.from_toml("\n".join(lines))


def test_builtin_manifests_name_licence_and_checksum_for_every_model() -> None:
    specs = registry.builtin_specs()
    assert {"nudenet-320n", "age-v1", "dlib-face-resnet", "dlib-landmarks-5", "scene-vlad"} <= set(
        specs
    )
    for spec in specs.values():
        assert spec.licence and spec.task and spec.file
        # a variant is made from its FP32 model's verified file and ranges checked by sha256
        variant = spec.fp32_model in specs and spec.quantize.get("ranges_sha256")
        assert (
            spec.sha256 or spec.source_sha256 or spec.file.startswith("package:heroes/") or variant
        )


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry.get_spec("nope")


def test_packaged_models_are_found_and_verified() -> None:
    for name in ("nudenet-320n", "age-v1", "dlib-landmarks-5"):
        spec = registry.get_spec(name)
        path = registry.resolve(spec)
        assert path.is_file() and registry.status(spec).usable


def test_checksum_mismatch_is_refused_before_use(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        registry.resolve(spec_for(path, "0" * 64))
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert registry.resolve(spec_for(path, good)) == path


def test_missing_model_says_how_to_install_it(tmp_path: Path) -> None:
    spec = spec_for(tmp_path / "absent.onnx", None, install="pip install something")
    with pytest.raises(ModelError, match="pip install something"):
        registry.resolve(spec)
    assert not registry.status(spec).usable


def test_user_manifests_in_the_model_dir_add_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path))
    path = tiny_model(tmp_path / "mine.onnx")
    (tmp_path / "mine.toml").write_text(
        'name = "mine"\ntask = "scene_embed"\nfile = "mine.onnx"\nlicence = "CC0-1.0"\n'
    )
    spec = registry.get_spec("mine")
    assert registry.resolve(spec) == path


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_downloads_and_checks_sha256(
    http_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = http_server
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path / "models"))
    served = tiny_model(root / "tiny.onnx")
    sha = hashlib.sha256(served.read_bytes()).hexdigest()
    spec = spec_for(Path("tiny.onnx"), sha, url=f"{base}/tiny.onnx")
    path = registry.fetch(spec)
    assert path == tmp_path / "models" / "tiny.onnx" and path.read_bytes() == served.read_bytes()
    bad = spec_for(Path("other.onnx"), "1" * 64, url=f"{base}/tiny.onnx")
    with pytest.raises(ChecksumError):
        registry.fetch(bad)
    assert not (tmp_path / "models" / "other.onnx").exists()
    assert not list((tmp_path / "models").glob(".fetch-*")), "no partial download is left behind"


def test_providers_prefer_gpu_only_when_installed() -> None:
    have = ort.get_available_providers()
    chosen = runtime.choose_providers()
    assert chosen[-1] == "CPUExecutionProvider" or "CPUExecutionProvider" not in have
    assert all(p in have for p in chosen)
    assert runtime.choose_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in have:
        with pytest.raises(RuntimeError):
            runtime.choose_providers("cuda")


def test_sessions_load_once_per_process(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "t.onnx")
    a = runtime.session(path, threads=1)
    b = runtime.session(path, threads=1)
    assert a is b


def test_onnx_model_normalises_and_batches_in_chunks(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "t.onnx", scale=2.0)
    model = OnnxModel(spec_for(path, None))
    model.max_batch = 3
    images = np.full((7, 4, 4, 3), 5, dtype=np.uint8)
    x = model.normalise(images)
    assert x.shape == (7, 3, 4, 4) and np.allclose(x, (5 - 1) * 0.5)
    (out,) = model.run(x)
    assert out.shape == (7, 3) and np.allclose(out, 16 * 2.0 * 2.0)
    assert model.run(np.zeros((0, 3, 4, 4), np.float32)) == []


def test_injected_session_is_used_without_touching_the_registry(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "t.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = OnnxModel(spec_for(tmp_path / "elsewhere.onnx", "f" * 64), session=sess)
    (out,) = model.run(np.ones((2, 3, 4, 4), np.float32))
    assert out.shape == (2, 3)


def test_cli_fetch_downloads_a_model_named_by_a_user_manifest(
    http_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from heroes.cli import app

    base, root = http_server
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("HEROES_MODEL_DIR", str(models))
    served = tiny_model(root / "net.onnx")
    sha = hashlib.sha256(served.read_bytes()).hexdigest()
    (models / "net.toml").write_text(
        f'name = "net"\ntask = "scene_embed"\nfile = "net.onnx"\nsha256 = "{sha}"\n'
        f'licence = "CC0-1.0"\nurl = "{base}/net.onnx"\n'
    )
    result = CliRunner().invoke(app, ["models", "fetch", "net"])
    assert result.exit_code == 0, result.output
    assert (models / "net.onnx").read_bytes() == served.read_bytes()
    missing = CliRunner().invoke(app, ["models", "fetch", "nope"])
    assert missing.exit_code == 2 and "unknown model" in missing.output


class _SmallDevice:
    """A session stand-in whose device holds at most ``limit`` inputs per run."""

    def __init__(self, real: object, limit: int) -> None:
        self.real, self.limit, self.sizes = real, limit, []

    def run(self, names, feeds):  # type: ignore[no-untyped-def]
        n = len(next(iter(feeds.values())))
        self.sizes.append(n)
        if n > self.limit:
            raise RuntimeError("CUDA failure 2: out of memory; failed to allocate 1 GiB")
        return self.real.run(names, feeds)  # type: ignore[attr-defined]


def test_out_of_memory_retries_with_smaller_batches_then_fails_clearly(tmp_path: Path) -> None:
    from heroes.models.base import OutOfMemory

    path = tiny_model(tmp_path / "t.onnx")
    real = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dev = _SmallDevice(real, limit=3)
    model = OnnxModel(spec_for(path, None), session=dev)
    (out,) = model.run(np.ones((10, 3, 4, 4), np.float32))
    assert out.shape == (10, 3) and np.allclose(out, 32.0)
    assert max(n for n in dev.sizes[1:]) <= 5 and model.max_batch <= 3
    none_fit = OnnxModel(spec_for(path, None), session=_SmallDevice(real, limit=0))
    with pytest.raises(OutOfMemory, match="single input"):
        none_fit.run(np.ones((4, 3, 4, 4), np.float32))
