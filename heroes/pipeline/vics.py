"""A case as a Project VIC VICS document (1.3 or 2.0), for Griffeye, IPED and the other tools that
read the format.

One Media per distinct MD5, with every file of the case that has that content in ``MediaFiles``.
A Media carries a ``Category`` only from a human label (:mod:`heroes.pipeline.labels`) or from an
exact hash-set match, which pre-categorises it (``IsPrecategorized``, ``PrecategorizationSource``
naming the set). Models never categorise: their outputs go, on request only, into ``Tags``
(``heroes:priority=0.93``). A Media that a VICS hash set named by hash keeps every field the
importer read from that set (MediaID, flags, Series, Tags, Comments, PhotoDNA, MediaSize, ...)
unchanged, so importing a VICS set and exporting the matched files again is lossless.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from heroes import __version__
from heroes.pipeline.labels import SCHEME as LABEL_SCHEME
from heroes.pipeline.labels import current_labels
from heroes.store.db import CaseStore
from heroes.store.schema import HashEntryRow, ItemRow

VERSIONS = ("2.0", "1.3")
PROFILES = ("US", "UK", "Default")

_CONTEXT_2 = (
    "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/{profile}/$metadata#Cases"
)
_CONTEXT_1 = "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Media"

#: Fields of a set's entry (``HashEntry.meta``, see :mod:`heroes.pipeline.hashsets`) that go back
#: into the Media as they were read.
_KEPT_FIELDS = (
    "IsDistributed",
    "IsSuspected",
    "SelfGenerated",
    "PhotoDNA",
    "RelativeFilePath",
    "MimeType",
    "DateUpdated",
)
_EXIF_NAMES = {
    "make": "Make",
    "model": "Model",
    "body_serial": "BodySerialNumber",
    "lens_model": "LensModel",
    "software": "Software",
    "datetime_original": "DateTimeOriginal",
    "datetime_digitized": "DateTimeDigitized",
    "datetime": "DateTime",
    "orientation": "Orientation",
}
_GPS_NAMES = {"lat": "GPSLatitude", "lon": "GPSLongitude", "alt": "GPSAltitude"}
#: Scheme families whose codes mean the same: VICS 1.x and the Default profile number like US.
_FAMILY = {"VICS-US": "US", "VICS-Default": "US", "VICS-UK": "UK"}


class VicsError(ValueError):
    """Options that do not make a VICS document."""


@dataclass(slots=True)
class _Content:
    """Every item of the case with one MD5."""

    md5: str
    items: list[ItemRow] = field(default_factory=list)


def _iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _media_id(ref: str | None) -> int | str | None:
    """A set's MediaID as it was: an int64 stays an exact integer, anything else stays text."""
    if ref is None:
        return None
    text = ref.strip()
    if text.lstrip("+-").isdigit() and len(text) <= 20:
        return int(text)
    return text


def _code(code: str | int | None) -> int | str | None:
    if code is None:
        return None
    text = str(code)
    return int(text) if text.isdigit() else text


def _wanted(row: ItemRow, labelled: bool) -> bool:
    """Media worth exchanging: images, videos and anything labelled or named by a known-bad set.
    Known-good files (NSRL and the like) and files without content (no MD5) stay out."""
    if not row.md5:
        return False
    if labelled:
        return True
    km = row.known_match or {}
    if row.status == "known_good" or km.get("known_good"):
        return False
    return row.media_type in ("image", "video") or bool(km)


def _set_entry(store: CaseStore, row: ItemRow) -> tuple[str, str, HashEntryRow] | None:
    """(set name, set scheme, entry) of the exact match that set the item's ``known_match``."""
    km = row.known_match or {}
    if not km or km.get("known_good") or km.get("method") == "pdq":
        return None
    if not (row.md5 and row.sha1 and row.sha256):
        return None
    matches = store.match_exact(row.md5, row.sha1, row.sha256)
    for meta, entry, _method in matches:
        if meta.name == km.get("hashset") and not meta.known_good:
            return meta.name, meta.scheme, entry
    return None


