"""Damaged images in the per-file analysis: what decoded is analysed, the damage is kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from skimage import data as skdata

from heroes.pipeline.analyze import AnalyzeOptions, analyze_media
from heroes.pipeline.decode import pdq_distance
from heroes.pipeline.identify import MEDIA_IMAGE
from heroes.pipeline.infer import InferOptions


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def with_models() -> AnalyzeOptions:
    return AnalyzeOptions(models=InferOptions(scene_embed=None, face_embed=None))


def test_a_jpeg_missing_its_last_100_bytes_keeps_its_faces_and_its_pdq(
    astronaut_jpeg: bytes, with_models: AnalyzeOptions
) -> None:
    intact = analyze_media(MEDIA_IMAGE, astronaut_jpeg, None, with_models).fields
    analysed = analyze_media(MEDIA_IMAGE, astronaut_jpeg[:-100], None, with_models)
    cut = analysed.fields
    assert "status" not in cut, "a damaged file that decoded is not an error record"
    assert cut["error"].startswith("truncated image: ")
    assert analysed.frames == 1 and cut["nudity"] is not None
    assert len(intact["faces"]) >= 1 and len(cut["faces"]) == len(intact["faces"])
    for a, b in zip(intact["faces"], cut["faces"], strict=True):
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)) < 8
    assert pdq_distance(intact["pdq"], cut["pdq"]) <= 8
    assert cut["pdq_quality"] == intact["pdq_quality"] == 100


def test_a_jpeg_too_damaged_to_analyse_is_an_error_with_no_hash_and_no_models(
    astronaut_jpeg: bytes, with_models: AnalyzeOptions
) -> None:
    analysed = analyze_media(
        MEDIA_IMAGE, astronaut_jpeg[: len(astronaut_jpeg) // 5], None, with_models
    )
    out = analysed.fields
    assert out["status"] == "error" and "under the 50% needed" in out["error"]
    assert (out["width"], out["height"]) == (512, 512)
    assert out.get("pdq") is None and out.get("pdq_quality") is None
    assert "faces" not in out and analysed.frames == 0


def test_an_image_over_the_decode_budget_is_an_error_record() -> None:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "PNG")
    opts = AnalyzeOptions(max_decode_bytes=10**6)
    out = analyze_media(MEDIA_IMAGE, buf.getvalue(), None, opts).fields
    assert out["status"] == "error" and out["error"].startswith("too large to decode: 512x512 RGB")
