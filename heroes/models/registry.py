"""Models are data: a TOML manifest per model, found, verified and (optionally) fetched here.

A manifest names the model's task, its file, the file's SHA-256, how its input is prepared and its
output read, and its licence. ``file`` is one of:

- ``package:DIST/path/in/package`` - a file shipped inside an installed Python package (found
  without importing that package, whose dependency metadata may be incompatible);
- ``converted:NAME`` - produced on first use from ``convert_from`` (e.g. dlib's serialised face
  ResNet converted to ONNX) and cached in the model directory; ``convert_from`` is a file
  reference or ``model:NAME``, another model's verified file (an INT8 variant is made from the
  FP32 model it stands for, :mod:`heroes.models.int8`);
- a plain path, absolute or relative to the model directory (the ``model_dir`` setting).

Checksums are verified before a file is first used in a process; a mismatch is a clear error.

A variant (``fp32_model = "NAME"``, e.g. an INT8 copy) takes its ``[input]`` and ``[output]`` from
the model it stands for, and its ``[params]`` on top of that model's, so preprocessing and decoding
are stated once. :func:`preferred_variant` picks the INT8 variant on CPU where it was measured to
agree with its FP32 model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from heroes.files import sha256_file


class ModelError(RuntimeError):
    """A model cannot be found, verified or loaded."""


class ChecksumError(ModelError):
    """A model file's SHA-256 differs from its manifest."""


@dataclass(frozen=True)
class InputSpec:
    name: str = "images"
    size: tuple[int, int] = (224, 224)
    layout: str = "NCHW"
    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    resize: str = "stretch"
    pad_value: int = 114
    chip_padding: float = 0.25


