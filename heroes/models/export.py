"""Turn a PyTorch image encoder (CLIP, DINOv2, any ``nn.Module``) into ONNX plus a manifest.

Runs on a machine that has the weights (extra ``train``: torch; open_clip_torch for CLIP). The
exported graph takes RGB pixels 0..255 as float32 [N, 3, S, S] and does the model's own
normalisation and the final L2 normalisation inside, so the manifest needs no per-channel
statistics and every runtime feeds it the same way. The export is checked against PyTorch on a
random batch before the files are written, and the manifest records the ONNX file's sha256.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ExportError(RuntimeError):
    """The model could not be exported or its export does not match PyTorch."""


def _wrap(model: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer(
                "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
            )
            self.register_buffer(
                "std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
            )

        def forward(self, images: Any) -> Any:
            out = self.model((images - self.mean) / self.std)
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.reshape(out.shape[0], -1)
            return torch.nn.functional.normalize(out, dim=1)

    return Encoder().eval()


def export_image_encoder(
    model: Any,
    out_dir: Path,
    *,
    name: str,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    licence: str,
    source: str,
    task: str = "scene_embed",
    description: str = "",
    opset: int = 17,
    tolerance: float = 1e-3,
) -> tuple[Path, Path]:
    """Export ``model`` (an ``nn.Module`` mapping normalised images to embeddings) to
    ``out_dir/NAME.onnx`` and ``out_dir/NAME.toml``; returns both paths."""
    import onnxruntime as ort
    import torch

    wrapped = _wrap(model, mean, std)
    dummy = torch.rand(2, 3, size, size) * 255
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated upstream but needs no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            wrapped,
            (dummy,),
            buf,
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "N"}, "embeddings": {0: "N"}},
            opset_version=opset,
            dynamo=False,
        )
        expected = wrapped(dummy).numpy()
    data = buf.getvalue()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": dummy.numpy()})[0]
    err = float(np.abs(got - expected).max())
    if err > tolerance:
        raise ExportError(f"ONNX output differs from PyTorch by {err:.2e} > {tolerance:.0e}")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    toml_path = out_dir / f"{name}.toml"
    q = json.dumps  # a JSON string is a valid TOML basic string
    desc = description or "image encoder exported by heroes models export"
    toml_path.write_text(
        "\n".join(
            [
                f"name = {q(name)}",
                f"task = {q(task)}",
                f"description = {q(desc)}",
                f"file = {q(onnx_path.name)}",
                f"sha256 = {q(digest)}",
                f"licence = {q(licence)}",
                f"source = {q(source)}",
                "",
                "[input]",
                'name = "images"',
                f"size = [{size}, {size}]",
                'layout = "NCHW"',
                'colour = "RGB"',
                "mean = [0.0, 0.0, 0.0]",
                "scale = 1.0",
                'resize = "centre_crop"',
                "",
                "[output]",
                'names = ["embeddings"]',
                'decoding = "embedding"',
                f"dim = {int(got.shape[1])}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return onnx_path, toml_path


def load_factory(ref: str, weights: Path | None = None) -> Any:
    """``package.module:callable`` -> the ``nn.Module`` it returns, with a state dict loaded."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ExportError(f"factory {ref!r} must look like package.module:callable")
    factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
    model = factory()
    if weights is not None:
        import torch

        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return model.eval()


def load_open_clip(arch: str, weights: Path) -> tuple[Any, int]:
    """The image tower of an open_clip model from a local weights file, and its input size."""
    try:
        import open_clip
    except ImportError as exc:
        raise ExportError("open_clip is not installed: pip install open_clip_torch") from exc
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(weights))
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return model.visual.eval(), size
