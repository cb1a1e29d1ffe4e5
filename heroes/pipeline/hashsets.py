"""Read known-hash sets as streams of entries: VICS 1.x/2.0, ICSE and other CSV hash lists, NSRL
RDSv3 and PDQ lists.

Sets arrive in many dialects and the largest (NSRL) run to tens of GB, so every reader yields one
entry at a time, and a malformed record is counted in :class:`ParseStats` rather than raised:
one bad line must not cost an investigator the other ten million hashes. Formats are told apart
by content, because a set's file name is whatever someone typed when exporting it.

Hex hashes come out lowercase and are checked for length and alphabet; a record whose hash field
is present but malformed is rejected as a whole instead of being kept with that field dropped,
since a damaged record says nothing reliable about the file it describes.

VICS documents are parsed with the standard library's :mod:`json`, which keeps int64 ids exact
but loads the whole document into memory; every other format is streamed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "SCHEME_CATEGORIES",
    "HashEntry",
    "HashSetError",
    "HashSetInfo",
    "HashSetSource",
    "ParseStats",
    "detect_format",
    "hashset_source",
    "open_hashset",
]

FORMATS = ("vics-1", "vics-2", "csv", "icse", "nsrl", "pdq")

_VICS_US = {
    "0": "Non-pertinent",
    "1": "Child abuse material",
    "2": "Child exploitive / age difficult",
    "3": "CGI/animation",
    "4": "Comparison",
}

#: Category tables by scheme. Project VIC shares the VICS profiles only under agreement, so two
#: tables are assumptions, kept as codes rather than mapped onto each other: ``VICS-Default``
#: (and every VICS 1.x file, which predates profiles) uses the US numbering, which is what the
#: 1.x tools wrote; ``VICS-UK`` carries the CAID grades A, B and C by letter, and 0 for
#: material graded non-indecent, the code the other profiles use for non-pertinent material.
#: A code missing from its table is still kept as the set wrote it: consumers must treat it as
#: unknown, never guess its meaning from another scheme. ``VICS-CUSTOM`` codes are defined by
#: each agency, so that table is empty.
SCHEME_CATEGORIES: dict[str, dict[str, str]] = {
    "VICS-US": _VICS_US,
    "VICS-Default": _VICS_US,
    "VICS-UK": {
        "A": "Category A: penetrative sexual activity, sexual activity with an animal, or sadism",
        "B": "Category B: non-penetrative sexual activity",
        "C": "Category C: other indecent images, no sexual activity",
        "0": "Non-indecent",
    },
    "VICS-CUSTOM": {},
    "NSRL": {},
    "none": {},
}

_HEAD_BYTES = 64 * 1024
_SAMPLE_LINES = 200
_MAX_REJECTS = 20
_NSRL_BATCH = 10_000
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "gzip-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"BZh", "bzip2-compressed"),
)
_DELIMITERS = (",", ";", "\t", "|")

_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
_CAID_RE = re.compile(r"(?:cat(?:egory)?[\s.:_-]*)?([abc])", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[\s,;|]+")
_SEP_LINE_RE = re.compile(r"sep=(.)", re.IGNORECASE)
_COREUTILS_RE = re.compile(r"[0-9A-Fa-f]{64} [ *]\S")
_VICS_KEY_RE = re.compile(r'"(@odata\.context|odata\.metadata)"\s*:\s*"([^"]*)"', re.IGNORECASE)
_VICS_URL_RE = re.compile(
    r"DataModels/(?P<version>\d+(?:\.\d+)*)\.xml(?:/(?P<profile>[A-Za-z]+)/)?", re.IGNORECASE
)
_VICS_PROFILES = {
    "default": "VICS-Default",
    "us": "VICS-US",
    "uk": "VICS-UK",
    "custom": "VICS-CUSTOM",
}
_QUALITY_RE = re.compile(r"([0-9]{1,3})\s*(?:,\s*(.*))?", re.DOTALL)

_HASH_KINDS = ("md5", "sha1", "sha256", "pdq")
_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "pdq": 64}
_HASH_NAMES = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256", "pdq": "PDQ"}
_KIND_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256"}

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


class HashSetError(ValueError):
    """A file that cannot be read as a hash set at all, as opposed to a set with bad rows."""


@dataclass(slots=True)
class HashEntry:
    """One record of a set. Hashes are lowercase hex (PDQ: 64 digits, 256 bits); ``category`` is
    the code as text in the set's scheme (None: uncategorised); ``ref`` is the set's own id as
    exact text; ``meta`` holds the other fields worth showing an examiner, booleans normalised.
    """

    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    category: str | None = None
    label: str | None = None
    ref: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class HashSetInfo:
    """What a set is, known before its first entry is read. ``categories`` is the whole table of
    ``scheme``, so that a code is never read in another scheme's meaning.
    """

    name: str
    format: str
    scheme: str
    categories: dict[str, str]
    known_good: bool
    source: str
    meta: dict[str, Any]


@dataclass(slots=True)
class ParseStats:
    """Tally filled while iterating; ``rejects`` keeps the first reasons, with their place."""

    entries: int = 0
    rejected: int = 0
    rejects: list[str] = field(default_factory=list)
    #: doubts about the whole set that a person must see (e.g. SHA-256 or PDQ?)
    warnings: list[str] = field(default_factory=list)


class _Reject(Exception):
    """One record that cannot be used; its reason goes to :class:`ParseStats`, not the caller."""


def _error(path: Path, why: str) -> HashSetError:
    return HashSetError(f"cannot read {path.name} as a hash set: {why}")


def _note(stats: ParseStats, where: str, reason: object) -> None:
    stats.rejected += 1
    if len(stats.rejects) < _MAX_REJECTS:
        stats.rejects.append(f"{where}: {reason}")


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _clean(text: str) -> str:
    return text.strip().strip("\"'").strip()


def _hex(value: Any, kind: str) -> str | None:
    """A hash field as lowercase hex; absent or empty is None, anything malformed rejects."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(f"{_HASH_NAMES[kind]} is {type(value).__name__}, not text")
    text = _clean(value)
    if not text:
        return None
    length = _HASH_LENGTHS[kind]
    if len(text) != length or not _HEX_RE.fullmatch(text):
        raise _Reject(f"{_HASH_NAMES[kind]} {_show(text)} is not {length} hex digits")
    return text.lower()


