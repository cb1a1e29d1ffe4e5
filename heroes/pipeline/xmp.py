"""Capture facts that a picture holds only in XMP or IPTC, as the record's EXIF fields.

Editors and phones often write the time and place of a picture only in XMP (Lightroom, Photoshop,
Google Photos exports) or in IPTC (news and archive workflows). The record's ``exif`` fields that
EXIF left empty are filled from these, with the mapping of the Metadata Working Group that
exiftool follows:

=====================  ==================================================  ===================
record field           XMP                                                 IPTC (IIM)
=====================  ==================================================  ===================
``datetime_original``  ``exif:DateTimeOriginal``, ``photoshop:DateCreated``  2:55 + 2:60
``datetime_digitized`` ``exif:DateTimeDigitized``, ``xmp:CreateDate``      2:62 + 2:63
``datetime``           ``xmp:ModifyDate``, ``tiff:DateTime``
``make``, ``model``    ``tiff:Make``, ``tiff:Model``
``body_serial``        ``exifEX:BodySerialNumber``, ``aux:SerialNumber``
``lens_model``         ``exifEX:LensModel``, ``aux:Lens``
``software``           ``tiff:Software``, ``xmp:CreatorTool``
``gps``                ``exif:GPSLatitude``/``GPSLongitude`` ("52,22.5N"),
                       ``exif:GPSAltitude`` (+ ``GPSAltitudeRef``), ``exif:GPSTimeStamp``
=====================  ==================================================  ===================

The XMP packet is untrusted XML: it is parsed with ``defusedxml`` (no DTD, no entities, no
network) and only when it is at most :data:`MAX_XMP_BYTES`. Like the EXIF reader, a field that
is missing or malformed is left out and nothing here raises.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from fractions import Fraction
from typing import Any, TypeVar
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeTree
from PIL import Image

_T = TypeVar("_T")

MAX_XMP_BYTES = 1 << 20
_MAX_TEXT = 256

_NS = {
    "exif": "http://ns.adobe.com/exif/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

#: record field -> XMP properties, first found wins
_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "make": ("tiff:Make",),
    "model": ("tiff:Model",),
    "body_serial": ("exifEX:BodySerialNumber", "aux:SerialNumber"),
    "lens_model": ("exifEX:LensModel", "aux:Lens"),
    "software": ("tiff:Software", "xmp:CreatorTool"),
}
_DATE_FIELDS: dict[str, tuple[str, ...]] = {
    "datetime_original": ("exif:DateTimeOriginal", "photoshop:DateCreated"),
    "datetime_digitized": ("exif:DateTimeDigitized", "xmp:CreateDate"),
    "datetime": ("xmp:ModifyDate", "tiff:DateTime"),
}
_OFFSET_OF = {
    "datetime_original": "offset_time_original",
    "datetime_digitized": "offset_time_digitized",
    "datetime": "offset_time",
}

_ISO = re.compile(
    r"(\d{4})[-:](\d{2})[-:](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?)?"
    r"\s*(Z|[+\-]\d{2}:?\d{2})?$"
)
_XMP_COORD = re.compile(r"(\d{1,3})(?:,(\d{1,2}(?:\.\d+)?))?(?:,(\d{1,2}(?:\.\d+)?))?([NSEW])$")


def xmp_packet(im: Image.Image) -> bytes | None:
    """The raw XMP packet that Pillow (or pillow-heif) found in the file, if any."""
    info = im.info
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = info.get(key)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    tags = getattr(im, "tag_v2", None)
    value = tags.get(700) if tags is not None else None
    if isinstance(value, bytes | str) and value:
        return value.encode("utf-8") if isinstance(value, str) else value
    return None


def read_xmp(packet: bytes | None) -> dict[str, Any]:
    """Record fields found in an XMP packet (empty when there is none or it cannot be read)."""
    if not packet or len(packet) > MAX_XMP_BYTES:
        return {}
    props = safe_read(lambda: dict(_properties(packet))) or {}
    out: dict[str, Any] = {}
    for field, names in _TEXT_FIELDS.items():
        value = _first(props, names, _text)
        if value is not None:
            out[field] = value
    for field, names in _DATE_FIELDS.items():
        parsed = _first(props, names, _iso_datetime)
        if parsed is not None:
            out[field] = parsed[0]
            if parsed[1] is not None:
                out[_OFFSET_OF[field]] = parsed[1]
    gps = safe_read(lambda: _gps(props))
    if gps:
        out["gps"] = gps
    return out


def read_iptc(im: Image.Image) -> dict[str, Any]:
    """Creation times from a JPEG's IPTC-IIM block (2:55/2:60 and 2:62/2:63)."""
    from PIL import IptcImagePlugin

    info = safe_read(lambda: IptcImagePlugin.getiptcinfo(im))
    if not info:
        return {}
    out: dict[str, Any] = {}
    for field, (date_tag, time_tag) in {
        "datetime_original": ((2, 55), (2, 60)),
        "datetime_digitized": ((2, 62), (2, 63)),
    }.items():
        parsed = safe_read(lambda d=date_tag, t=time_tag: _iptc_datetime(info.get(d), info.get(t)))
        if parsed is not None:
            out[field] = parsed[0]
            if parsed[1] is not None:
                out[_OFFSET_OF[field]] = parsed[1]
    return out


def fill_missing(exif: dict[str, Any] | None, *sources: dict[str, Any]) -> dict[str, Any] | None:
    """``exif`` with the fields it lacks taken from ``sources`` in order; a date brings its
    offset along, and GPS is merged key by key (latitude and longitude always as a pair)."""
    out = dict(exif or {})
    for source in sources:
        for key, value in source.items():
            if key.startswith("offset_time"):
                continue
            if key == "gps":
                have = out.get("gps") or {}
                merged = {**value, **have}
                if "lat" in have:
                    merged["lat"], merged["lon"] = have["lat"], have["lon"]
                out["gps"] = merged
            elif key not in out:
                out[key] = value
                offset = _OFFSET_OF.get(key)
                if offset and offset in source and offset not in out:
                    out[offset] = source[offset]
    return out or None


