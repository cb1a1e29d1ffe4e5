"""Image decoding at working size, EXIF and PDQ, on package-shipped photos and synthetic images."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin
from skimage import data as skdata

from heroes.pipeline.decode import (
    MIN_DECODED_FRACTION,
    WORKING_RESAMPLE,
    DecodeError,
    ImageAnalysis,
    analyze_image,
    load_rgb,
    pdq_bytes,
    pdq_distance,
    pdq_distances,
    pdq_hex,
    to_rgb_array,
)

MATCH = 31


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but whose IDAT holds a few bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: orientation is readable from where the red ends up."""
    im = Image.new("RGB", (width, height), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, width // 2, height))
    return im


def is_red(pixel: NDArray[np.uint8]) -> bool:
    return bool(pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60)


def is_blue(pixel: NDArray[np.uint8]) -> bool:
    return bool(pixel[2] > 200 and pixel[0] < 60 and pixel[1] < 60)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


@pytest.fixture(scope="module")
def astronaut_pdq(astronaut: Image.Image) -> str:
    return pdq_hex(np.asarray(astronaut))[0]


@pytest.fixture(scope="module")
def big_jpeg(astronaut: Image.Image) -> bytes:
    return encode(astronaut.resize((4000, 3000)), "JPEG", quality=85)


# --- decoding --------------------------------------------------------------------------------


def test_a_photo_is_decoded_to_an_rgb_copy_no_larger_than_the_working_size() -> None:
    coffee = Image.fromarray(skdata.coffee())
    result = analyze_image(encode(coffee, "JPEG", quality=92), keep_pixels=True)
    assert (result.width, result.height, result.format, result.mode) == (600, 400, "JPEG", "RGB")
    assert result.frames == 1
    assert result.pixels is not None
    assert result.pixels.shape == (341, 512, 3) and result.pixels.dtype == np.uint8
    assert result.pdq is not None and len(result.pdq) == 64
    assert result.pdq == result.pdq.lower() and int(result.pdq, 16) >= 0
    assert result.exif is None


def test_pixels_are_only_kept_when_asked_for(astronaut: Image.Image) -> None:
    assert analyze_image(encode(astronaut, "PNG")).pixels is None


def test_working_size_bounds_the_longest_side(astronaut: Image.Image) -> None:
    rgb, info = load_rgb(encode(astronaut, "PNG"), working_size=100)
    assert rgb.shape == (100, 100, 3)
    assert (info.width, info.height) == (512, 512)


def test_a_large_jpeg_is_decoded_through_draft_and_never_at_full_size(
    big_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafts: list[tuple[Any, ...]] = []
    loaded_sizes: list[tuple[int, int]] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft
    original_load = ImageFile.ImageFile.load

    def spy_draft(self: ImageFile.ImageFile, mode: str | None, size: Any) -> Any:
        drafts.append((mode, size))
        return original_draft(self, mode, size)

    def spy_load(self: ImageFile.ImageFile) -> Any:
        loaded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy_draft)
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)

    result = analyze_image(big_jpeg, keep_pixels=True)

    assert ("RGB", (512, 384)) in drafts  # the working size in the photo's own aspect
    assert loaded_sizes and all(w * h <= 1000 * 750 for w, h in loaded_sizes)
    assert (result.width, result.height) == (4000, 3000)
    assert result.pixels is not None and result.pixels.shape == (384, 512, 3)


def test_exif_orientation_6_turns_the_picture_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    result = analyze_image(encode(halves(200, 100), "JPEG", exif=exif), keep_pixels=True)
    assert (result.width, result.height) == (100, 200)
    assert result.pixels is not None and result.pixels.shape == (200, 100, 3)
    assert is_red(result.pixels[20, 50]) and is_blue(result.pixels[180, 50])
    assert result.exif == {"orientation": 6}