def _require_hash(entry: HashEntry) -> HashEntry:
    if entry.md5 is None and entry.sha1 is None and entry.sha256 is None and entry.pdq is None:
        raise _Reject("no hash")
    return entry


def _flag(value: Any) -> Any:
    """Booleans as the sets write them ("true", "True", "yes", 1) as bool; unknown text kept."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = _clean(value)
        low = text.lower()
        if not text:
            return None
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return text
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        text = _clean(value)
        if _INT_RE.fullmatch(text):
            return int(text)
        return text or None
    return value


def _ref(value: Any) -> str | None:
    """A set's own record id as exact text; an id of an odd type is dropped, not rejected."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        return _clean(value) or None
    return None


def _category(value: Any, scheme: str) -> str | None:
    """A category code as text in its scheme ("01" and 1 both give "1"); missing means None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Reject(f"Category {value!r} is not a category code")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise _Reject(f"Category {value!r} is not a category code")
    if isinstance(value, str):
        text = _clean(value)
        if not text:
            return None
        if _INT_RE.fullmatch(text):
            return str(int(text))
        if scheme == "VICS-UK" and (m := _CAID_RE.fullmatch(text)):
            return m.group(1).upper()
        return text
    raise _Reject(f"Category is {type(value).__name__}, not a category code")


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _valid_text(value: Any) -> Any:
    """Text that can be stored: a JSON escape such as ``"\\ud800"`` decodes to a lone surrogate,
    which no UTF-8 store accepts; it becomes U+FFFD (in lists and objects too)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE_RE.sub("\ufffd", value)
        return value
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    return value


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in obj.items()}


# --- detection -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Column:
    index: int
    role: str
    key: str


@dataclass(slots=True)
class _Layout:
    """How to read a text set: which lines to skip, the delimiter and the column roles."""

    flavour: str
    encoding: str
    skip_to: int = 0
    delimiter: str = ","
    columns: list[_Column] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    scheme: str = "none"
    known_good: bool = False


@dataclass(slots=True)
class _Sniff:
    fmt: str
    layout: _Layout | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class HashSetSource:
    """A hash-set file and the format its user says it has (None: detect from the content)."""

    path: Path
    fmt: str | None = None


def hashset_source(spec: str | Path | HashSetSource) -> HashSetSource:
    """A command-line hash-set argument: ``FILE``, or ``FORMAT:FILE`` such as ``pdq:list.txt``.

    A bare list of 64-digit hashes may hold SHA-256 or PDQ hashes and nothing in it tells which;
    the prefix settles it. A name that exists as a file is always a plain file name, so a file
    really called ``pdq:x.txt`` stays readable.
    """
    if isinstance(spec, HashSetSource):
        return spec
    text = str(spec)
    prefix, sep, rest = text.partition(":")
    if sep and rest and prefix.lower() in FORMATS and not Path(text).exists():
        return HashSetSource(Path(rest), prefix.lower())
    return HashSetSource(Path(spec))


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_HEAD_BYTES)