def _exifs(md5: str, exif: dict[str, Any] | None, version: str) -> list[dict[str, Any]]:
    if not exif:
        return []
    pairs: list[tuple[str, Any]] = [
        (name, exif[key]) for key, name in _EXIF_NAMES.items() if exif.get(key) is not None
    ]
    gps = exif.get("gps") or {}
    if isinstance(gps, dict):
        pairs += [(name, gps[key]) for key, name in _GPS_NAMES.items() if gps.get(key) is not None]
    out = []
    for name, value in pairs:
        one: dict[str, Any] = {"PropertyName": name, "PropertyValue": str(value)}
        if version == "2.0":
            one = {"MD5": md5.upper(), **one}
        out.append(one)
    return out


def _media_file(row: ItemRow, parents: dict[tuple[str, str], ItemRow]) -> dict[str, Any]:
    last = row.path.rsplit("!/", 1)[-1]
    f: dict[str, Any] = {
        "MD5": (row.md5 or "").upper(),
        "FileName": posixpath.basename(last) or last,
        "FilePath": row.path,
    }
    if (written := _iso_time(row.mtime)) is not None:
        f["Written"] = written
    if row.container:
        parent = parents.get((row.evidence, row.container))
        if parent is not None and parent.md5:
            f["ParentMD5"] = parent.md5.upper()
        f["ParentFileName"] = posixpath.basename(row.container.rsplit("!/", 1)[-1])
        f["ParentFilePath"] = row.container
    return f


def _model_tags(items: list[ItemRow]) -> list[str]:
    tags: list[str] = []
    priority = max((r.priority for r in items if r.priority is not None), default=None)
    if priority is not None:
        tags.append(f"heroes:priority={priority:.2f}")
    ranks = [r.rank for r in items if r.rank is not None]
    if ranks:
        tags.append(f"heroes:rank={min(ranks)}")
    first = items[0]
    nudity = (first.nudity or {}).get("score")
    if nudity is not None:
        tags.append(f"heroes:nudity={nudity:.2f}")
    faces = first.faces or []
    if faces:
        tags.append(f"heroes:faces={len(faces)}")
        p_minor = max((f.get("p_minor") or 0.0) for f in faces)
        tags.append(f"heroes:p_minor={p_minor:.2f}")
    km = first.known_match or {}
    if km.get("method") == "pdq" and not km.get("known_good"):
        tags.append(f"heroes:pdq_match={km.get('hashset')}@{km.get('distance')}")
    return tags


def _category_for(scheme: str | None, code: Any, profile: str) -> tuple[Any, str | None]:
    """A code in the export's profile, or (None, why not) when its scheme reads differently."""
    if code is None:
        return None, None
    export_family = "UK" if profile == "UK" else "US"
    if _FAMILY.get(scheme or "") == export_family:
        return _code(code), None
    return None, f"category {code} of scheme {scheme} is not a {profile}-profile code"


