"""Exporting a PyTorch image encoder to ONNX + manifest, and using it as the scene model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data as data
import torch
from typer.testing import CliRunner

from heroes.cli import app
from heroes.models import registry
from heroes.models.export import ExportError, export_image_encoder
from heroes.pipeline.infer import Analyzer, InferOptions


def tiny_encoder() -> torch.nn.Module:
    """A small random CNN: stands in for CLIP's image tower in tests (no weights needed)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 16),
    ).eval()


def test_exported_encoder_matches_torch_and_is_usable_by_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path))
    onnx_path, toml_path = export_image_encoder(
        tiny_encoder(), tmp_path, name="tiny-clip", size=32, licence="Apache-2.0", source="test"
    )
    spec = registry.get_spec("tiny-clip")
    assert spec.task == "scene_embed" and spec.output.dim == 16
    assert registry.resolve(spec) == onnx_path
    analyzer = Analyzer(InferOptions(detector=None, scene_embed="tiny-clip"))
    images = [data.astronaut(), data.coffee(), np.ascontiguousarray(data.astronaut()[:, ::-1])]
    results = analyzer.analyze(images, [None, None, None])
    vecs = np.stack([r.vectors[0]["vector"] for r in results])
    assert vecs.shape == (3, 16)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # the same pixels through torch give the same embedding
    from heroes.models.image_embed import centre_crop

    x = torch.from_numpy(centre_crop(data.coffee(), 32).astype(np.float32)).permute(2, 0, 1)[None]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_encoder()((x - mean) / std), dim=1).numpy()[0]
    assert np.allclose(vecs[1], ref, atol=1e-4)


def test_export_that_differs_from_torch_is_refused(tmp_path: Path) -> None:
    class Unstable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) + torch.rand(x.shape[0], 3) * 10

    with pytest.raises(ExportError, match="differs"):
        export_image_encoder(Unstable(), tmp_path, name="bad", size=8, licence="x", source="x")
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_export_from_a_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEROES_MODEL_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    result = CliRunner().invoke(
        app,
        [
            "models",
            "export",
            "tiny-cli",
            "--factory",
            "test_export:tiny_encoder",
            "--size",
            "32",
            "--licence",
            "Apache-2.0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny-cli.onnx").is_file() and (tmp_path / "tiny-cli.toml").is_file()
    missing = CliRunner().invoke(app, ["models", "export", "x", "--open-clip", "ViT-B-32"])
    assert missing.exit_code == 2