def _encoding(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8-sig"


def _head_lines(head: bytes, encoding: str) -> list[tuple[int, str]]:
    """Complete lines of the head with their physical numbers, split as the file reader will."""
    text = head.decode(encoding, errors="replace")
    lines = list(enumerate(io.StringIO(text, newline=None), 1))
    if len(head) >= _HEAD_BYTES and lines:
        lines.pop()
    return lines


def detect_format(path: Path) -> str:
    """The format of a hash set, one of :data:`FORMATS`, from its content alone.

    A bare list of 64-digit hashes is read as SHA-256 ('csv'); it counts as a PDQ list only when
    its lines carry labels or quality, a comment names PDQ, or a header puts a quality column
    beside a generic hash column. Pass ``fmt`` to :func:`open_hashset` (``pdq:FILE`` on the
    command line) to settle such a case otherwise; :func:`open_hashset` warns in
    :attr:`ParseStats.warnings` when a bare 64-digit list could be either.
    """
    return _sniff(Path(path), None).fmt


def _sniff(path: Path, forced: str | None) -> _Sniff:
    head = _read_head(path)
    if head.startswith(_SQLITE_MAGIC):
        if forced not in (None, "nsrl"):
            raise _error(path, f"an SQLite database cannot be read as {forced}")
        _nsrl_schema(path)
        return _Sniff("nsrl")
    if forced == "nsrl":
        raise _error(path, "not an SQLite database, so not an NSRL RDSv3 set")
    if not head.strip():
        raise _error(path, "the file is empty")
    for magic, what in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            raise _error(path, f"the file is {what}; unpack it first")
    encoding = _encoding(head)
    if encoding != "utf-16" and b"\x00" in head:
        raise _error(path, "binary data, not text, JSON or SQLite")
    if forced in ("vics-1", "vics-2"):
        return _Sniff(forced)
    text = head.decode(encoding, errors="replace")
    if forced is None and text.lstrip().startswith("{"):
        return _Sniff(_vics_flavour(path, text))
    lines = _head_lines(head, encoding)
    data = [(n, s) for n, raw in lines if (s := raw.strip()) and not s.startswith("#")]
    comments = [s for _, raw in lines if (s := raw.strip()).startswith("#")]
    if forced == "pdq":
        return _Sniff("pdq", _pdq_header_layout(data[:_SAMPLE_LINES], encoding))
    if not data:
        raise _error(path, "no lines with hashes in the first 64 KiB")
    if forced is None or forced in ("csv", "icse"):
        layout = _header_layout(data[:_SAMPLE_LINES], encoding)
        if layout is not None:
            fmt = forced or ("icse" if layout.flavour == "icse" else "csv")
            if fmt == "icse" and forced == "icse":
                layout.flavour = "icse"
            sniff = _Sniff(fmt, layout)
            if forced is None:
                rows = [(n, line) for n, line in data[:_SAMPLE_LINES] if n > layout.skip_to]
                sniff.warning = _ambiguous_column(path, layout, rows)
            return sniff
        if forced == "icse":
            raise _error(path, "no header line naming an MD5 or SHA-1 column")
        if forced == "csv":
            return _Sniff("csv", _Layout("bare", encoding))
    flavour = _list_flavour([s for _, s in data[:_SAMPLE_LINES]], comments)
    if flavour is None:
        raise _error(
            path,
            "not VICS JSON, an SQLite database, a CSV with a hash column header, a list of "
            "hex hashes or a PDQ list",
        )
    sniff = _Sniff("pdq" if flavour == "pdq" else "csv", _Layout(flavour, encoding))
    if flavour == "bare" and forced is None:
        sniff.warning = _ambiguous_list(path, [s for _, s in data[:_SAMPLE_LINES]])
    return sniff


def _ambiguous_list(path: Path, lines: list[str]) -> str | None:
    """A warning for a bare list of 64-digit hashes, which reads as SHA-256 but may be PDQ.

    Some tools export PDQ lists as bare hex lines; read as SHA-256 they silently match nothing.
    ``sha256sum`` output (two spaces, or `` *`` before a file name) is not in doubt.
    """
    firsts = [_token(line)[0] for line in lines]
    if not firsts or any(len(f) != 64 for f in firsts):
        return None
    if all(_COREUTILS_RE.match(line) for line in lines):
        return None
    return (
        f"{path.name}: a bare list of 64-digit hashes, read as SHA-256; if it holds PDQ hashes, "
        f"import it as pdq:{path.name} (or --format pdq), or add a '# PDQ' line to it"
    )


def _pdq_header_layout(data: list[tuple[int, str]], encoding: str) -> _Layout:
    """The layout of a list forced to PDQ: its CSV header if it has one, with a generic hash
    column read as PDQ, else one PDQ hash per line."""
    layout = _header_layout(data, encoding) if data else None
    if layout is None or layout.flavour != "header":
        return _Layout("pdq", encoding)
    for c in layout.columns:
        if c.role == "hash":
            c.role = "pdq"
    return layout


def _ambiguous_column(path: Path, layout: _Layout, data: list[tuple[int, str]]) -> str | None:
    """A warning for a CSV whose only hash column has a generic name ('hash') and holds 64-digit
    values: read as SHA-256, they may be PDQ hashes."""
    generic = [c for c in layout.columns if c.role == "hash"]
    if len(generic) != 1 or any(c.role in _HASH_KINDS for c in layout.columns):
        return None
    column = generic[0]
    values = [
        _clean(cells[column.index])
        for _, line in data
        if len(cells := _split(line, layout.delimiter)) > column.index
    ]
    values = [v for v in values if v]
    if not values or any(len(v) != 64 for v in values):
        return None
    return (
        f"{path.name}: its {column.key!r} column holds 64-digit hashes, read as SHA-256; if they "
        f"are PDQ hashes, import it as pdq:{path.name} (or --format pdq), or name the column 'pdq'"
    )


def _vics_flavour(path: Path, head_text: str) -> str:
    """'vics-1' or 'vics-2' from the OData key and data-model URL in the document's head."""
    m = _VICS_KEY_RE.search(head_text)
    if m is None:
        if re.search(r'"value"\s*:\s*\[', head_text) and re.search(
            r'"(?:md5|sha1|mediaid)"\s*:', head_text, re.IGNORECASE
        ):
            return "vics-1"
        raise _error(path, "JSON, but not a VICS document (no odata.metadata or @odata.context)")
    return _vics_format(m.group(1), m.group(2))


def _vics_format(key: str, url: str) -> str:
    m = _VICS_URL_RE.search(url)
    if m is not None:
        return "vics-2" if m.group("version").startswith("2") else "vics-1"
    return "vics-2" if key.startswith("@") else "vics-1"


def _split(line: str, delimiter: str) -> list[str]:
    if '"' in line:
        try:
            return next(csv.reader([line], delimiter=delimiter))
        except (csv.Error, StopIteration):
            pass
    return line.split(delimiter)


def _norm(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _clean(cell).lower())


_HASH_HEADER_RE = re.compile(
    r"(?:file)?(?:hash)?(md5|sha1|sha256|pdq)(?:hash|sum|checksum|digest|hex|value)?"
)
_ANY_HASH_HEADERS = frozenset({"hash", "hashvalue", "checksum", "digest"})
_CATEGORY_HEADERS = frozenset(
    {
        "category",
        "cat",
        "grade",
        "categoryid",
        "categorycode",
        "classification",
        "caidcategory",
        "vicscategory",
    }
)
_LABEL_HEADERS = ("label", "seriesname", "series", "name", "filename", "description", "title")
_REF_HEADERS = frozenset(
    {
        "id",
        "imageid",
        "mediaid",
        "ref",
        "reference",
        "recordid",
        "identifier",
        "packageid",
        "productcode",
    }
)
_FLAG_HEADERS = {
    "isdistributed": "IsDistributed",
    "distributed": "IsDistributed",
    "victimidentified": "VictimIdentified",
    "offenderidentified": "OffenderIdentified",
    "fileavailable": "FileAvailable",
    "baseline": "Baseline",
    "issuspected": "IsSuspected",
    "isprecategorized": "IsPrecategorized",
}
_INT_HEADERS = {
    "numberofsubmissions": "NumberOfSubmissions",
    "filesize": "FileSize",
    "mediasize": "MediaSize",
    "size": "FileSize",
}
_TEXT_HEADERS = {
    "photodna": "PhotoDNA",
    "mediatype": "MediaType",
    "seriesname": "Series",
    "series": "Series",
    "filename": "FileName",
    "name": "Name",
    "label": "Label",
    "description": "Description",
    "title": "Title",
    "tags": "Tags",
    "comments": "Comments",
}
_ICSE_MARKERS = frozenset(
    {
        "isdistributed",
        "victimidentified",
        "offenderidentified",
        "seriesname",
        "baseline",
        "numberofsubmissions",
        "fileavailable",
    }
)
_RDS2_HEADERS = frozenset({"sha1", "md5", "crc32", "filename", "productcode", "opsystemcode"})


def _header_columns(cells: list[str]) -> list[_Column] | None:
    """Column roles from a header line, or None when no column names a hash."""
    norms = [_norm(c) for c in cells]
    label_at = None
    for wanted in _LABEL_HEADERS:
        if wanted in norms:
            label_at = norms.index(wanted)
            break
    columns: list[_Column] = []
    for i, (cell, norm) in enumerate(zip(cells, norms, strict=True)):
        if not norm:
            continue
        key = _clean(cell)
        if m := _HASH_HEADER_RE.fullmatch(norm):
            columns.append(_Column(i, m.group(1), key))
        elif norm in _ANY_HASH_HEADERS:
            columns.append(_Column(i, "hash", key))
        elif norm in _CATEGORY_HEADERS:
            columns.append(_Column(i, "category", key))
        elif i == label_at:
            columns.append(_Column(i, "label", key))
        elif norm in _REF_HEADERS:
            columns.append(_Column(i, "ref", key))
        elif norm in _FLAG_HEADERS:
            columns.append(_Column(i, "flag", _FLAG_HEADERS[norm]))
        elif norm in _INT_HEADERS:
            columns.append(_Column(i, "int", _INT_HEADERS[norm]))
        else:
            columns.append(_Column(i, "text", _TEXT_HEADERS.get(norm, key)))
    if not any(c.role in _HASH_KINDS or c.role == "hash" for c in columns):
        return None
    _pdq_by_quality(columns, norms)
    taken: set[str] = set()
    unique = []
    for c in columns:
        if c.role in ("category", "label", "ref"):
            if c.role in taken:
                c.role = "text"
            taken.add(c.role)
        unique.append(c)
    return unique


_QUALITY_HEADERS = frozenset({"quality", "pdqquality", "hashquality"})


def _pdq_by_quality(columns: list[_Column], norms: list[str]) -> None:
    """A generic hash column next to a quality column holds PDQ hashes (as the PDQ hashers and
    ThreatExchange exports write them): only perceptual hashes have a quality."""
    if not _QUALITY_HEADERS & set(norms):
        return
    for c in columns:
        if c.role == "hash":
            c.role = "pdq"
        elif c.role == "text" and norms[c.index] in _QUALITY_HEADERS:
            c.role = "int"
            c.key = "quality"


def _header_layout(data: list[tuple[int, str]], encoding: str) -> _Layout | None:
    """A CSV layout when the first data line is a header naming a hash column."""
    lineno, line = data[0]
    rest = data[1:]
    forced_delimiter = None
    if (m := _SEP_LINE_RE.fullmatch(line)) and rest:
        forced_delimiter = m.group(1)
        lineno, line = rest[0]
        rest = rest[1:]
    candidates = (forced_delimiter,) if forced_delimiter else _DELIMITERS
    best: tuple[tuple[int, int], str, list[str], list[_Column]] | None = None
    for delimiter in candidates:
        cells = _split(line, delimiter)
        columns = _header_columns(cells)
        if columns is None:
            continue
        score = (sum(c.role in _HASH_KINDS or c.role == "hash" for c in columns), len(cells))
        if best is None or score > best[0]:
            best = (score, delimiter, cells, columns)
    if best is None:
        return None
    _, delimiter, cells, columns = best
    if len(cells) == 1 and not forced_delimiter:
        counts = {d: sum(s.count(d) for _, s in rest) for d in _DELIMITERS}
        top = max(counts, key=lambda d: counts[d])
        delimiter = top if counts[top] else ","
    norms = {_norm(c) for c in cells}
    layout = _Layout(
        "header",
        encoding,
        skip_to=lineno,
        delimiter=delimiter,
        columns=columns,
        header=[_clean(c) for c in cells],
    )
    if "imageid" in norms and len(norms & _ICSE_MARKERS) >= 2:
        layout.flavour = "icse"
    if _RDS2_HEADERS <= norms:
        layout.scheme = "NSRL"
        layout.known_good = True
    return layout


def _token(line: str) -> tuple[str, str]:
    """A list line split into its first token and the rest (label, file name or quality)."""
    parts = _TOKEN_RE.split(line.strip(), maxsplit=1)
    first = _clean(parts[0])
    rest = parts[1].strip() if len(parts) > 1 else ""
    return first, rest


def _list_flavour(lines: list[str], comments: list[str]) -> str | None:
    """'bare' for a headerless list of hex hashes, 'pdq' for a PDQ list, None for neither."""
    lengths: list[int] = []
    labelled = coreutils = 0
    good = 0
    for line in lines:
        first, rest = _token(line)
        if len(first) in _KIND_BY_LENGTH and _HEX_RE.fullmatch(first):
            good += 1
            lengths.append(len(first))
            if rest:
                labelled += 1
                coreutils += bool(_COREUTILS_RE.match(line))
    # a bad line anywhere (the first too) is one rejected record, not a reason to refuse the list
    if good < 0.8 * len(lines):
        return None
    if set(lengths) == {64}:
        if any("pdq" in c.lower() for c in comments):
            return "pdq"
        if labelled > coreutils:
            return "pdq"
    return "bare"


# --- opening ---------------------------------------------------------------------------------


def open_hashset(
    path: Path,
    *,
    name: str | None = None,
    fmt: str | None = None,
    known_good: bool | None = None,
) -> tuple[HashSetInfo, Iterator[HashEntry], ParseStats]:
    """Open a hash set: its description, a lazy iterator over its entries and their tally.

    The description is complete before iteration starts; the tally fills as the iterator is
    consumed. Nothing is read until then except the head of the file (and, for VICS, the whole
    document). The iterator may still raise :class:`HashSetError` when the file proves unreadable
    part-way (a corrupt SQLite page); single bad records never raise. ``known_good`` defaults to
    True for NSRL sets only. Missing files raise the usual :class:`OSError`.
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown hash-set format {fmt!r}; expected one of {', '.join(FORMATS)}")
    sniff = _sniff(path, fmt)
    stats = ParseStats()
    if sniff.fmt == "nsrl":
        scheme, meta, default_good, rows = _nsrl_plan(path)
    elif sniff.fmt in ("vics-1", "vics-2"):
        scheme, meta, default_good, rows = _vics_plan(path, fmt)
        sniff.fmt = meta.pop("format")
    else:
        if sniff.layout is None:
            raise _error(path, f"no text layout for {sniff.fmt}")
        scheme, meta, default_good, rows = _text_plan(path, sniff.layout)
    if sniff.warning is not None:
        meta["warning"] = sniff.warning
        stats.warnings.append(sniff.warning)
    info = HashSetInfo(
        name=name if name is not None else path.stem,
        format=sniff.fmt,
        scheme=scheme,
        categories=dict(SCHEME_CATEGORIES.get(scheme, {})),
        known_good=default_good if known_good is None else known_good,
        source=path.name,
        meta=meta,
    )
    return info, rows(stats), stats


_Plan = tuple[str, dict[str, Any], bool, Callable[[ParseStats], Iterator[HashEntry]]]


# --- text: CSV, ICSE, bare lists, PDQ --------------------------------------------------------


def _text_plan(path: Path, layout: _Layout) -> _Plan:
    meta: dict[str, Any] = {"encoding": layout.encoding}
    if layout.flavour in ("header", "icse"):
        meta.update(delimiter=layout.delimiter, header=layout.header)
        if layout.scheme == "NSRL":
            meta["nsrl"] = "RDS 2.x text"
    elif layout.flavour == "bare":
        meta["header"] = None

    def rows(stats: ParseStats) -> Iterator[HashEntry]:
        with path.open("r", encoding=layout.encoding, errors="replace", newline=None) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno <= layout.skip_to:
                    continue
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    if layout.flavour == "pdq":
                        entry = _pdq_entry(line)
                    elif layout.flavour == "bare":
                        entry = _bare_entry(line)
                    else:
                        cells = _split(raw.rstrip("\r\n"), layout.delimiter)
                        if not any(_clean(c) for c in cells):
                            continue
                        entry = _row_entry(cells, layout.columns, layout.scheme)
                except _Reject as reason:
                    _note(stats, f"line {lineno}", reason)
                    continue
                stats.entries += 1
                yield entry

    return layout.scheme, meta, layout.known_good, rows


def _row_entry(cells: list[str], columns: list[_Column], scheme: str) -> HashEntry:
    entry = HashEntry()
    for col in columns:
        if col.index >= len(cells):
            continue
        value = _clean(cells[col.index])
        if not value:
            continue
        role = col.role
        if role in _HASH_KINDS:
            if getattr(entry, role) is None:
                setattr(entry, role, _hex(value, role))
        elif role == "hash":
            kind = _KIND_BY_LENGTH.get(len(value))
            if kind is None:
                raise _Reject(f"{col.key} {_show(value)} is not a 32-, 40- or 64-digit hex hash")
            if getattr(entry, kind) is None:
                setattr(entry, kind, _hex(value, kind))
        elif role == "category":
            entry.category = _category(value, scheme)
        elif role == "label":
            entry.label = value
        elif role == "ref":
            entry.ref = value
        elif role == "flag":
            entry.meta[col.key] = _flag(value)
        elif role == "int":
            entry.meta[col.key] = _integer(value)
        else:
            entry.meta[col.key] = value
    return _require_hash(entry)


def _bare_entry(line: str) -> HashEntry:
    first, rest = _token(line)
    kind = _KIND_BY_LENGTH.get(len(first))
    if kind is None or not _HEX_RE.fullmatch(first):
        raise _Reject(f"{_show(first)} is not a 32-, 40- or 64-digit hex hash")
    entry = HashEntry()
    setattr(entry, kind, first.lower())
    label = _clean(rest.lstrip("*"))
    if label:
        entry.label = label
    return entry


def _pdq_entry(line: str) -> HashEntry:
    """A PDQ line: the hash, then optionally a label, or the hasher's ``quality,label``."""
    first, rest = _token(line)
    entry = HashEntry(pdq=_hex(first, "pdq"))
    if entry.pdq is None:
        raise _Reject("no hash")
    if m := _QUALITY_RE.fullmatch(rest):
        quality = int(m.group(1))
        if quality <= 100:
            entry.meta["quality"] = quality
            rest = m.group(2) or ""
    label = _clean(rest)
    if label:
        entry.label = label
    return entry


# --- VICS ------------------------------------------------------------------------------------


def _json_constant(_name: str) -> None:
    """NaN and Infinity are not JSON; a set that writes them means "no value"."""
    return None


def _vics_plan(path: Path, forced: str | None) -> _Plan:
    raw = path.read_bytes()
    text = raw.decode(_encoding(raw[:4]), errors="replace")
    del raw
    try:
        doc = json.loads(text, parse_constant=_json_constant)
    except RecursionError:
        raise _error(path, "JSON nested too deeply") from None
    except ValueError as exc:
        raise _error(path, f"invalid JSON ({exc})") from None
    del text
    if not isinstance(doc, dict):
        raise _error(path, "the JSON top level is not an object, so not a VICS document")
    top = _lower_keys(doc)
    key = next((k for k in ("@odata.context", "odata.metadata") if k in top), "")
    url = top.get(key) if isinstance(top.get(key), str) else ""
    values = top.get("value")
    if not isinstance(values, list):
        raise _error(path, "no 'value' array, so not a VICS document")
    fmt = forced or _vics_format(key, url)
    m = _VICS_URL_RE.search(url)
    scheme = "VICS-Default"
    if fmt == "vics-2" and m is not None and m.group("profile"):
        profile = m.group("profile")
        scheme = _VICS_PROFILES.get(profile.lower(), f"VICS-{profile}")
    meta: dict[str, Any] = {
        "format": fmt,
        "version": m.group("version") if m else None,
        "context": url or None,
        "kind": url.rsplit("#", 1)[1] if "#" in url else None,
    }
    cases = []
    records = 0
    for element in values:
        media = _case_media(element)
        if media is None:
            records += 1
            continue
        records += len(media)
        cases.append(
            {
                k: v
                for k, v in element.items()
                if k.lower() != "media"
                and "odata" not in k.lower()
                and (v is None or isinstance(v, str | int | float | bool))
            }
        )
    meta["records"] = records
    meta = _valid_text(meta)
    cases = _valid_text(cases)
    if cases:
        meta["cases"] = cases
        if len(cases) == 1:
            meta.update({k: v for k, v in cases[0].items() if k not in meta})

    def rows(stats: ParseStats) -> Iterator[HashEntry]:
        for i, element in enumerate(values):
            media = _case_media(element)
            if media is None:
                yield from _vics_one(element, f"value[{i}]", None, scheme, stats)
                continue
            case_id = _valid_text(_ref(_lower_keys(element).get("caseid")))
            for j, item in enumerate(media):
                yield from _vics_one(item, f"value[{i}].Media[{j}]", case_id, scheme, stats)

    return scheme, meta, False, rows


def _case_media(element: Any) -> list[Any] | None:
    """The Media array of a Cases element, or None when the element is itself a Media record."""
    if isinstance(element, dict):
        for k, v in element.items():
            if k.lower() == "media" and isinstance(v, list):
                return v
    return None


def _vics_one(
    media: Any, where: str, case_id: str | None, scheme: str, stats: ParseStats
) -> Iterator[HashEntry]:
    try:
        entry = _vics_entry(media, scheme)
    except _Reject as reason:
        if isinstance(media, dict) and (mid := _ref(_lower_keys(media).get("mediaid"))):
            where = f"{where} (MediaID {mid})"
        _note(stats, where, reason)
        return
    if case_id is not None:
        entry.meta["CaseID"] = case_id
    entry.label = _valid_text(entry.label)
    entry.ref = _valid_text(entry.ref)
    entry.category = _valid_text(entry.category)
    entry.meta = _valid_text(entry.meta)
    stats.entries += 1
    yield entry


_VICS_FLAGS = {
    "victimidentified": "VictimIdentified",
    "offenderidentified": "OffenderIdentified",
    "isdistributed": "IsDistributed",
    "issuspected": "IsSuspected",
    "isprecategorized": "IsPrecategorized",
    "selfgenerated": "SelfGenerated",
}
_VICS_TEXT = {
    "photodna": "PhotoDNA",
    "series": "Series",
    "tags": "Tags",
    "comments": "Comments",
    "relativefilepath": "RelativeFilePath",
    "mimetype": "MimeType",
    "dateupdated": "DateUpdated",
    "precategorizationsource": "PrecategorizationSource",
}
_VICS_HASH_KEYS = {
    "md5": ("md5",),
    "sha1": ("sha1", "sha-1"),
    "sha256": ("sha256", "sha-256"),
    "pdq": ("pdq",),
}


def _nested_hashes(value: Any) -> dict[str, Any]:
    """Hashes given as ``Hashes: [{HashName, HashValue}]`` rather than as fields."""
    found: dict[str, Any] = {}
    if not isinstance(value, list):
        return found
    for item in value:
        if not isinstance(item, dict):
            continue
        low = _lower_keys(item)
        hash_name = low.get("hashname")
        if isinstance(hash_name, str):
            found.setdefault(re.sub(r"[^a-z0-9]", "", hash_name.lower()), low.get("hashvalue"))
    return found


def _vics_entry(media: Any, scheme: str) -> HashEntry:
    if not isinstance(media, dict):
        raise _Reject(f"is {type(media).__name__}, not a Media object")
    low = _lower_keys(media)
    nested = _nested_hashes(low.get("hashes"))
    entry = HashEntry()
    for kind, keys in _VICS_HASH_KEYS.items():
        value = next((low[k] for k in keys if low.get(k) not in (None, "")), None)
        if value is None:
            value = nested.get(kind)
        setattr(entry, kind, _hex(value, kind))
    _require_hash(entry)
    entry.category = _category(low.get("category"), scheme)
    entry.ref = _ref(low.get("mediaid"))
    meta = entry.meta
    for k, name in _VICS_FLAGS.items():
        if (value := _flag(low.get(k))) is not None:
            meta[name] = value
    for k, name in _VICS_TEXT.items():
        if (value := _text(low.get(k))) is not None:
            meta[name] = value
    if "PhotoDNA" not in meta and (value := _text(nested.get("photodna"))) is not None:
        meta["PhotoDNA"] = value
    if (size := _integer(low.get("mediasize"))) is not None:
        meta["MediaSize"] = size
    files = low.get("mediafiles")
    if isinstance(files, list):
        names, paths = [], []
        for item in files:
            if isinstance(item, dict):
                f_low = _lower_keys(item)
                if isinstance(fn := f_low.get("filename"), str) and fn.strip():
                    names.append(fn.strip())
                if isinstance(fp := f_low.get("filepath"), str) and fp.strip():
                    paths.append(fp.strip())
        if names:
            meta["FileNames"] = names
        if paths:
            meta["FilePaths"] = paths
    series = meta.get("Series")
    if isinstance(series, str):
        entry.label = series
    elif "FileNames" in meta:
        entry.label = meta["FileNames"][0]
    return entry


# --- NSRL RDSv3 ------------------------------------------------------------------------------

_NSRL_COLUMNS = ("sha256", "sha1", "md5", "file_name", "file_size", "package_id")


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Open read-only and immutable: no journal, no lock, not one byte of evidence written."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_RECURSIVE_RE = re.compile(r"\bRECURSIVE\b", re.IGNORECASE)


def _nsrl_schema(path: Path) -> tuple[str, dict[str, str], int | None]:
    """The FILE table (or view), its columns by lowercase name, and for a view the most rows it
    may yield: the rows of all the database's tables together (RDSv3's FILE view joins each
    METADATA row to its package). A recursive view could yield rows forever and is refused."""
    try:
        with closing(_connect_ro(path)) as con:
            names = con.execute(
                "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view')"
            ).fetchall()
            found = next(
                (r for r in names if isinstance(r[0], str) and r[0].lower() == "file"), None
            )
            if found is None:
                raise _error(path, "an SQLite database without a FILE table, not an NSRL set")
            table, kind = found[0], found[1]
            cap: int | None = None
            if kind == "view":
                for name, k, sql in names:
                    if k == "view" and isinstance(sql, str) and _RECURSIVE_RE.search(sql):
                        raise _error(
                            path, f"the view {name} is recursive (WITH RECURSIVE); not imported"
                        )
                cap = sum(
                    con.execute(f"SELECT count(*) FROM {_quote_ident(name)}").fetchone()[0]
                    for name, k, _sql in names
                    if k == "table" and isinstance(name, str)
                )
            info = con.execute(f"PRAGMA table_info({_quote_ident(table)})").fetchall()
    except sqlite3.Error as exc:
        raise _error(path, f"unreadable SQLite database ({exc})") from None
    columns = {str(row[1]).lower(): str(row[1]) for row in info}
    if not {"sha256", "sha1", "md5"} & columns.keys():
        raise _error(path, "the FILE table has no sha256, sha1 or md5 column")
    return table, columns, cap


def _nsrl_plan(path: Path) -> _Plan:
    table, columns, cap = _nsrl_schema(path)
    wanted = [c for c in _NSRL_COLUMNS if c in columns]
    sql = "SELECT {} FROM {}".format(
        ", ".join(_quote_ident(columns[c]) for c in wanted), _quote_ident(table)
    )
    meta: dict[str, Any] = {"table": table, "columns": wanted}

    def rows(stats: ParseStats) -> Iterator[HashEntry]:
        con = _connect_ro(path)
        try:
            cursor = con.execute(sql)
            rowno = 0
            while batch := cursor.fetchmany(_NSRL_BATCH):
                for row in batch:
                    rowno += 1
                    if cap is not None and rowno > cap:
                        raise _error(
                            path,
                            f"the FILE view yields more rows than all tables hold ({cap}); "
                            "a view that multiplies rows is not imported",
                        )
                    try:
                        entry = _nsrl_entry(dict(zip(wanted, row, strict=True)))
                    except _Reject as reason:
                        _note(stats, f"row {rowno}", reason)
                        continue
                    stats.entries += 1
                    yield entry
        except sqlite3.Error as exc:
            raise _error(path, f"SQLite error while reading ({exc})") from None
        finally:
            con.close()

    return "NSRL", meta, True, rows


def _nsrl_entry(record: dict[str, Any]) -> HashEntry:
    entry = HashEntry(
        md5=_hex(record.get("md5"), "md5"),
        sha1=_hex(record.get("sha1"), "sha1"),
        sha256=_hex(record.get("sha256"), "sha256"),
    )
    _require_hash(entry)
    name = record.get("file_name")
    if isinstance(name, str) and name.strip():
        entry.label = name.strip()
    entry.ref = _ref(record.get("package_id"))
    size = record.get("file_size")
    if size is not None:
        entry.meta["file_size"] = _integer(size)
    return entry


def category_text(meta: Any, category: str | None) -> str:
    if category is None:
        return "uncategorised"
    name = meta.categories.get(category)
    return f"{category} {name}" if name else category


def known_match(
    meta: Any, category: str | None, label: str | None, method: str, distance: int
) -> dict[str, Any]:
    return {
        "hashset": meta.name,
        "category": category,
        "category_name": meta.categories.get(category) if category is not None else "uncategorised",
        "scheme": meta.scheme,
        "method": method,
        "distance": distance,
        "known_good": meta.known_good,
        "label": label,
    }