def _media(
    store: CaseStore,
    content: _Content,
    label: dict[str, Any] | None,
    parents: dict[tuple[str, str], ItemRow],
    *,
    version: str,
    profile: str,
    with_model_tags: bool,
) -> dict[str, Any]:
    items = content.items
    first = items[0]
    matched = next((m for r in items if (m := _set_entry(store, r)) is not None), None)
    entry_meta: dict[str, Any] = dict(matched[2].meta or {}) if matched else {}
    m: dict[str, Any] = {}
    media_id = _media_id(matched[2].ref) if matched else None
    m["MediaID"] = media_id if media_id is not None else first.id
    m["MD5"] = content.md5.upper()
    if first.sha1:
        m["SHA1"] = first.sha1.upper()
    notes: list[str] = []
    category: Any = None
    precategorized: bool | None = None
    source: str | None = None
    if label is not None and label.get("category") is not None:
        category, why = _category_for(label.get("scheme", LABEL_SCHEME), label["category"], profile)
        if why:
            notes.append(f"label {why}")
        precategorized = False
    elif matched is not None:
        name, scheme, entry = matched
        category, why = _category_for(scheme, entry.category, profile)
        if why:
            notes.append(f"hash set {name}: {why}")
        if category is not None:
            precategorized = True
            source = entry_meta.get("PrecategorizationSource") or name
        elif "IsPrecategorized" in entry_meta:
            precategorized = bool(entry_meta["IsPrecategorized"])
            source = entry_meta.get("PrecategorizationSource")
    if category is not None:
        m["Category"] = category
    if precategorized is not None:
        m["IsPrecategorized"] = precategorized
    if source is not None:
        m["PrecategorizationSource"] = source
    for flag, key in (
        ("VictimIdentified", "victim_identified"),
        ("OffenderIdentified", "offender_identified"),
    ):
        value = entry_meta.get(flag)
        if label is not None and label.get(key):
            value = True
        if value is not None:
            m[flag] = value
    series = (label or {}).get("series") or entry_meta.get("Series")
    if series is not None:
        m["Series"] = series
    comments = [c for c in ((label or {}).get("note") or entry_meta.get("Comments"),) if c]
    comments += notes
    if comments:
        m["Comments"] = "; ".join(str(c) for c in comments)
    tags = [entry_meta["Tags"]] if entry_meta.get("Tags") else []
    if with_model_tags:
        tags += _model_tags(items)
    if tags:
        m["Tags"] = ", ".join(str(t) for t in tags)
    size = entry_meta.get("MediaSize", first.size)
    if size is not None:
        m["MediaSize"] = size
    for key in _KEPT_FIELDS:
        if key in entry_meta:
            m[key] = entry_meta[key]
    if "MimeType" not in m and first.mime:
        m["MimeType"] = first.mime
    if label is not None and "DateUpdated" not in m:
        m["DateUpdated"] = label.get("at")
    m["MediaFiles"] = [_media_file(r, parents) for r in items]
    exifs = _exifs(content.md5, next((r.exif for r in items if r.exif), None), version)
    if exifs:
        m["Exifs"] = exifs
    return m


def _contents(
    store: CaseStore, labels: dict[int, dict[str, Any]]
) -> tuple[list[_Content], dict[tuple[str, str], ItemRow]]:
    by_md5: dict[str, _Content] = {}
    parents: dict[tuple[str, str], ItemRow] = {}
    for row in store.items(order="rank"):
        if row.archive_kind:
            parents[(row.evidence, row.path)] = row
        if _wanted(row, row.id in labels):
            assert row.md5 is not None
            by_md5.setdefault(row.md5, _Content(row.md5)).items.append(row)
    return list(by_md5.values()), parents


def _content_label(content: _Content, labels: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The latest label of any file with this content (copies by SHA-256 share theirs anyway)."""
    found = [labels[r.id] for r in content.items if r.id in labels]
    return max(found, key=lambda lab: lab["at"]) if found else None


def vics_document(
    store: CaseStore,
    *,
    version: str = "2.0",
    profile: str = "US",
    with_model_tags: bool = False,
    case_number: str | None = None,
) -> dict[str, Any]:
    """The case as a VICS document (a dict ready for :func:`json.dump`)."""
    if version not in VERSIONS:
        raise VicsError(f"VICS version must be one of {', '.join(VERSIONS)}, not {version!r}")
    if profile not in PROFILES:
        raise VicsError(f"VICS profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    if version == "1.3" and profile == "UK":
        raise VicsError("VICS 1.3 has no profiles: its categories are the US codes")
    labels = current_labels(store)
    contents, parents = _contents(store, labels)
    media = [
        _media(
            store,
            c,
            _content_label(c, labels),
            parents,
            version=version,
            profile=profile,
            with_model_tags=with_model_tags,
        )
        for c in contents
    ]
    if version == "1.3":
        return {"odata.metadata": _CONTEXT_1, "value": media}
    case = {
        "CaseID": store.case_id(),
        "CaseNumber": case_number or store.case_dir.resolve().name,
        "SourceApplicationName": "heroes",
        "SourceApplicationVersion": __version__,
        "TotalMediaFiles": sum(len(m["MediaFiles"]) for m in media),
        "Media": media,
    }
    return {"@odata.context": _CONTEXT_2.format(profile=profile), "value": [case]}


def write_vics(store: CaseStore, out: IO[str], **options: Any) -> int:
    """Write the VICS document; returns the number of Media."""
    doc = vics_document(store, **options)
    json.dump(doc, out, ensure_ascii=False, indent=1)
    out.write("\n")
    values: Iterable[dict[str, Any]] = doc["value"]
    if "@odata.context" in doc:
        return sum(len(c["Media"]) for c in values)
    return len(doc["value"])
