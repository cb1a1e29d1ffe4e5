"""The NudeNet detector: decoding on synthetic outputs, faces and no nudity on benign photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data as data

from heroes.demo import sample_photos
from heroes.models.detect import Detector, Letterbox, letterbox


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def benign_photos() -> dict[str, np.ndarray]:
    gray = lambda a: np.stack([a] * 3, axis=-1)  # noqa: E731
    return {
        **sample_photos(),
        "horse": gray(data.horse().astype(np.uint8) * 255),
        "coins": gray(data.coins()),
        "immunohistochemistry": data.immunohistochemistry(),
    }


def test_letterbox_centres_on_grey_and_keeps_aspect() -> None:
    im = np.zeros((100, 200, 3), np.uint8)
    out, g = letterbox(im, 320)
    assert out.shape == (320, 320, 3)
    assert g.scale == pytest.approx(1.6) and g.pad_x == 0 and g.pad_y == 80
    assert (out[:80] == 114).all() and (out[-80:] == 114).all() and (out[80:240] == 0).all()


def test_decoding_synthetic_outputs_gives_the_expected_boxes(detector: Detector) -> None:
    n_cls = len(detector.labels)
    raw = np.zeros((1, 4 + n_cls, 6), np.float32)
    face, breast = (
        detector.labels.index("FACE_FEMALE"),
        detector.labels.index("FEMALE_BREAST_EXPOSED"),
    )
    # anchor 0: a face at (160, 100) 40x60 in letterbox pixels; anchor 1: same face, lower score
    raw[0, :4, 0] = [160, 100, 40, 60]
    raw[0, 4 + face, 0] = 0.9
    raw[0, :4, 1] = [162, 101, 40, 60]
    raw[0, 4 + face, 1] = 0.8
    # anchor 2: an exposed part elsewhere; anchor 3: below every threshold
    raw[0, :4, 2] = [60, 200, 30, 30]
    raw[0, 4 + breast, 2] = 0.7
    raw[0, :4, 3] = [250, 250, 10, 10]
    raw[0, 4 + breast, 3] = 0.05
    geo = [Letterbox(scale=0.5, pad_x=0.0, pad_y=40.0)]  # a 640x480 image
    (res,) = detector.decode(raw, geo, [(480, 640)])
    assert len(res.faces) == 1, "the overlapping face box is suppressed"
    f = res.faces[0]
    assert f.label == "FACE_FEMALE" and f.score == pytest.approx(0.9)
    assert f.bbox == pytest.approx((280.0, 60.0, 360.0, 180.0))
    assert [d.label for d in res.detections] == ["FEMALE_BREAST_EXPOSED"]
    assert res.detections[0].bbox == pytest.approx((90.0, 290.0, 150.0, 350.0))
    assert res.nudity_score == pytest.approx(0.7) and res.explicit


def test_covered_parts_and_faces_do_not_count_as_nudity(detector: Detector) -> None:
    n_cls = len(detector.labels)
    raw = np.zeros((1, 4 + n_cls, 3), np.float32)
    for a, label in enumerate(["FEMALE_BREAST_COVERED", "FACE_MALE", "FEET_EXPOSED"]):
        raw[0, :4, a] = [50 + 100 * a, 50, 20, 20]
        raw[0, 4 + detector.labels.index(label), a] = 0.95
    (res,) = detector.decode(raw, [Letterbox(1.0, 0, 0)], [(320, 320)])
    assert res.nudity_score == 0.0 and not res.explicit


def test_wrong_output_shape_is_a_clear_error(detector: Detector) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        detector.decode(np.zeros((1, 10, 5), np.float32), [Letterbox(1, 0, 0)], [(1, 1)])


def test_astronaut_and_cameraman_each_show_one_face(detector: Detector) -> None:
    astro, cam = detector.detect([data.astronaut(), np.stack([data.camera()] * 3, -1)])
    assert len(astro.faces) == 1 and astro.faces[0].score >= 0.5
    x1, y1, x2, y2 = astro.faces[0].bbox
    assert 150 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 200
    assert len(cam.faces) == 1


def test_no_benign_sample_photo_is_flagged_explicit(detector: Detector) -> None:
    photos = benign_photos()
    results = detector.detect(list(photos.values()))
    scores = {name: r.nudity_score for name, r in zip(photos, results, strict=True)}
    assert not any(r.explicit for r in results), scores
    assert max(scores.values()) < detector.nudity_threshold / 2, scores


def test_batch_results_equal_single_image_results(detector: Detector) -> None:
    photos = list(benign_photos().values())[:5]
    batch = detector.detect(photos)
    for im, b in zip(photos, batch, strict=True):
        (one,) = detector.detect([im])
        assert one.nudity_score == pytest.approx(b.nudity_score, abs=1e-4)
        assert len(one.faces) == len(b.faces)
        for f1, f2 in zip(one.faces, b.faces, strict=True):
            assert f1.bbox == pytest.approx(f2.bbox, abs=0.5)


def test_one_face_gets_one_box_when_both_face_classes_fire_on_it(detector: Detector) -> None:
    n_cls = len(detector.labels)
    female, male = detector.labels.index("FACE_FEMALE"), detector.labels.index("FACE_MALE")
    belly = detector.labels.index("BELLY_EXPOSED")
    raw = np.zeros((1, 4 + n_cls, 5), np.float32)
    # anchors 0 and 1: the same face, scored male by one anchor and female by the other
    raw[0, :4, 0] = [100, 100, 40, 50]
    raw[0, 4 + male, 0] = 0.47
    raw[0, :4, 1] = [101, 99, 40, 50]
    raw[0, 4 + female, 1] = 0.61
    # anchor 2: another face, apart; anchor 3: a body part overlapping the first face
    raw[0, :4, 2] = [250, 100, 40, 50]
    raw[0, 4 + male, 2] = 0.5
    raw[0, :4, 3] = [100, 102, 40, 50]
    raw[0, 4 + belly, 3] = 0.4
    (res,) = detector.decode(raw, [Letterbox(1.0, 0, 0)], [(320, 320)])
    assert [(f.label, round(f.score, 2)) for f in res.faces] == [
        ("FACE_FEMALE", 0.61),
        ("FACE_MALE", 0.5),
    ]
    assert [d.label for d in res.detections] == ["BELLY_EXPOSED"], "other classes keep their box"


def test_the_cameraman_at_055_of_its_size_shows_one_face(detector: Detector) -> None:
    # at 0.55 of its size the detector scores this face FACE_MALE 0.46 and FACE_FEMALE 0.38
    camera = np.stack([data.camera()] * 3, -1)
    small = cv2.resize(camera, None, fx=0.55, fy=0.55, interpolation=cv2.INTER_AREA)
    (res,) = detector.detect([small])
    assert len(res.faces) == 1, [(f.label, f.score) for f in res.faces]
    assert res.faces[0].label == "FACE_MALE"


def graphics() -> dict[str, np.ndarray]:
    """Non-photographic images: a colour wheel, a checkerboard, gradients, shapes, text, flat."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:300, 0:300]
    out = {
        "colorwheel": np.ascontiguousarray(data.colorwheel()[..., :3]),
        "checkerboard": np.stack([data.checkerboard()] * 3, -1),
        "gradient": np.stack([xx * 255 // 299, yy * 255 // 299, (xx + yy) * 255 // 598], -1).astype(
            np.uint8
        ),
        "flat": np.full((200, 240, 3), (210, 160, 140), np.uint8),
    }
    rng = np.random.default_rng(3)
    shapes = Image.new("RGB", (400, 300), (240, 220, 200))
    d = ImageDraw.Draw(shapes)
    for _ in range(10):
        x, y = (int(v) for v in rng.integers(0, 330, 2))
        d.ellipse([x, y, x + 70, y + 50], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    out["shapes"] = np.asarray(shapes)
    text = Image.new("RGB", (480, 240), (255, 255, 255))
    d = ImageDraw.Draw(text)
    for i in range(8):
        d.text((8, 8 + 28 * i), "The quick brown fox jumps over the lazy dog " * 2, fill=(0, 0, 0))
    out["text"] = np.asarray(text)
    return out


def test_the_colour_wheel_is_not_flagged_explicit_and_says_why(detector: Detector) -> None:
    (res,) = detector.detect([graphics()["colorwheel"]])
    assert res.raw_nudity_score >= detector.nudity_threshold  # what the network alone says
    assert not res.explicit and res.nudity_score < detector.nudity_threshold
    assert res.nudity_score == pytest.approx(res.raw_nudity_score * detector.guard_discount)
    assert res.guard is not None and "of the frame" in res.guard
    guarded = [d for d in res.detections if d.guard]
    assert guarded and "skin-like colour" in guarded[0].to_record()["guard"]


def test_no_graphic_is_flagged_explicit(detector: Detector) -> None:
    g = graphics()
    results = detector.detect(list(g.values()))
    scores = {n: round(r.nudity_score, 3) for n, r in zip(g, results, strict=True)}
    assert not any(r.explicit for r in results), scores
    assert max(scores.values()) < detector.nudity_threshold / 2, scores


def test_the_guard_leaves_every_benign_photo_as_it_was(detector: Detector) -> None:
    photos = benign_photos()
    x, geo = detector.preprocess(list(photos.values()))
    (raw,) = detector.run(x)[:1]
    shapes = [im.shape[:2] for im in photos.values()]
    plain = detector.decode(raw, geo, shapes)
    guarded = detector.decode(raw, geo, shapes, list(photos.values()))
    for name, a, b in zip(photos, plain, guarded, strict=True):
        assert b.nudity_score == a.nudity_score == b.raw_nudity_score, name
        assert b.guard is None and b.detections == a.detections and b.faces == a.faces, name


def _whole_frame(detector: Detector, score: float) -> np.ndarray:
    """A raw output with one explicit prediction on a box covering the whole 320 px input."""
    raw = np.zeros((1, 4 + len(detector.labels), 3), np.float32)
    raw[0, :4, 0] = [160, 160, 318, 318]
    raw[0, 4 + detector.labels.index("BUTTOCKS_EXPOSED"), 0] = score
    return raw


def test_a_whole_frame_box_on_skin_colour_or_grey_scale_keeps_its_score(
    detector: Detector,
) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(-12, 13, (320, 320, 3))
    skin = np.clip(np.asarray([220, 170, 140]) + noise, 0, 255).astype(np.uint8)
    grey = np.repeat(rng.integers(20, 236, (320, 320, 1)).astype(np.uint8), 3, axis=2)
    for image in (skin, grey):
        (res,) = detector.decode(
            _whole_frame(detector, 0.8), [Letterbox(1.0, 0, 0)], [(320, 320)], [image]
        )
        assert res.nudity_score == pytest.approx(0.8) and res.explicit, res.guard
        assert res.guard is None


def test_a_whole_frame_box_on_a_colourful_image_without_skin_is_discounted(
    detector: Detector,
) -> None:
    rng = np.random.default_rng(0)
    blue = np.clip(np.asarray([40, 90, 200]) + rng.integers(-30, 31, (320, 320, 3)), 0, 255)
    (res,) = detector.decode(
        _whole_frame(detector, 0.8), [Letterbox(1.0, 0, 0)], [(320, 320)], [blue.astype(np.uint8)]
    )
    assert res.raw_nudity_score == pytest.approx(0.8)
    assert res.nudity_score == pytest.approx(0.8 * detector.guard_discount) and not res.explicit
    assert res.detections[0].guard and "skin-like" in res.detections[0].guard


def test_a_small_box_on_a_colourful_image_is_not_discounted(detector: Detector) -> None:
    rng = np.random.default_rng(0)
    blue = np.clip(np.asarray([40, 90, 200]) + rng.integers(-30, 31, (320, 320, 3)), 0, 255)
    raw = _whole_frame(detector, 0.8)
    raw[0, :4, 0] = [160, 160, 100, 100]
    (res,) = detector.decode(raw, [Letterbox(1.0, 0, 0)], [(320, 320)], [blue.astype(np.uint8)])
    assert res.nudity_score == pytest.approx(0.8) and res.guard is None


def test_any_box_on_an_image_of_few_colours_is_discounted(detector: Detector) -> None:
    two = np.zeros((320, 320, 3), np.uint8)
    two[:, 160:] = (230, 180, 150)  # skin-coloured, but a flat graphic
    raw = _whole_frame(detector, 0.9)
    raw[0, :4, 0] = [240, 160, 60, 60]
    (res,) = detector.decode(raw, [Letterbox(1.0, 0, 0)], [(320, 320)], [two])
    assert res.nudity_score == pytest.approx(0.9 * detector.guard_discount)
    assert res.guard and "2 distinct colours" in res.guard


def test_a_gpu_session_binds_its_io_and_falls_back_to_plain_runs_where_binding_fails() -> None:
    """On a GPU session inputs and outputs go through ONNX Runtime's IO binding, with the same
    results as a plain run; where the binding cannot work the model runs plainly and stops
    trying."""
    frames = [data.astronaut()]
    plain = Detector(threads=1)
    expected = plain.run(plain.preprocess(frames)[0])
    bound = Detector(threads=1)
    bound.load()
    bound._io_binding = True  # as a CUDA session has it
    got = bound.run(bound.preprocess(frames)[0])
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(expected, got, strict=True))

    class NoBinding:
        def __init__(self, sess: object) -> None:
            self._sess = sess

        def io_binding(self) -> object:
            raise RuntimeError("this build of onnxruntime cannot bind device memory")

        def __getattr__(self, name: str) -> object:
            return getattr(self._sess, name)

    broken = Detector(threads=1, session=NoBinding(plain.load()))
    broken._io_binding = True
    got = broken.run(broken.preprocess(frames)[0])
    assert broken._io_binding is False
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(expected, got, strict=True))
