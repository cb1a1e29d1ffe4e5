"""A small benign demo seizure, built from photos that scikit-image and scikit-learn ship.

No real case material is ever used: the "known-bad" hash set of the demo lists the hashes of a
benign sample photo (a rocket) so that matching can be shown, and says so in its comments.

``python -m heroes.demo build DEST`` writes DEST (the seizure) and DEST-hashsets/ beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def sample_photos() -> dict[str, NDArray[np.uint8]]:
    """Benign photos shipped by scikit-image and scikit-learn, as RGB arrays."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    def rgb(a: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return np.stack([a] * 3, axis=-1) if a.ndim == 2 else a[..., :3]

    left, right, _disp = data.stereo_motorcycle()
    china, flower = load_sample_images().images
    return {
        "astronaut": data.astronaut(),
        "camera": rgb(data.camera()),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "china": china,
        "flower": flower,
        "hubble": data.hubble_deep_field(),
    }


def jpeg_bytes(a: NDArray[np.uint8], quality: int = 90, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality, exif=exif if exif is not None else b"")
    return buf.getvalue()


def png_bytes(a: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def demo_exif() -> Image.Exif:
    """EXIF of a made-up camera, with GPS, so the demo shows what EXIF extraction reports."""
    ex = Image.Exif()
    ex[0x010F] = "DemoCam"  # Make
    ex[0x0110] = "DC-1"  # Model
    exif_ifd = ex.get_ifd(0x8769)
    exif_ifd[0x9003] = "2024:05:17 10:21:33"  # DateTimeOriginal
    exif_ifd[0xA431] = "SN-000123"  # BodySerialNumber
    gps = ex.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (Fraction(51, 1), Fraction(30, 1), Fraction(0, 1))
    gps[3] = "W"
    gps[4] = (Fraction(0, 1), Fraction(7, 1), Fraction(30, 1))
    return ex


def video_bytes(
    frames: list[tuple[NDArray[np.uint8], float]], fps: int = 10, size: tuple[int, int] = (320, 240)
) -> bytes:
    """An H.264 MP4 showing each photo for its number of seconds (benign photos only)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(fps * 2), "preset": "ultrafast"}
        for photo, seconds in frames:
            img = np.asarray(Image.fromarray(photo).resize(size))
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def build_demo(dest: Path, hashsets_dir: Path | None = None, *, seed: int = 7) -> dict[str, Path]:
    """Write the demo seizure to ``dest`` and its hash sets to ``hashsets_dir``.

    Contents: the sample photos (JPEG/PNG/WebP), transformed copies (flipped, resized,
    recompressed, renamed ``.txt``), an exact duplicate, a photo with EXIF and GPS, a short video,
    a zip holding a nested tar.gz, and broken files (truncated JPEG, empty file, random bytes named
    ``.jpg``, text named ``.png``, a small zip bomb).
    """
    rng = np.random.default_rng(seed)
    dest = Path(dest)
    hashsets_dir = Path(hashsets_dir) if hashsets_dir else dest.parent / f"{dest.name}-hashsets"
    for d in (dest, hashsets_dir):
        if d.exists():
            shutil.rmtree(d)
    photos = sample_photos()
    (dest / "DCIM" / "100DEMO").mkdir(parents=True)
    (dest / "Downloads").mkdir()
    (dest / "misc").mkdir()

    cam = dest / "DCIM" / "100DEMO"
    for i, (name, a) in enumerate(photos.items()):
        (cam / f"IMG_{i:04d}_{name}.jpg").write_bytes(
            jpeg_bytes(a, exif=demo_exif() if name == "chelsea" else None)
        )
    (dest / "Downloads" / "coffee.png").write_bytes(png_bytes(photos["coffee"]))
    buf = io.BytesIO()
    Image.fromarray(photos["flower"]).save(buf, "WEBP", quality=85)
    (dest / "Downloads" / "flower.webp").write_bytes(buf.getvalue())

    # transformed copies: found by PDQ, not by exact hash
    (dest / "Downloads" / "astronaut_flipped.jpg").write_bytes(
        jpeg_bytes(photos["astronaut"][:, ::-1].copy())
    )
    small = np.asarray(Image.fromarray(photos["china"]).resize((320, 213)))
    (dest / "Downloads" / "china_small.jpg").write_bytes(jpeg_bytes(small, quality=70))
    (dest / "Downloads" / "rocket_recompressed.jpg").write_bytes(
        jpeg_bytes(photos["rocket"], quality=40)
    )
    (dest / "misc" / "notes.txt").write_bytes(jpeg_bytes(photos["camera"]))  # an image named .txt
    shutil.copyfile(
        cam / "IMG_0002_coffee.jpg", dest / "misc" / "copy_of_coffee.jpg"
    )  # exact duplicate

    # a video: coffee for 1 s, the astronaut from 1 s to 3 s, the rocket for 1 s
    (dest / "misc" / "clip.mp4").write_bytes(
        video_bytes([(photos["coffee"], 1.0), (photos["astronaut"], 2.0), (photos["rocket"], 1.0)])
    )

    # archives: a zip with photos and a nested tar.gz
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        for name in ("chelsea", "motorcycle_right"):
            payload = jpeg_bytes(photos[name], quality=85)
            ti = tarfile.TarInfo(f"holiday/{name}.jpg")
            ti.size, ti.mtime = len(payload), 1_700_000_000
            tf.addfile(ti, io.BytesIO(payload))
    with zipfile.ZipFile(dest / "Downloads" / "photos.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("album/astronaut.png", png_bytes(photos["astronaut"]))
        zf.writestr("album/rocket.jpg", (cam / "IMG_0004_rocket.jpg").read_bytes())
        zf.writestr("album/holiday.tar.gz", inner.getvalue())
        zf.writestr(
            "../../escape.txt", b"a member name that points outside; recorded, never written"
        )

    # broken input: each must become a clear record, never a crash
    broken = dest / "broken"
    broken.mkdir()
    full = jpeg_bytes(photos["coffee"])
    (broken / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "random.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (broken / "text.png").write_text("this is not a picture\n")
    with zipfile.ZipFile(broken / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(64 * 1024 * 1024))

    # hash sets (kept outside the seizure)
    hashsets_dir.mkdir(parents=True)
    rocket = (cam / "IMG_0004_rocket.jpg").read_bytes()
    from heroes.pipeline.decode import analyze_image

    hubble_pdq = analyze_image((cam / "IMG_0009_hubble.jpg").read_bytes()).pdq
    vics = {
        "odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Media",
        "value": [
            {
                "MediaID": 1,
                "MD5": hashlib.md5(rocket).hexdigest().upper(),
                "SHA1": hashlib.sha1(rocket).hexdigest().upper(),
                "Category": 1,
                "IsPrecategorized": "true",
                "Comments": "DEMO ONLY: a benign scikit-image photo standing in for a known file",
            }
        ],
    }
    (hashsets_dir / "known-bad.vics.json").write_text(
        "\ufeff" + json.dumps(vics, indent=2), encoding="utf-8"
    )
    (hashsets_dir / "known-bad.pdq.txt").write_text(
        f"# DEMO ONLY: PDQ of a benign photo (hubble deep field)\n{hubble_pdq} demo-series\n"
    )
    flower = (dest / "Downloads" / "flower.webp").read_bytes()
    (hashsets_dir / "known-good.csv").write_text(
        f"SHA256,FileName\n{hashlib.sha256(flower).hexdigest()},flower.webp\n"
    )
    os.utime(dest, (1_700_000_000, 1_700_000_000))
    return {"seizure": dest, "hashsets": hashsets_dir}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m heroes.demo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the demo seizure")
    b.add_argument("dest", type=Path)
    b.add_argument("--hashsets", type=Path, default=None)
    args = p.parse_args(argv)
    paths = build_demo(args.dest, args.hashsets)
    n = sum(1 for _ in paths["seizure"].rglob("*") if _.is_file())
    print(f"demo seizure: {paths['seizure']} ({n} files); hash sets: {paths['hashsets']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