# --- parsing ---------------------------------------------------------------------------------


def _properties(packet: bytes) -> Iterator[tuple[str, str]]:
    """``(prefix:Name, text)`` of every simple property of the packet's rdf:Description nodes,
    written as attributes or as elements (a language alternative or list gives its first item)."""
    start = packet.find(b"<x:xmpmeta")
    closing = b"</x:xmpmeta>"
    if start < 0:
        start, closing = packet.find(b"<rdf:RDF"), b"</rdf:RDF>"
    if start < 0:
        return
    end = packet.find(closing, start)
    body = packet[start : end + len(closing)] if end > 0 else packet[start:]
    root = SafeTree.fromstring(body, forbid_dtd=True)
    prefix_of = {uri: prefix for prefix, uri in _NS.items()}
    for node in root.iter(f"{{{_RDF}}}Description"):
        for key, value in node.attrib.items():
            name = _qualified(key, prefix_of)
            if name:
                yield name, value
        for child in node:
            name = _qualified(child.tag, prefix_of)
            text = _element_text(child)
            if name and text is not None:
                yield name, text


def _qualified(tag: str, prefix_of: dict[str, str]) -> str | None:
    if not tag.startswith("{"):
        return None
    uri, _, local = tag[1:].partition("}")
    prefix = prefix_of.get(uri)
    return f"{prefix}:{local}" if prefix else None


def _element_text(node: Element) -> str | None:
    if node.text and node.text.strip():
        return node.text
    for li in node.iter(f"{{{_RDF}}}li"):
        if li.text and li.text.strip():
            return li.text
    return None


def _first(props: dict[str, str], names: tuple[str, ...], parse: Callable[[str], Any]) -> Any:
    for name in names:
        if name in props:
            value = safe_read(lambda n=name: parse(props[n]))
            if value is not None:
                return value
    return None


def _text(value: str) -> str | None:
    value = value.split("\x00", 1)[0]
    value = "".join(c if c.isprintable() else " " for c in value[: 4 * _MAX_TEXT]).strip()
    return value[:_MAX_TEXT] or None


def _iso_datetime(value: str) -> tuple[str, str | None] | None:
    """XMP date (ISO 8601, seconds and zone optional) -> (naive ISO datetime, offset or None).

    A date without a time is left out: the record's times are instants.
    """
    match = _ISO.match(value.strip())
    if match is None or match.group(4) is None:
        return None
    y, mo, d, h, mi = (int(match.group(i)) for i in range(1, 6))
    s = int(match.group(6) or 0)
    micro = int((match.group(7) or "0").ljust(6, "0"))
    stamp = datetime(y, mo, d, h, mi, s, micro).isoformat()
    zone = match.group(8)
    if zone is None:
        return stamp, None
    if zone == "Z":
        return stamp, "+00:00"
    digits = zone.replace(":", "")
    return stamp, f"{digits[:3]}:{digits[3:]}"


def _iptc_datetime(date: Any, time: Any) -> tuple[str, str | None] | None:
    if isinstance(date, list):
        date = date[0]
    if isinstance(time, list):
        time = time[0]
    if not isinstance(date, bytes) or time is None:
        return None
    day = datetime.strptime(date.decode("ascii").strip(), "%Y%m%d")
    clock = time.decode("ascii").strip() if isinstance(time, bytes) else ""
    if len(clock) < 6 or not clock[:6].isdigit():
        return None
    stamp = day.replace(hour=int(clock[:2]), minute=int(clock[2:4]), second=int(clock[4:6]))
    zone = clock[6:]
    offset = f"{zone[:3]}:{zone[3:5]}" if re.fullmatch(r"[+\-]\d{4}", zone) else None
    return stamp.isoformat(), offset


def _coordinate(value: str, limit: float) -> float | None:
    """XMP GPSCoordinate "DDD,MM,SSk" or "DDD,MM.mmk" (k one of N S E W) -> signed degrees."""
    match = _XMP_COORD.match(value.strip().upper())
    if match is None:
        return None
    d, m, s = (float(match.group(i) or 0) for i in (1, 2, 3))
    degrees = d + m / 60.0 + s / 3600.0
    if match.group(4) in "SW":
        degrees = -degrees
    return round(degrees, 7) if abs(degrees) <= limit else None


def _gps(props: dict[str, str]) -> dict[str, Any] | None:
    gps: dict[str, Any] = {}
    lat = safe_read(lambda: _coordinate(props["exif:GPSLatitude"], 90.0))
    lon = safe_read(lambda: _coordinate(props["exif:GPSLongitude"], 180.0))
    if lat is not None and lon is not None:
        gps["lat"], gps["lon"] = lat, lon
    alt = safe_read(lambda: float(Fraction(props["exif:GPSAltitude"].strip())))
    if alt is not None:
        below = props.get("exif:GPSAltitudeRef", "0").strip() == "1"
        gps["alt"] = round(-abs(alt) if below else alt, 3)
    stamp = safe_read(lambda: _iso_datetime(props["exif:GPSTimeStamp"]))
    if stamp is not None and stamp[1] in (None, "+00:00"):
        gps["timestamp"] = stamp[0].split(".")[0] + "Z"
    return gps or None


def safe_read(read: Callable[[], _T]) -> _T | None:
    """Run one metadata read; garbage metadata must never cost the image its record (EXIF, XMP
    and IPTC readers all go through here)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read()
    except MemoryError:
        raise
    except Exception:
        return None