def test_orientation_is_still_right_after_a_draft_decode() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves(4000, 3000), "JPEG", exif=exif, quality=80)
    result = analyze_image(data, keep_pixels=True)
    assert (result.width, result.height) == (3000, 4000)
    assert result.pixels is not None and result.pixels.shape == (512, 384, 3)
    assert is_red(result.pixels[50, 192]) and is_blue(result.pixels[460, 192])


def test_a_tiff_rotated_by_its_own_plugin_is_not_rotated_twice() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    result = analyze_image(encode(halves(200, 100), "TIFF", exif=exif), keep_pixels=True)
    assert (result.width, result.height) == (100, 200)
    assert result.pixels is not None and is_red(result.pixels[20, 50])
    assert result.exif is not None and result.exif["orientation"] == 6


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("RGBA", "WEBP"),
        ("P", "PNG"),
        ("P", "BMP"),
        ("1", "PNG"),
        ("L", "JPEG"),
        ("YCbCr", "TIFF"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("RGB", "TIFF"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("RGB", "GIF"),
    ],
)
def test_every_mode_becomes_an_rgb_copy_that_hashes_like_the_original(
    astronaut: Image.Image, astronaut_pdq: str, mode: str, fmt: str
) -> None:
    result = analyze_image(encode(astronaut.convert(mode), fmt), keep_pixels=True)
    assert result.mode in {mode, "RGB", "RGBA", "L", "P"}
    assert result.pixels is not None
    assert result.pixels.shape == (512, 512, 3) and result.pixels.dtype == np.uint8
    assert result.pdq is not None and pdq_distance(result.pdq, astronaut_pdq) <= MATCH


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped() -> None:
    levels = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    im = Image.fromarray(levels)
    assert im.mode == "I;16"
    rgb, info = load_rgb(encode(im, "PNG"))
    assert info.mode == "I;16"
    assert rgb[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_a_sixteen_bit_copy_of_a_photo_hashes_like_the_photo() -> None:
    camera = skdata.camera()
    wide = Image.fromarray(camera.astype(np.uint16) * 257)
    result = analyze_image(encode(wide, "PNG"))
    assert result.mode == "I;16"
    assert result.pdq is not None
    assert pdq_distance(result.pdq, pdq_hex(np.dstack([camera] * 3))[0]) <= 4


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_transparent_pixels_are_composited_on_white(fmt: str) -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :32, 3] = 255
    rgb, _ = load_rgb(encode(Image.fromarray(rgba), fmt, lossless=True))
    assert rgb[10, 5].tolist() == [200, 0, 0]
    assert rgb[10, 60].tolist() == [255, 255, 255]


def test_a_grey_image_with_alpha_is_composited_on_white() -> None:
    la = Image.merge("LA", (Image.new("L", (32, 32), 40), Image.new("L", (32, 32), 0)))
    la.paste(Image.new("LA", (16, 32), (40, 255)), (0, 0))
    rgb, info = load_rgb(encode(la, "PNG"))
    assert info.mode == "LA"
    assert rgb[5, 2].tolist() == [40, 40, 40] and rgb[5, 30].tolist() == [255, 255, 255]


def test_a_palette_image_with_a_transparent_index_is_composited_on_white() -> None:
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    im.paste(1, (0, 0, 16, 32))
    rgb, info = load_rgb(encode(im, "PNG", transparency=0))
    assert info.mode == "P"
    assert rgb[5, 2].tolist() == [0, 200, 0] and rgb[5, 30].tolist() == [255, 255, 255]


