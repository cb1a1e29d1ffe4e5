"""EXIF coverage: heroes' ``exif`` fields against exiftool's, field by field, on images built here.

The images are package sample photos (scikit-image) saved as JPEG, PNG, WebP, TIFF and HEIC with
metadata written by this script (Pillow's EXIF writer, an XMP packet, an IPTC block), in the
cases seen in seized media: a full camera EXIF, text with a NUL and junk after it, EXIF-IFD tags
written into IFD0, times and place only in XMP, a creation time only in IPTC, EXIF and XMP that
disagree (EXIF wins, as in exiftool), and southern/western/below-sea GPS. exiftool (Debian
``libimage-exiftool-perl``) reads every file once; each field counts as agreeing when both tools
give the same value (times to the second, coordinates to 1e-6 degrees).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_result
from PIL import Image, PngImagePlugin

from heroes.pipeline.decode import analyze_image

FIELDS = (
    "make",
    "model",
    "body_serial",
    "lens_model",
    "software",
    "datetime_original",
    "datetime_digitized",
    "datetime",
    "orientation",
    "lat",
    "lon",
    "alt",
)
FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "HEIF")
CASES = ("camera", "nul", "ifd0", "xmp", "iptc", "exif+xmp", "south-west-below")
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "HEIF": "heic"}

#: exiftool tags (group-less name; EXIF groups first, then XMP, then IPTC) for each field
EXIFTOOL: dict[str, tuple[str, ...]] = {
    "make": ("IFD0:Make", "XMP-tiff:Make"),
    "model": ("IFD0:Model", "XMP-tiff:Model"),
    "body_serial": (
        "ExifIFD:SerialNumber",
        "IFD0:SerialNumber",
        "XMP-exifEX:SerialNumber",
        "XMP-exifEX:BodySerialNumber",
        "XMP-aux:SerialNumber",
    ),
    "lens_model": ("ExifIFD:LensModel", "IFD0:LensModel", "XMP-exifEX:LensModel", "XMP-aux:Lens"),
    "software": ("IFD0:Software", "XMP-tiff:Software", "XMP-xmp:CreatorTool"),
    "datetime_original": (
        "ExifIFD:DateTimeOriginal",
        "IFD0:DateTimeOriginal",
        "XMP-exif:DateTimeOriginal",
        "XMP-photoshop:DateCreated",
        "IPTC:DateCreated+IPTC:TimeCreated",
    ),
    "datetime_digitized": (
        "ExifIFD:CreateDate",
        "IFD0:CreateDate",
        "XMP-exif:DateTimeDigitized",
        "XMP-xmp:CreateDate",
        "IPTC:DigitalCreationDate+IPTC:DigitalCreationTime",
    ),
    "datetime": ("IFD0:ModifyDate", "XMP-xmp:ModifyDate", "XMP-tiff:DateTime"),
    "orientation": ("IFD0:Orientation",),
    "lat": ("Composite:GPSLatitude", "XMP-exif:GPSLatitude"),
    "lon": ("Composite:GPSLongitude", "XMP-exif:GPSLongitude"),
    "alt": ("Composite:GPSAltitude", "XMP-exif:GPSAltitude"),
}


def photos(size: int) -> list[Image.Image]:
    import skimage.data as data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        im = Image.fromarray(getattr(data, name)()).convert("RGB")
        im.thumbnail((size, size))
        out.append(im)
    return out


def camera_exif(rng: np.random.Generator, *, place: str = "ifd", south_west: bool = False) -> Any:
    exif = Image.Exif()
    year = int(rng.integers(2005, 2025))
    day = f"{year}:0{rng.integers(1, 9)}:1{rng.integers(0, 9)}"
    stamp = f"{day} 1{rng.integers(0, 9)}:2{rng.integers(0, 9)}:3{rng.integers(0, 9)}"
    exif[0x010F] = str(rng.choice(["Canon", "NIKON CORPORATION", "Apple", "samsung"]))
    exif[0x0110] = str(rng.choice(["EOS 80D", "D750", "iPhone 12", "SM-G991B"]))
    exif[0x0131] = "Firmware 1.2"
    exif[0x0132] = stamp
    exif[0x0112] = int(rng.choice([1, 3, 6, 8]))
    target = exif if place == "ifd0" else exif.get_ifd(0x8769)
    target[0xA431] = f"{rng.integers(10**8, 10**9)}"
    target[0xA434] = str(rng.choice(["EF50mm f/1.8 STM", "24-70mm F2.8"]))
    target[0x9003] = stamp
    target[0x9004] = stamp
    gps = exif.get_ifd(0x8825)
    gps[1], gps[3] = ("S", "W") if south_west else ("N", "E")
    gps[2] = (float(rng.integers(0, 80)), float(rng.integers(0, 60)), float(rng.integers(0, 60)))
    gps[4] = (float(rng.integers(0, 179)), float(rng.integers(0, 60)), float(rng.integers(0, 60)))
    gps[5] = b"\x01" if south_west else b"\x00"
    gps[6] = float(rng.integers(1, 3000))
    return exif


def xmp_packet(rng: np.random.Generator) -> bytes:
    ns, ew = rng.choice(["N", "S"]), rng.choice(["E", "W"])
    lat = f"{rng.integers(0, 80)},{rng.integers(0, 60)}.{rng.integers(0, 99):02d}{ns}"
    lon = f"{rng.integers(0, 179)},{rng.integers(0, 60)},{rng.integers(0, 60)}{ew}"
    day = f"20{rng.integers(10, 25)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}"
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exifEX="http://cipa.jp/exif/1.0/"'
        f' exif:GPSLatitude="{lat}" exif:GPSLongitude="{lon}"'
        f' exif:GPSAltitude="{rng.integers(1, 30000)}/10" exif:GPSAltitudeRef="0"'
        f' photoshop:DateCreated="{day}T10:11:12+02:00" xmp:CreateDate="{day}T10:11:13+02:00"'
        f' xmp:ModifyDate="{day}T20:00:00Z">'
        "<tiff:Make>XMP Make</tiff:Make><tiff:Model>XMP Model</tiff:Model>"
        "<exifEX:BodySerialNumber>XMP-SERIAL</exifEX:BodySerialNumber>"
        "<xmp:CreatorTool>Editor 3</xmp:CreatorTool>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def with_iptc(jpeg: bytes, rng: np.random.Generator) -> bytes:
    def dataset(number: int, value: bytes) -> bytes:
        return bytes([0x1C, 2, number]) + struct.pack(">H", len(value)) + value

    date = f"20{rng.integers(10, 25)}0{rng.integers(1, 9)}1{rng.integers(0, 9)}".encode()
    iim = dataset(0, b"\x00\x04") + dataset(55, date) + dataset(60, b"081522+0100")
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim
    resource += b"\x00" * (len(iim) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def build(im: Image.Image, fmt: str, case: str, rng: np.random.Generator) -> bytes | None:
    params: dict[str, Any] = {}
    exif = None
    xmp = None
    if case in ("camera", "exif+xmp"):
        exif = camera_exif(rng)
    elif case == "nul":
        exif = camera_exif(rng)
        exif[0x0110] = "ION230\x00F"
        exif[0x010F] = "Polaroid\x00\x00junk"
    elif case == "ifd0":
        exif = camera_exif(rng, place="ifd0")
    elif case == "south-west-below":
        exif = camera_exif(rng, south_west=True)
    if case in ("xmp", "exif+xmp"):
        xmp = xmp_packet(rng)
    if case == "iptc" and fmt != "JPEG":
        return None
    if exif is not None:
        params["exif"] = exif.tobytes() if fmt == "HEIF" else exif
    if xmp is not None:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
            params["pnginfo"] = info
        elif fmt == "TIFF":
            params["tiffinfo"] = {700: xmp}
        else:
            params["xmp"] = xmp
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    data = buf.getvalue()
    return with_iptc(data, rng) if case == "iptc" else data


def exiftool_read(folder: Path) -> tuple[dict[str, dict[str, Any]], float]:
    t0 = time.perf_counter()
    done = subprocess.run(
        ["exiftool", "-j", "-n", "-a", "-G1", "-q", "-r", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - t0
    return {Path(r["SourceFile"]).name: r for r in json.loads(done.stdout)}, took


def their_value(tags: dict[str, Any], field: str) -> Any:
    for name in EXIFTOOL[field]:
        if "+" in name:
            date_tag, time_tag = name.split("+")
            if date_tag in tags and time_tag in tags:
                return f"{tags[date_tag]} {tags[time_tag]}"
            continue
        if name in tags and tags[name] not in ("", None):
            return tags[name]
    return None


def our_value(exif: dict[str, Any], field: str) -> Any:
    if field in ("lat", "lon", "alt"):
        return (exif.get("gps") or {}).get(field)
    return exif.get(field)


def normalise(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field.startswith("datetime"):
        text = str(value).replace("T", " ")
        date, _, clock = text.partition(" ")
        return f"{date.replace('-', ':')} {clock[:8]}" if clock else None
    if field in ("lat", "lon", "alt"):
        return round(float(value), 6)
    if field == "orientation":
        return int(value)
    return str(value).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256, help="longest side of the sample photos")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if shutil.which("exiftool") is None:
        raise SystemExit("exiftool not found: install Debian libimage-exiftool-perl")
    rng = np.random.default_rng(args.seed)
    print(f"seed={args.seed} formats={FORMATS} cases={CASES}")
    folder = Path(tempfile.mkdtemp(prefix="bench_exif_"))
    built: dict[str, tuple[str, str, bytes]] = {}
    for i, im in enumerate(photos(args.size)):
        for fmt in FORMATS:
            for case in CASES:
                data = build(im, fmt, case, rng)
                if data is None:
                    continue
                name = f"p{i}_{case}.{EXT[fmt]}"
                (folder / name).write_bytes(data)
                built[name] = (fmt, case, data)
    theirs, exiftool_s = exiftool_read(folder)
    t0 = time.perf_counter()
    ours = {name: analyze_image(data).exif or {} for name, (_f, _c, data) in built.items()}
    heroes_s = time.perf_counter() - t0

    per_field = {
        f: {"exiftool_has": 0, "agree": 0, "differ": 0, "missing": 0, "extra": 0} for f in FIELDS
    }
    per_case: dict[str, dict[str, int]] = {}
    disagreements = []
    for name, (_fmt, case, _data) in built.items():
        row = per_case.setdefault(case, {"fields": 0, "agree": 0})
        for field in FIELDS:
            theirs_v = normalise(field, their_value(theirs.get(name, {}), field))
            ours_v = normalise(field, our_value(ours[name], field))
            counts = per_field[field]
            if theirs_v is None:
                counts["extra"] += ours_v is not None
                continue
            counts["exiftool_has"] += 1
            row["fields"] += 1
            if ours_v == theirs_v:
                counts["agree"] += 1
                row["agree"] += 1
            elif ours_v is None:
                counts["missing"] += 1
                disagreements.append((name, field, ours_v, theirs_v))
            else:
                counts["differ"] += 1
                disagreements.append((name, field, ours_v, theirs_v))
    total = sum(c["exiftool_has"] for c in per_field.values())
    agree = sum(c["agree"] for c in per_field.values())
    for name, field, o, t in disagreements[:20]:
        print(f"  {name} {field}: heroes {o!r} exiftool {t!r}")
    print(f"{len(built)} images, {total} fields exiftool reports, heroes agrees on {agree}")
    shutil.rmtree(folder)
    write_result(
        "exif",
        {
            "seed": args.seed,
            "images": len(built),
            "fields_reported_by_exiftool": total,
            "agree": agree,
            "coverage": round(agree / total, 4) if total else None,
            "per_field": per_field,
            "per_case": per_case,
            "disagreements": [
                {"file": n, "field": f, "heroes": o, "exiftool": t} for n, f, o, t in disagreements
            ],
            "heroes_ms_per_image": round(1000 * heroes_s / len(built), 2),
            "exiftool_ms_per_image": round(1000 * exiftool_s / len(built), 2),
            "exiftool_version": subprocess.run(
                ["exiftool", "-ver"], capture_output=True, text=True, check=False
            ).stdout.strip(),
        },
    )


if __name__ == "__main__":
    main()
