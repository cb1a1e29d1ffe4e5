"""Damaged images in the per-file analysis: what decoded is analysed, the damage is kept."""

from __future__ import annotations

import io

import numpy as np
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


def test_frames_of_several_files_go_through_the_models_together_with_the_same_results() -> None:
    """Batches across files: each file gets what it gets alone (boxes in its own pixels, its own
    faces and vectors), and a file whose frames break the models is the only one with an error."""
    from heroes.pipeline.analyze import Decoded, infer_many

    opts = AnalyzeOptions(models=InferOptions(scene_embed=None), batch_frames=3)
    astronaut = skdata.astronaut()
    small = np.ascontiguousarray(astronaut[::2, ::2])
    files = [
        Decoded({"width": 512}, [astronaut], [None], 1.0),
        Decoded({"width": 1024}, [small], [None], 4.0),  # a working copy of a larger original
        Decoded({"width": 512}, [astronaut, astronaut[:, ::-1]], [0.0, 1.0], 1.0),  # a video
        Decoded({"width": 7}, [], []),  # nothing decoded
    ]
    alone = [infer_many([d], opts)[0] for d in files]
    together = infer_many(files, opts)
    for a, b in zip(alone, together, strict=True):
        assert a.frames == b.frames
        assert a.fields.get("faces") == b.fields.get("faces")
        assert (a.fields.get("nudity") or {}).get("score") == (b.fields.get("nudity") or {}).get(
            "score"
        )
        assert [(v.kind, v.face, v.frame_time) for v in a.vectors] == [
            (v.kind, v.face, v.frame_time) for v in b.vectors
        ]
    assert len(together[0].fields["faces"]) >= 1 and together[3].frames == 0
    # the second file's boxes are in its original's pixels: 4x its working copy's
    box0, box1 = together[0].fields["faces"][0]["bbox"], together[1].fields["faces"][0]["bbox"]
    assert abs(box1[0] - 2 * box0[0]) < 20 and abs(box1[2] - 2 * box0[2]) < 20
    # the video's faces name their frames, and its face vectors index its own faces
    video = together[2]
    assert {f["frame_time"] for f in video.fields["faces"]} == {0.0, 1.0}
    assert sorted(v.face for v in video.vectors if v.kind == "face") == list(
        range(len(video.fields["faces"]))
    )
    broken = Decoded({"width": 512}, [np.zeros((4, 4), np.uint8)], [None], 1.0)
    mixed = infer_many([files[0], broken, files[1]], AnalyzeOptions(models=opts.models))
    assert mixed[1].fields["status"] == "error"
    assert mixed[1].fields["error"].startswith("inference failed")
    assert "status" not in mixed[0].fields and "status" not in mixed[2].fields
    assert mixed[0].fields["faces"] == together[0].fields["faces"]