def test_an_animated_gif_reports_its_frames_and_decodes_the_first() -> None:
    frames = [
        Image.new("RGB", (40, 30), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    ]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = analyze_image(data, keep_pixels=True)
    assert (result.format, result.frames) == ("GIF", 3)
    assert result.pixels is not None and is_red(result.pixels[15, 20])


def test_a_multi_page_tiff_reports_its_pages(astronaut: Image.Image) -> None:
    data = encode(astronaut, "TIFF", save_all=True, append_images=[astronaut.rotate(90)])
    assert analyze_image(data).frames == 2


def test_an_animated_webp_reports_its_frames(astronaut: Image.Image) -> None:
    frames = [astronaut, astronaut.rotate(90)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    assert analyze_image(data).frames == 2


def test_a_heic_round_trip_decodes_and_hashes_like_the_original(
    astronaut: Image.Image, astronaut_pdq: str
) -> None:
    data = encode(astronaut, "HEIF", quality=90)
    result = analyze_image(data, keep_pixels=True)
    assert (result.format, result.width, result.height) == ("HEIF", 512, 512)
    assert result.pdq is not None and pdq_distance(result.pdq, astronaut_pdq) <= MATCH


# --- hostile and broken input ----------------------------------------------------------------


def test_a_pixel_bomb_header_is_refused_before_any_pixel_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(DecodeError, match=r"decompression bomb: 1600000000 pixels > 178956970"):
        analyze_image(png_header_only(40_000, 40_000))


def test_the_pixel_limit_is_the_callers_and_not_pillows(
    astronaut: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for fmt in ("PNG", "JPEG", "GIF"):
        assert analyze_image(encode(astronaut, fmt)).width == 512
    with pytest.raises(DecodeError, match="decompression bomb: 262144 pixels > 262143"):
        analyze_image(encode(astronaut, "PNG"), max_pixels=512 * 512 - 1)


def test_a_camera_jpeg_missing_its_last_100_bytes_is_analysed_and_says_it_is_damaged(
    astronaut: Image.Image,
) -> None:
    whole = encode(astronaut, "JPEG", quality=90)
    intact = analyze_image(whole)
    cut = analyze_image(whole[:-100], keep_pixels=True)
    assert cut.damage is not None and cut.damage.startswith("truncated image: ")
    assert cut.damage.endswith("100% of rows decoded") and cut.decoded_fraction == 1.0
    assert cut.pixels is not None, "what decoded goes on to the models"
    assert intact.pdq is not None and cut.pdq is not None
    assert pdq_distance(intact.pdq, cut.pdq) <= 8 and cut.pdq_quality == intact.pdq_quality
    assert intact.damage is None


def test_a_jpeg_cut_in_half_is_analysed_with_the_share_of_rows_that_decoded(
    big_jpeg: bytes,
) -> None:
    cut = analyze_image(big_jpeg[: len(big_jpeg) * 3 // 4])
    assert (cut.width, cut.height) == (4000, 3000)
    assert 0.6 < cut.decoded_fraction < 0.95
    assert cut.damage is not None and f"{int(cut.decoded_fraction * 100)}% of rows" in cut.damage
    assert cut.pdq is not None and cut.pdq_quality is not None


def test_a_progressive_jpeg_cut_short_has_every_row_at_a_lower_quality(
    astronaut: Image.Image,
) -> None:
    whole = encode(astronaut, "JPEG", quality=90, progressive=True)
    cut = analyze_image(whole[: len(whole) // 2])
    assert cut.damage is not None and cut.decoded_fraction == 1.0
    assert cut.pdq is not None and pdq_distance(cut.pdq, analyze_image(whole).pdq or "") <= 31


def test_a_jpeg_cut_to_a_quarter_is_too_damaged_and_carries_no_hash(big_jpeg: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^truncated image: .*under the 50% needed") as caught:
        analyze_image(big_jpeg[: len(big_jpeg) // 4])
    partial = caught.value.partial
    assert isinstance(partial, ImageAnalysis)
    assert (partial.width, partial.height, partial.format) == (4000, 3000, "JPEG")
    assert partial.pdq is None and partial.pdq_quality is None and partial.pixels is None
    assert partial.decoded_fraction < MIN_DECODED_FRACTION


def test_a_jpeg_cut_right_after_its_header_has_no_made_up_hash(big_jpeg: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        analyze_image(big_jpeg[:2000])
    partial = caught.value.partial
    assert partial is None or (partial.pdq is None and partial.pdq_quality is None)


def test_the_damage_rule_is_the_callers(big_jpeg: bytes) -> None:
    cut = big_jpeg[: len(big_jpeg) * 3 // 4]
    with pytest.raises(DecodeError, match="under the 95% needed"):
        analyze_image(cut, min_decoded_fraction=0.95)


def test_a_truncated_png_counts_the_rows_above_its_black_fill(astronaut: Image.Image) -> None:
    data = encode(astronaut, "PNG")
    most = analyze_image(data[: len(data) * 3 // 4])
    assert most.damage is not None and most.damage.startswith("truncated image: ")
    assert 0.6 < most.decoded_fraction < 0.9
    with pytest.raises(DecodeError, match=r"^truncated image: ") as caught:
        analyze_image(data[: len(data) // 4])
    assert isinstance(caught.value.partial, ImageAnalysis) and caught.value.partial.pdq is None


def zero_png(path: Path, width: int, height: int) -> None:
    """An all-transparent RGBA PNG written row by row, never held in memory whole."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    comp = zlib.compressobj(9)
    row = bytes(1 + width * 4)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


_PEAK = """
import json, resource, sys
from heroes.pipeline.decode import DecodeError, analyze_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    result = analyze_image(data).width
except DecodeError as error:
    result = str(error)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"result": result, "grown_mib": grown / 1024}))
"""


def peak_rss_of_decoding(path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_13000_pixel_square_rgba_png_is_refused_before_it_takes_gigabytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "huge.png"
    zero_png(path, 13_000, 13_000)
    assert path.stat().st_size < 1_000_000
    peak = peak_rss_of_decoding(path)
    assert peak["result"].startswith("too large to decode: 13000x13000 RGBA needs about 644 MiB")
    assert peak["grown_mib"] < 64


def test_an_rgba_png_within_the_budget_decodes_with_one_full_size_copy(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    zero_png(path, 6_000, 6_000)  # 137 MiB as Pillow holds RGBA
    peak = peak_rss_of_decoding(path)
    assert peak["result"] == 6_000
    assert peak["grown_mib"] < 137 * 1.4, peak


def test_an_rgba_image_reduced_in_strips_matches_pillows_own_thumbnail() -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (1500, 1100, 4), dtype=np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    expected = im.copy()
    expected.thumbnail((128, 128), WORKING_RESAMPLE)
    ours, _ = load_rgb(encode(im, "PNG"), working_size=128)
    assert ours.shape[:2] == (expected.height, expected.width)
    diff = np.abs(ours.astype(int) - to_rgb_array(expected).astype(int))
    assert diff.max() <= 2


def test_truncation_tolerance_does_not_leak_into_pillow(big_jpeg: bytes) -> None:
    with pytest.raises(DecodeError):
        analyze_image(big_jpeg[:5000])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "data",
    [b"", b"just some text\n" * 20, np.random.default_rng(7).bytes(4096), b"\x89PNG\r\n\x1a\n"],
    ids=["empty", "text", "random", "png-signature-only"],
)
def test_bytes_that_are_not_an_image_raise_a_readable_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match=r"cannot identify image|unreadable|truncated|damaged"):
        analyze_image(data)


def test_a_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot identify image"):
        analyze_image(b"")


# --- EXIF ------------------------------------------------------------------------------------


def camera_exif(*, south: bool, west: bool, below_sea: bool) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D Mark IV"
    exif[0x0131] = "Firmware 1.0.4"
    exif[0x0132] = "2021:03:04 05:06:07"
    sub = exif.get_ifd(0x8769)
    sub[0xA431] = "012345678901"
    sub[0xA434] = "EF50mm f/1.8 STM"
    sub[0x9003] = "2021:03:04 05:06:07"
    sub[0x9291] = "25"
    sub[0x9004] = "2021:03:04 05:06:08"
    sub[0x9011] = "+02:00"
    sub[0xA002] = 64
    sub[0xA003] = 48
    gps = exif.get_ifd(0x8825)
    gps[1] = "S" if south else "N"
    gps[2] = (33.0, 51.0, 54.0)
    gps[3] = "W" if west else "E"
    gps[4] = (151.0, 12.0, 36.0)
    gps[5] = b"\x01" if below_sea else b"\x00"
    gps[6] = 12.5
    gps[7] = (10.0, 20.0, 30.0)
    gps[29] = "2021:03:04"
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_camera_exif_is_parsed_into_json_ready_fields(fmt: str) -> None:
    exif = camera_exif(south=True, west=False, below_sea=True)
    result = analyze_image(encode(Image.new("RGB", (64, 48), (90, 120, 30)), fmt, exif=exif))
    assert result.exif == {
        "make": "Canon",
        "model": "Canon EOS 5D Mark IV",
        "body_serial": "012345678901",
        "lens_model": "EF50mm f/1.8 STM",
        "software": "Firmware 1.0.4",
        "datetime_original": "2021-03-04T05:06:07.250000",
        "datetime_digitized": "2021-03-04T05:06:08",
        "datetime": "2021-03-04T05:06:07",
        "offset_time_original": "+02:00",
        "width": 64,
        "height": 48,
        "gps": {"lat": -33.865, "lon": 151.21, "alt": -12.5, "timestamp": "2021-03-04T10:20:30Z"},
    }
    assert json.loads(json.dumps(result.exif)) == result.exif


def test_gps_signs_follow_the_hemisphere_references() -> None:
    exif = camera_exif(south=False, west=True, below_sea=False)
    result = analyze_image(encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert result.exif is not None
    gps = result.exif["gps"]
    assert (gps["lat"], gps["lon"], gps["alt"]) == (33.865, -151.21, 12.5)


def test_malformed_exif_fields_are_dropped_not_raised() -> None:
    exif = Image.Exif()
    exif[0x010F] = "  \x00\x00"
    exif[0x0110] = "Model\x00"
    exif[0x0112] = 42
    exif[0x0132] = "0000:00:00 00:00:00"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "yesterday"
    sub[0x9010] = "+2"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (TiffImagePlugin.IFDRational(1, 0), 2.0, 3.0)
    gps[3] = "E"
    gps[4] = (200.0, 0.0, 0.0)
    gps[6] = TiffImagePlugin.IFDRational(5, 0)
    gps[7] = (25.0, 0.0, 0.0)
    result = analyze_image(encode(Image.new("RGB", (16, 16)), "JPEG", exif=exif))
    assert result.exif == {"model": "Model"}


@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00" + bytes(range(256)) * 4,
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\xff\xff\xff\xff\x00\x00",
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff",
        b"not exif at all",
    ],
    ids=["noise", "bad-offsets", "cut-ifd", "no-header"],
)
def test_garbage_exif_never_costs_the_image_its_record(payload: bytes) -> None:
    result = analyze_image(encode(Image.new("RGB", (32, 24), (1, 2, 3)), "JPEG", exif=payload))
    assert (result.width, result.height) == (32, 24)
    assert result.pdq is not None
    json.dumps(result.exif)


def test_exif_text_ends_at_its_first_nul_as_exiftool_reads_it() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Polaroid"
    exif[0x0110] = "ION230\x00F"
    result = analyze_image(encode(Image.new("RGB", (16, 16)), "JPEG", exif=exif))
    assert result.exif == {"make": "Polaroid", "model": "ION230"}


def test_exif_ifd_tags_written_into_ifd0_are_still_read() -> None:
    exif = Image.Exif()
    exif[0x0110] = "Body"
    exif[0xA431] = "SN-0042"
    exif[0xA434] = "Lens 35mm"
    exif[0x9003] = "2019:08:07 06:05:04"
    result = analyze_image(encode(Image.new("RGB", (16, 16)), "JPEG", exif=exif))
    assert result.exif is not None
    assert result.exif["body_serial"] == "SN-0042" and result.exif["lens_model"] == "Lens 35mm"
    assert result.exif["datetime_original"] == "2019-08-07T06:05:04"


def heic_with_orientation(orientation: int, *, irot: bool) -> bytes:
    """A HEIC of ``halves(64, 32)`` whose EXIF says ``orientation``; with ``irot`` the encoder
    also writes the rotation property, without it only the EXIF tag says so."""
    exif = Image.Exif()
    exif[0x0112] = orientation if irot else 1
    data = encode(halves(64, 32), "HEIF", exif=exif.tobytes(), quality=95)
    if irot:
        return data
    tag = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x01"  # big-endian entry: orientation 1
    assert data.count(tag) == 1
    return data.replace(tag, tag[:-1] + bytes([orientation]))


def test_a_heic_is_shown_as_its_own_transform_says_and_not_as_its_exif() -> None:
    rotated = analyze_image(heic_with_orientation(6, irot=True), keep_pixels=True)
    assert (rotated.width, rotated.height) == (32, 64)
    assert rotated.exif == {"orientation": 6}
    assert rotated.pixels is not None and is_red(rotated.pixels[2, 16])

    stored = analyze_image(heic_with_orientation(6, irot=False), keep_pixels=True)
    assert (stored.width, stored.height) == (64, 32), "no irot: viewers show it unrotated"
    assert stored.exif == {"orientation": 6, "orientation_applied": False}
    assert (
        stored.pixels is not None
        and is_red(stored.pixels[16, 2])
        and is_blue(stored.pixels[16, 61])
    )


XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
    b' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exifEX="http://cipa.jp/exif/1.0/"'
    b' exif:GPSLatitude="33,51.9S" exif:GPSLongitude="151,12,36E" exif:GPSAltitude="125/10"'
    b' exif:GPSAltitudeRef="1" xmp:CreateDate="2020-05-06T07:08:10+02:00"'
    b' photoshop:DateCreated="2020-05-06T07:08:09.5+02:00" xmp:ModifyDate="2020-05-07T00:00:00Z">'
    b"<tiff:Model>Phone X</tiff:Model>"
    b"<exifEX:BodySerialNumber>A1B2</exifEX:BodySerialNumber>"
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    b'<?xpacket end="w"?>'
)


def with_xmp(fmt: str, packet: bytes = XMP_PACKET, **params: Any) -> bytes:
    im = Image.new("RGB", (32, 24), (10, 200, 30))
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode("utf-8"))
        return encode(im, fmt, pnginfo=info, **params)
    if fmt == "TIFF":
        return encode(im, fmt, tiffinfo={700: packet}, **params)
    return encode(im, fmt, xmp=packet, **params)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_times_and_place_found_only_in_xmp_are_read(fmt: str) -> None:
    result = analyze_image(with_xmp(fmt))
    assert result.exif == {
        "model": "Phone X",
        "body_serial": "A1B2",
        "datetime_original": "2020-05-06T07:08:09.500000",
        "offset_time_original": "+02:00",
        "datetime_digitized": "2020-05-06T07:08:10",
        "offset_time_digitized": "+02:00",
        "datetime": "2020-05-07T00:00:00",
        "offset_time": "+00:00",
        "gps": {"lat": -33.865, "lon": 151.21, "alt": -12.5},
    }


def test_exif_wins_over_xmp_and_xmp_fills_only_what_exif_lacks() -> None:
    exif = camera_exif(south=False, west=False, below_sea=False)
    del exif.get_ifd(0x8825)[29]
    result = analyze_image(with_xmp("JPEG", exif=exif))
    assert result.exif is not None
    assert result.exif["model"] == "Canon EOS 5D Mark IV"
    assert result.exif["datetime_original"] == "2021-03-04T05:06:07.250000"
    assert result.exif["gps"]["lat"] == 33.865 and result.exif["gps"]["alt"] == 12.5
    assert result.exif["body_serial"] == "012345678901"


@pytest.mark.parametrize(
    "packet",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>',
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF",
        b"\x00" * 64,
        XMP_PACKET.replace(b"33,51.9S", b"95,0N").replace(b"2020-05-06T07:08:09.5", b"yesterday"),
    ],
    ids=["entities", "cut", "zeros", "bad-values"],
)
def test_hostile_or_broken_xmp_never_costs_the_image_its_record(packet: bytes) -> None:
    result = analyze_image(with_xmp("JPEG", packet))
    assert (result.width, result.height) == (32, 24)
    assert result.exif is None or "lat" not in result.exif.get("gps", {})
    assert result.exif is None or "datetime_original" not in result.exif


def iptc_jpeg(date: bytes, time: bytes) -> bytes:
    """A JPEG with an IPTC-IIM block (APP13, Photoshop 3.0 resource 0x0404)."""

    def dataset(number: int, value: bytes) -> bytes:
        return bytes([0x1C, 2, number]) + struct.pack(">H", len(value)) + value

    iim = dataset(0, b"\x00\x04") + dataset(55, date) + dataset(60, time)
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim
    if len(iim) % 2:
        resource += b"\x00"
    payload = b"Photoshop 3.0\x00" + resource
    app13 = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = encode(Image.new("RGB", (16, 16), (40, 50, 60)), "JPEG")
    return jpeg[:2] + app13 + jpeg[2:]


def test_a_creation_time_found_only_in_iptc_is_read() -> None:
    result = analyze_image(iptc_jpeg(b"20180910", b"111213+0100"))
    assert result.exif == {
        "datetime_original": "2018-09-10T11:12:13",
        "offset_time_original": "+01:00",
    }


# --- EXIF against exiftool -------------------------------------------------------------------


def exiftool_fields(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["exiftool", "-j", "-n", "-a", "-G1", str(path)], capture_output=True, text=True, check=True
    )
    tags: dict[str, Any] = json.loads(done.stdout)[0]

    def tag(*names: str) -> Any:
        for name in names:
            for key, value in tags.items():
                if key.split(":")[-1] == name:
                    return value
        return None

    return {
        "model": tag("Model"),
        "body_serial": tag("SerialNumber", "BodySerialNumber"),
        "datetime_original": tag("DateTimeOriginal", "DateCreated"),
        # exiftool's composite tags carry the sign of the hemisphere reference
        "lat": tags.get("Composite:GPSLatitude", tag("GPSLatitude")),
        "lon": tags.get("Composite:GPSLongitude", tag("GPSLongitude")),
    }


def heroes_fields(data: bytes) -> dict[str, Any]:
    exif = analyze_image(data).exif or {}
    stamp = exif.get("datetime_original")
    return {
        "model": exif.get("model"),
        "body_serial": exif.get("body_serial"),
        "datetime_original": stamp.replace("-", ":").replace("T", " ") if stamp else None,
        "lat": (exif.get("gps") or {}).get("lat"),
        "lon": (exif.get("gps") or {}).get("lon"),
    }


def test_exif_fields_agree_with_exiftool(tmp_path: Path) -> None:
    nul = Image.Exif()
    nul[0x0110] = "ION230\x00F"
    nul[0xA431] = "IFD0-SERIAL"
    nul.get_ifd(0x8769)[0x9003] = "2017:01:02 03:04:05"
    gps = nul.get_ifd(0x8825)
    gps.update({1: "S", 2: (33.0, 51.0, 54.0), 3: "E", 4: (151.0, 12.0, 36.0)})
    xmp_only = XMP_PACKET.replace(b"photoshop:DateCreated", b"exif:DateTimeOriginal").replace(
        b"2020-05-06T07:08:09.5+02:00", b"2020-05-06T07:08:09"
    )
    images = {
        "ifd0.jpg": encode(Image.new("RGB", (16, 16)), "JPEG", exif=nul),
        "xmp.jpg": with_xmp("JPEG", xmp_only),
    }
    for name, data in images.items():
        path = tmp_path / name
        path.write_bytes(data)
        ours, theirs = heroes_fields(data), exiftool_fields(path)
        assert ours["model"] == theirs["model"] and ours["body_serial"] == theirs["body_serial"]
        assert ours["datetime_original"] == theirs["datetime_original"], name
        assert ours["lat"] == pytest.approx(theirs["lat"], abs=1e-6), name
        assert ours["lon"] == pytest.approx(theirs["lon"], abs=1e-6), name


# --- PDQ -------------------------------------------------------------------------------------


def test_pdq_hex_follows_the_threatexchange_convention(astronaut: Image.Image) -> None:
    pixels = np.asarray(astronaut)
    bits, _ = pdqhash.compute(pixels)
    bin_str = "".join(str(int(b)) for b in bits)
    reference = f"{int(bin_str, 2):0{(len(bin_str) + 3) // 4}X}"
    assert pdq_hex(pixels)[0] == reference.lower()


def test_the_flip_variant_of_a_flipped_image_hashes_like_the_original(
    astronaut: Image.Image, astronaut_pdq: str
) -> None:
    flipped = np.ascontiguousarray(np.asarray(astronaut)[:, ::-1])
    variants, _ = pdqhash.compute_dihedral(flipped)
    unflipped = np.packbits(np.asarray(variants[5], dtype=np.uint8)).tobytes().hex()
    assert pdq_distance(unflipped, astronaut_pdq) <= MATCH
    assert pdq_distance(pdq_hex(flipped)[0], astronaut_pdq) > MATCH


def test_resized_and_recompressed_copies_match_and_another_photo_does_not(
    astronaut: Image.Image,
) -> None:
    original = analyze_image(encode(astronaut, "PNG")).pdq
    small = analyze_image(encode(astronaut.resize((200, 200)), "PNG")).pdq
    recompressed = analyze_image(encode(astronaut, "JPEG", quality=40)).pdq
    other = analyze_image(encode(Image.fromarray(skdata.chelsea()), "JPEG")).pdq
    assert original and small and recompressed and other
    assert pdq_distance(original, small) <= MATCH
    assert pdq_distance(original, recompressed) <= MATCH
    assert pdq_distance(original, other) > MATCH


def test_a_photo_has_high_pdq_quality_and_a_flat_grey_image_low() -> None:
    photo = analyze_image(encode(Image.fromarray(skdata.rocket()), "JPEG"))
    grey = analyze_image(encode(Image.new("RGB", (300, 200), (128, 128, 128)), "PNG"))
    assert photo.pdq_quality is not None and photo.pdq_quality >= 50
    assert grey.pdq_quality is not None and grey.pdq_quality < 50


def test_pdq_distance_counts_differing_bits() -> None:
    zero, ones = "0" * 64, "f" * 64
    assert pdq_distance(zero, zero) == 0
    assert pdq_distance(zero, ones) == 256
    assert pdq_distance(zero, "8" + "0" * 63) == 1
    with pytest.raises(ValueError, match="not a PDQ hash"):
        pdq_distance(zero, "xyz")


def test_vectorised_distances_agree_with_the_scalar_one() -> None:
    rng = np.random.default_rng(3)
    hashes = [rng.bytes(32).hex() for _ in range(20)]
    table = pdq_bytes(hashes)
    assert table.shape == (20, 32)
    expected = [pdq_distance(hashes[0], h) for h in hashes]
    assert pdq_distances(hashes[0], table).tolist() == expected


def test_a_truncated_jpeg_is_seen_as_damaged_even_when_a_library_made_pillow_lenient(
    astronaut: Image.Image,
) -> None:
    whole = encode(astronaut, "JPEG", quality=90)
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as WeasyPrint does when it is imported
    try:
        cut = analyze_image(whole[:-100])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert cut.damage is not None and cut.damage.startswith("truncated image: ")