@dataclass(frozen=True)
class OutputSpec:
    names: tuple[str, ...] = ()
    decoding: str = "raw"
    labels: tuple[str, ...] = ()
    bins: tuple[float, ...] = ()
    dim: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model, as its manifest describes it."""

    name: str
    task: str
    file: str
    licence: str
    source: str = ""
    description: str = ""
    sha256: str | None = None
    format: str = "onnx"
    url: str | None = None
    install: str | None = None
    convert_from: str | None = None
    source_sha256: str | None = None
    alternatives: tuple[str, ...] = ()
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    params: dict[str, Any] = field(default_factory=dict)
    manifest: str = ""
    #: the FP32 model this one stands for (a quantised variant); its input and output apply
    fp32_model: str | None = None
    #: how a variant is made from ``fp32_model`` (see :mod:`heroes.models.int8`)
    quantize: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, text: str, origin: str = "") -> ModelSpec:
        raw = tomllib.loads(text)
        try:
            inp = raw.pop("input", {})
            out = raw.pop("output", {})
            if "size" in inp:
                inp["size"] = tuple(inp["size"])
            if "mean" in inp:
                inp["mean"] = tuple(float(m) for m in inp["mean"])
            for key in ("names", "labels", "bins"):
                if key in out:
                    out[key] = tuple(out[key])
            alternatives = tuple(raw.pop("alternatives", ()))
            return cls(
                **raw,
                alternatives=alternatives,
                input=InputSpec(**inp),
                output=OutputSpec(**out),
                manifest=origin,
            )
        except TypeError as exc:
            raise ModelError(f"bad model manifest {origin or '<text>'}: {exc}") from exc


_model_dir: Path | None = None


def set_model_dir(path: str | Path | None) -> None:
    """Use ``path`` for fetched and converted models (the ``model_dir`` setting, passed down to
    every process that loads models); None goes back to the user cache."""
    global _model_dir
    _model_dir = Path(path) if path else None


@contextmanager
def using_model_dir(path: str | Path | None) -> Iterator[None]:
    """``path`` as the model folder for the duration of a block (the driver's model checks)."""
    global _model_dir
    saved = _model_dir
    _model_dir = Path(path) if path else saved
    try:
        yield
    finally:
        _model_dir = saved


def model_dir() -> Path:
    """Where fetched and converted models live: the ``model_dir`` setting, else the user cache."""
    if _model_dir is not None:
        return _model_dir
    from heroes.config import Settings

    configured = Settings().model_dir  # HEROES_MODEL_DIR, for callers that pass nothing down
    if configured is not None:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "heroes" / "models"


def builtin_specs() -> dict[str, ModelSpec]:
    specs = {}
    for entry in resources.files("heroes.models").joinpath("manifests").iterdir():
        if entry.name.endswith(".toml"):
            spec = ModelSpec.from_toml(entry.read_text(encoding="utf-8"), entry.name)
            specs[spec.name] = spec
    return _with_variants(specs)


def _with_variants(specs: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Variants take input and output from their FP32 model, and its params under their own."""
    out = dict(specs)
    for name, spec in specs.items():
        if spec.fp32_model is None:
            continue
        base = specs.get(spec.fp32_model)
        if base is None:
            raise ModelError(f"model {name!r} stands for unknown model {spec.fp32_model!r}")
        if base.fp32_model is not None:
            raise ModelError(f"model {name!r} stands for {base.name!r}, itself a variant")
        out[name] = replace(
            spec, input=base.input, output=base.output, params={**base.params, **spec.params}
        )
    return out


def manifest_specs() -> dict[str, ModelSpec]:
    """Built-in manifests plus any ``*.toml`` in the model directory (a user's own models)."""
    specs = builtin_specs()
    d = model_dir()
    if d.is_dir():
        for p in sorted(d.glob("*.toml")):
            spec = ModelSpec.from_toml(p.read_text(encoding="utf-8"), str(p))
            specs[spec.name] = spec
    return _with_variants(specs)


def get_spec(name: str) -> ModelSpec:
    specs = manifest_specs()
    if name not in specs:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def package_file(ref: str) -> Path | None:
    """``package:DIST/rel/path`` -> the file inside the installed package, without importing it."""
    rel = ref.split(":", 1)[1]
    top, _, rest = rel.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for base in found.submodule_search_locations:
        p = Path(base) / rest
        if p.is_file():
            return p
    return None


_verified: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def verify(path: Path, expected: str | None) -> None:
    """Check a file's SHA-256 once per process (keyed by path, size and mtime)."""
    if not expected:
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _lock:
        digest = _verified.get(key)
        if digest is None:
            digest = sha256_file(path)
            _verified[key] = digest
    if digest != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path}: sha256 {digest}, manifest says {expected.lower()}"
        )


def _candidates(spec: ModelSpec) -> Iterator[Path]:
    for ref in (spec.file, *spec.alternatives):
        if ref.startswith("package:"):
            p = package_file(ref)
            if p is not None:
                yield p
        elif ref.startswith("converted:"):
            yield model_dir() / ref.split(":", 1)[1]
        else:
            p = Path(ref)
            yield p if p.is_absolute() else model_dir() / p


def locate(spec: ModelSpec) -> Path | None:
    """The model's file if it is present (not verified), else None."""
    for p in _candidates(spec):
        if p.is_file():
            return p
    return None


def write_model(path: Path, blob: bytes) -> str:
    """Write a made model file (a conversion, a quantised copy) beside ``path`` and rename it into
    place, so a reader never sees half a model and an interrupted run leaves the previous file
    intact; returns its sha256 (hex). Each writer has its own temporary name, so processes making
    the same file at once do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(blob).hexdigest()


_CONVERTERS = {"dlib-face-resnet": "heroes.models.dlib_resnet"}
_convert_lock = threading.RLock()  # a variant's conversion resolves (converts) its source


def resolve(spec: ModelSpec) -> Path:
    """The verified file of a model, converting it first when its manifest says so."""
    path = locate(spec)
    if path is None and spec.file.startswith("converted:"):
        with _convert_lock:  # threads of one process convert once; processes replace atomically
            path = locate(spec) or _convert(spec)
    if path is None:
        hint = f" Install it: {spec.install}." if spec.install else ""
        if spec.url:
            hint += f" Or: heroes models fetch {spec.name}."
        raise ModelError(f"model {spec.name!r} not found ({spec.file}).{hint}")
    verify(path, spec.sha256)
    return path


def _convert(spec: ModelSpec) -> Path:
    if spec.convert_from is None:
        raise ModelError(f"model {spec.name!r}: 'converted:' file without convert_from")
    if spec.convert_from.startswith("model:"):
        source: Path | None = resolve(get_spec(spec.convert_from.split(":", 1)[1]))
    elif spec.convert_from.startswith("package:"):
        source = package_file(spec.convert_from)
    else:
        source = Path(spec.convert_from)
    if source is None or not source.is_file():
        hint = f" Install it: {spec.install}." if spec.install else ""
        raise ModelError(f"model {spec.name!r}: source {spec.convert_from} not found.{hint}")
    verify(source, spec.source_sha256)
    target = model_dir() / spec.file.split(":", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.quantize:
        from heroes.models import int8

        int8.build(spec, source, target)
        return target
    module = _CONVERTERS.get(spec.name)
    if module is None:
        raise ModelError(f"model {spec.name!r}: no converter registered")
    import importlib

    importlib.import_module(module).convert(source, target)
    return target


def fetch(spec: ModelSpec, *, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download a model into the model directory, checking its SHA-256 before it is kept."""
    url = url or spec.url
    if not url:
        raise ModelError(f"model {spec.name!r} has no download URL")
    if not spec.sha256:
        raise ModelError(f"model {spec.name!r} has no sha256 to check a download against")
    name = (
        Path(spec.file).name
        if not spec.file.startswith(("package:", "converted:"))
        else f"{spec.name}.onnx"
    )
    target = model_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != spec.sha256.lower():
            raise ChecksumError(
                f"download of {spec.name} from {url}: sha256 {h.hexdigest()}, "
                f"expected {spec.sha256}"
            )
        shutil.move(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@dataclass(frozen=True)
class ModelStatus:
    name: str
    task: str
    location: str
    licence: str
    usable: bool
    reason: str


def status(spec: ModelSpec, *, check: bool = True) -> ModelStatus:
    """Where a model is and whether it can be used here (its runtime installed, checksum OK)."""
    path = locate(spec)
    if path is None:
        if spec.file.startswith("converted:") and spec.convert_from:
            if spec.convert_from.startswith("model:"):
                return _variant_status(spec, spec.convert_from.split(":", 1)[1], check=check)
            src = (
                package_file(spec.convert_from)
                if spec.convert_from.startswith("package:")
                else None
            )
            if src is not None:
                return ModelStatus(
                    spec.name,
                    spec.task,
                    f"{src} (converted on first use)",
                    spec.licence,
                    True,
                    "converted to ONNX on first use",
                )
        return ModelStatus(
            spec.name,
            spec.task,
            "missing",
            spec.licence,
            False,
            f"not installed: {spec.install or spec.url or spec.file}",
        )
    runtime = "onnxruntime" if spec.format == "onnx" else spec.format
    module = {"onnxruntime": "onnxruntime", "dlib": "dlib", "npz": "numpy"}.get(runtime, runtime)
    if importlib.util.find_spec(module) is None:
        return ModelStatus(
            spec.name, spec.task, str(path), spec.licence, False, f"{module} not installed"
        )
    if check:
        try:
            verify(path, spec.sha256)
        except ChecksumError as exc:
            return ModelStatus(spec.name, spec.task, str(path), spec.licence, False, str(exc))
    return ModelStatus(spec.name, spec.task, str(path), spec.licence, True, "ok")


def _variant_status(spec: ModelSpec, source: str, *, check: bool) -> ModelStatus:
    """A model made on first use from another model: usable when that one is and the tools that
    make it are installed."""
    try:
        base = status(get_spec(source), check=check)
    except ValueError as exc:
        return ModelStatus(spec.name, spec.task, "missing", spec.licence, False, str(exc))
    if not base.usable:
        reason = f"made from {source}, which is not usable: {base.reason}"
        return ModelStatus(spec.name, spec.task, "missing", spec.licence, False, reason)
    if spec.quantize and importlib.util.find_spec("onnxruntime.quantization") is None:
        reason = "onnxruntime.quantization not installed"
        return ModelStatus(spec.name, spec.task, "missing", spec.licence, False, reason)
    where = f"{base.location} (made from {source} on first use)"
    return ModelStatus(spec.name, spec.task, where, spec.licence, True, f"made from {source}")


def variants_of(name: str) -> list[ModelSpec]:
    """The manifests that stand for model ``name`` (e.g. its INT8 copy), by name."""
    return sorted(
        (s for s in manifest_specs().values() if s.fp32_model == name), key=lambda s: s.name
    )


def preferred_variant(name: str, device: str | None = None, *, allow_int8: bool = True) -> str:
    """The model to run for ``name`` on ``device``: its INT8 variant on CPU, where one is usable
    and its manifest records that it agrees with the FP32 model (``[params] agrees = true``, set
    from a measurement on benign sets, docs/models.md); otherwise ``name`` itself.

    ``device`` is read as :func:`heroes.models.runtime.session` reads it: ``"cpu"`` is CPU;
    ``None`` (the best installed) is CPU only when onnxruntime offers no CUDA or TensorRT
    provider; ``"cuda"`` and ``"tensorrt"`` never are. INT8 kernels pay off on CPU (VNNI); on a
    GPU the FP32 (or FP16) model is the one to run.
    """
    get_spec(name)  # unknown names are an error here, not later
    if not allow_int8:
        return name
    from heroes.models import runtime

    if not runtime.runs_on_cpu(device):
        return name
    for spec in variants_of(name):
        if spec.quantize and spec.params.get("agrees") is True and status(spec).usable:
            return spec.name
    return name
