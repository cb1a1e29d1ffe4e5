"""The case report: one self-contained HTML file for an investigator, a supervisor or a court.

Nothing in it is fetched from anywhere (a Content-Security-Policy forbids it): plots are inline
SVG drawn by matplotlib, images are data URIs of small thumbnails that are blurred in their pixels
(not by CSS, which anyone can switch off). Every name that comes from the evidence (paths, EXIF
text, hash-set labels) is escaped by the template engine. The summary is counted from the same
records as the JSONL export, so its numbers and the export agree.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import platform
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from jinja2 import Environment, select_autoescape
from markupsafe import Markup
from PIL import Image, ImageFilter
from sqlalchemy import select

from heroes import __version__
from heroes.index.identities import Identities
from heroes.pipeline.discover import Unreadable, open_item
from heroes.pipeline.indexing import index_root
from heroes.pipeline.labels import current_labels
from heroes.pipeline.report import record
from heroes.pipeline.summary import error_kind
from heroes.store.db import CaseStore, StoreError
from heroes.store.schema import ItemRow

THUMB_PX = 96
#: Blur radius in pixels of a 96 px thumbnail: enough that no face or body can be recognised,
#: enough left to tell a photo from a screenshot or a document.
THUMB_BLUR = 6.0
_MAX_THUMB_SOURCE = 64 << 20
_MAX_THUMB_PIXELS = 178_956_970
_MAX_VIDEO_PACKETS = 400
IDENTITIES_FILE = "identities.json"
MAX_GPS_POINTS = 20_000


# --- thumbnails --------------------------------------------------------------------------------


def _blur(rgb: Image.Image, size: int, radius: float) -> bytes:
    rgb.thumbnail((size, size), Image.Resampling.BILINEAR)
    blurred = rgb.filter(ImageFilter.GaussianBlur(radius))
    buf = io.BytesIO()
    blurred.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def blurred_thumbnail(data: bytes, size: int = THUMB_PX, radius: float = THUMB_BLUR) -> bytes:
    """A small JPEG of an image, blurred in its pixels. Raises on anything Pillow cannot read."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > _MAX_THUMB_PIXELS:
            raise ValueError("too many pixels for a thumbnail")
        im.draft("RGB", (size * 2, size * 2))
        rgb = im.convert("RGB")
    return _blur(rgb, size, radius)


def blurred_video_thumbnail(
    source: BinaryIO | bytes, size: int = THUMB_PX, radius: float = THUMB_BLUR
) -> bytes:
    """The first decodable frame of a video as a blurred JPEG; raises when none decodes within
    the first packets."""
    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source, "r") as c:
        stream = next(s for s in c.streams if s.type == "video")
        for n, packet in enumerate(c.demux(stream)):
            if n > _MAX_VIDEO_PACKETS:
                break
            for frame in packet.decode():
                if frame.width * frame.height > _MAX_THUMB_PIXELS:
                    raise ValueError("too many pixels for a thumbnail")
                return _blur(frame.to_image().convert("RGB"), size, radius)
    raise ValueError("no video frame decoded")


def _item_source(rec: dict[str, Any]) -> BinaryIO | None:
    """The item's content opened again read-only the walk's way (no symlink, no access-time
    change; members through the same openers and limits, forensic images included), or None
    when it cannot be, which the report shows as text."""
    try:
        return open_item(Path(rec["evidence"]), rec["path"])
    except (OSError, Unreadable, ValueError):
        return None


def thumbnail_uri(rec: dict[str, Any]) -> str | None:
    """A data URI of the item's blurred thumbnail, or None when there is none to show."""
    kind = rec.get("media_type")
    if kind not in ("image", "video") or rec.get("status") in ("error", "skipped"):
        return None
    if kind == "image" and (rec.get("size") or 0) > _MAX_THUMB_SOURCE:
        return None
    source = _item_source(rec)
    if source is None:
        return None
    try:
        if kind == "video":
            thumb = blurred_video_thumbnail(source)
        else:
            thumb = blurred_thumbnail(source.read(_MAX_THUMB_SOURCE))
    except Exception:  # hostile content must never cost the report
        return None
    finally:
        source.close()
    return "data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii")


# --- plots -------------------------------------------------------------------------------------


def _svg(draw: Any, prefix: str, width: float = 5.2, height: float = 2.8) -> Markup:
    """One matplotlib figure as inline SVG (text as text, no math parsing of evidence names)."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    with matplotlib.rc_context(
        {"svg.fonttype": "none", "text.parse_math": False, "svg.hashsalt": "heroes"}
    ):
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        draw(ax)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = _unique_ids(text[text.index("<svg") :], prefix)
    return Markup(text)  # matplotlib's own SVG: its text is XML-escaped


_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^)"]+)')


def _unique_ids(svg: str, prefix: str) -> str:
    """Several inline SVGs share one HTML document: matplotlib's element ids (``ytick_5``, clip
    paths) would collide, and a clip path could resolve to another plot's. Prefix them all."""
    svg = _SVG_ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    return _SVG_REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)


@dataclass
class Binned:
    """A histogram kept as counts per bin, so a case of any size costs the same memory."""

    lo: float
    hi: float
    bins: int
    counts: list[int] = field(default_factory=list)
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * self.bins

    def add(self, value: float) -> None:
        width = (self.hi - self.lo) / self.bins
        i = min(max(int((value - self.lo) // width), 0), self.bins - 1)
        self.counts[i] += 1
        self.n += 1


def _bars(h: Binned, xlabel: str, colour: str) -> Any:
    def draw(ax: Any) -> None:
        width = (h.hi - h.lo) / h.bins
        edges = [h.lo + i * width for i in range(h.bins)]
        ax.bar(edges, h.counts, width=width, align="edge", color=colour, edgecolor="white")
        ax.set_xlim(h.lo, h.hi)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")

    return draw


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        try:
            t = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            return None
    return t.replace(tzinfo=None)


def _plots(stats: _Stats) -> list[tuple[str, str, Markup | None]]:
    """(title, explanation, SVG or None when there is nothing to draw)."""
    import matplotlib.dates as mdates

    plots: list[tuple[str, str, Markup | None]] = []
    pr, ages, nud = stats.priorities, stats.ages, stats.nudity
    plots.append(
        (
            "Priority",
            f"{pr.n} files with a priority (copies counted once)",
            _svg(_bars(pr, "priority", "#b03a2e"), "priority") if pr.n else None,
        )
    )
    plots.append(
        (
            "Estimated ages of faces",
            f"{ages.n} faces; expected age from the age model (an estimate: check by eye)",
            _svg(_bars(ages, "estimated age (years)", "#2e86c1"), "ages") if ages.n else None,
        )
    )
    plots.append(
        (
            "Nudity scores",
            f"{nud.n} files scored by the detector",
            _svg(_bars(nud, "nudity score", "#7d3c98"), "nudity") if nud.n else None,
        )
    )
    exif_t, file_t = stats.exif_months, stats.file_months

    def timeline(ax: Any) -> None:
        months = sorted(set(exif_t) | set(file_t))
        x = mdates.date2num(months)
        series = [(exif_t, "EXIF date taken", "#117a65"), (file_t, "file date", "#a6acaf")]
        for counts, name, colour in series:
            if counts:
                ax.bar(
                    x,
                    [counts.get(m, 0) for m in months],
                    width=25,
                    alpha=0.7,
                    label=f"{name} ({sum(counts.values())})",
                    color=colour,
                )
        ax.xaxis_date()
        ax.legend(fontsize=8)
        ax.set_ylabel("files per month")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)

    plots.append(
        (
            "Files over time",
            "when pictures were taken (EXIF) and when files were last written, by month",
            _svg(timeline, "timeline") if exif_t or file_t else None,
        )
    )
    cams = stats.cameras.most_common(12)

    def cameras(ax: Any) -> None:
        names = [name for name, _ in cams][::-1]
        from matplotlib.ticker import MaxNLocator

        ax.barh(range(len(names)), [n for _, n in cams][::-1], color="#ca6f1e")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("files")

    plots.append(
        (
            "Camera models",
            f"{sum(stats.cameras.values())} files with a camera make or model in EXIF",
            _svg(cameras, "cameras", height=max(1.6, 0.3 * len(cams) + 0.8)) if cams else None,
        )
    )
    gps = stats.gps

    def points(ax: Any) -> None:
        ax.scatter([p[1] for p in gps], [p[0] for p in gps], s=14, color="#c0392b", zorder=3)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xticks(range(-180, 181, 60))
        ax.set_yticks(range(-90, 91, 30))
        ax.grid(True, color="#d5d8dc", linewidth=0.6)
        ax.axhline(0, color="#aab7b8", linewidth=0.8)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect("equal")

    plots.append(
        (
            "GPS points",
            f"{stats.gps_total} files with EXIF GPS"
            + (f" (the first {len(gps)} drawn)" if stats.gps_total > len(gps) else "")
            + ", on a plain latitude/longitude grid (no map tiles)",
            _svg(points, "gps", width=5.2, height=3.0) if gps else None,
        )
    )
    return plots


# --- the numbers -------------------------------------------------------------------------------


@dataclass
class _Root:
    evidence: str
    files: int = 0
    bytes: int = 0
    file_hashes: dict[str, str] | None = None
    listing_sha256: str = ""


@dataclass
class _Stats:
    total: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_type_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    matches: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    bytes: int = 0
    faces: int = 0
    priorities: Binned = field(default_factory=lambda: Binned(0.0, 1.0, 20))
    ages: Binned = field(default_factory=lambda: Binned(0.0, 85.0, 17))
    nudity: Binned = field(default_factory=lambda: Binned(0.0, 1.0, 20))
    exif_months: Counter[datetime] = field(default_factory=Counter)
    file_months: Counter[datetime] = field(default_factory=Counter)
    cameras: Counter[str] = field(default_factory=Counter)
    gps: list[tuple[float, float]] = field(default_factory=list)
    gps_total: int = 0
    roots: dict[str, _Root] = field(default_factory=dict)
    labelled: int = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.total += 1
        mt, st = rec["media_type"], rec["status"]
        self.by_type[mt] += 1
        self.by_status[st] += 1
        self.by_type_status[(mt, st)] += 1
        self.bytes += rec.get("size") or 0
        if rec.get("label"):
            self.labelled += 1
        root = self.roots.setdefault(rec["evidence"], _Root(rec["evidence"]))
        root.files += 1
        root.bytes += rec.get("size") or 0
        if (rec.get("depth") or 0) == 0 and Path(rec["evidence"]).name == rec["path"]:
            root.file_hashes = {k: rec[k] for k in ("md5", "sha1", "sha256") if rec.get(k)}
        if rec.get("error"):
            kind = error_kind(rec["error"])
            self.errors[kind] += 1
            if len(self.error_examples[kind]) < 3:
                self.error_examples[kind].append((rec["path"], rec["error"]))
        km = rec.get("known_match")
        if km:
            category = "known-good" if km.get("known_good") else _category_text(km)
            self.matches[(str(km.get("hashset")), category, str(km.get("method")))] += 1
        if st == "duplicate":
            return  # the plots count each content once
        if rec.get("priority") is not None:
            self.priorities.add(float(rec["priority"]))
        for face in rec.get("faces") or []:
            self.faces += 1
            if face.get("age") is not None:
                self.ages.add(float(face["age"]))
        if rec.get("nudity") and rec["nudity"].get("score") is not None:
            self.nudity.add(float(rec["nudity"]["score"]))
        exif = rec.get("exif") or {}
        t = _parse_time(exif.get("datetime_original") or exif.get("datetime"))
        if t is not None:
            self.exif_months[t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)] += 1
        if rec.get("mtime") is not None and mt in ("image", "video"):
            try:
                ft = datetime.fromtimestamp(rec["mtime"], UTC).replace(tzinfo=None)
            except (OverflowError, OSError, ValueError):
                ft = None
            if ft is not None:
                self.file_months[ft.replace(day=1, hour=0, minute=0, second=0, microsecond=0)] += 1
        camera = " ".join(str(exif[k]) for k in ("make", "model") if exif.get(k))
        if camera:
            self.cameras[camera] += 1
        gps = exif.get("gps") or {}
        lat, lon = gps.get("lat"), gps.get("lon")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            if -90 <= lat <= 90 and -180 <= lon <= 180:
                self.gps_total += 1
                if len(self.gps) < MAX_GPS_POINTS:
                    self.gps.append((float(lat), float(lon)))


def listing_sha256(store: CaseStore, evidence: str) -> str:
    """SHA-256 over the "path<TAB>sha256" lines (``-`` for no hash), one per file found under an
    evidence root, archive members included, in order of the paths' UTF-8 bytes: one value that
    changes when any file of the root, or the list of them, changes. Streamed from the store."""
    path = ItemRow.path.collate("C") if store.engine.dialect.name == "postgresql" else ItemRow.path
    h = hashlib.sha256()
    with store.session() as s:
        rows = s.execute(
            select(ItemRow.path, ItemRow.sha256)
            .where(ItemRow.evidence == evidence)
            .order_by(path)
            .execution_options(yield_per=5000)
        )
        for p, sha in rows:
            h.update(f"{p}\t{sha or '-'}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _category_text(km: dict[str, Any]) -> str:
    code = km.get("category")
    if code is None:
        return "uncategorised"
    name = km.get("category_name")
    return f"{code} {name}" if name else f"{code} (scheme {km.get('scheme')})"


def why_text(w: dict[str, Any]) -> str:
    extra = [
        f"{k} {w[k]}"
        for k in ("hashset", "category", "distance", "via_item", "p_minor", "nudity")
        if k in w
    ]
    if w.get("frame_time") is not None:
        extra.append(f"at {w['frame_time']:.1f} s")
    return str(w.get("reason", "")) + (f" ({', '.join(map(str, extra))})" if extra else "")


def _identities(case_dir: Path, paths: dict[int, str]) -> list[dict[str, Any]] | None:
    path = index_root(case_dir) / IDENTITIES_FILE
    if not path.is_file():
        return None
    try:
        ident = Identities.load(path)
    except (OSError, ValueError, KeyError):
        return None
    files: dict[int, list[str]] = defaultdict(list)
    for ref, identity in ident.assignment.items():
        item = ident.items.get(ref)
        if isinstance(item, int) and item in paths and paths[item] not in files[identity]:
            files[identity].append(paths[item])
    return [
        {
            "identity": s.identity,
            "faces": s.faces,
            "files": s.items,
            "examples": files[s.identity][:3],
        }
        for s in ident.summary()
    ]


def _models(runs: list[Any]) -> list[dict[str, Any]]:
    from heroes.models.registry import get_spec

    names: dict[str, str] = {}
    for run in runs:
        for name, state in ((run.stats or {}).get("models") or {}).items():
            names[name] = str(state)
    out = []
    for name, state in names.items():
        try:
            spec = get_spec(name)
            out.append(
                {
                    "name": name,
                    "task": spec.task,
                    "state": state,
                    "sha256": spec.sha256 or "-",
                    "licence": spec.licence,
                    "source": spec.source,
                }
            )
        except ValueError:
            out.append(
                {
                    "name": name,
                    "task": "?",
                    "state": state,
                    "sha256": "-",
                    "licence": "unknown",
                    "source": "not a known manifest",
                }
            )
    return out


def _iso(t: datetime | None) -> str:
    if t is None:
        return "-"
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="seconds")


def _runs(runs: list[Any]) -> tuple[list[dict[str, Any]], float, int]:
    out, elapsed, files = [], 0.0, 0
    for run in runs:
        stats = run.stats or {}
        secs = stats.get("elapsed_s")
        if secs is None and run.finished_at is not None:
            secs = (run.finished_at - run.started_at).total_seconds()
        new = int(stats.get("new") or 0) + int(stats.get("updated") or 0)
        elapsed += float(secs or 0)
        files += new
        settings = run.settings or {}
        out.append(
            {
                "id": run.id,
                "evidence": run.evidence,
                "status": run.status,
                "started": _iso(run.started_at),
                "finished": _iso(run.finished_at),
                "seconds": secs,
                "files": new,
                "engine": stats.get("engine") or settings.get("engine"),
                "version": (settings.get("provenance") or {}).get("heroes"),
                "host": (settings.get("provenance") or {}).get("host"),
                "settings": json.dumps(settings, indent=1, sort_keys=True, default=str),
            }
        )
    return out, elapsed, files


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>heroes case report: {{ case_name }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1c2833;
 background:#f4f6f7}
header{background:#1b2631;color:#fdfefe;padding:14px 28px}
header h1{margin:0;font-size:20px} header p{margin:2px 0 0;color:#d5d8dc;font-size:12px}
main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border:1px solid #d5d8dc;border-radius:6px;margin:16px 0;padding:10px 18px}
h2{font-size:16px;margin:6px 0 10px;color:#17202a}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #eaeded;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f3f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;max-width:520px}
.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #d5d8dc;border-radius:6px;padding:6px 12px;min-width:110px}
.card b{display:block;font-size:20px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0} figcaption{font-size:12px;color:#566573} svg{max-width:100%;height:auto}
.thumb{width:96px;height:96px;object-fit:contain;background:#eaeded;border-radius:4px}
.nothumb{width:96px;height:96px;display:flex;align-items:center;justify-content:center;
 background:#eaeded;border-radius:4px;color:#566573;font-size:11px;text-align:center}
.warn{color:#922b21} .muted{color:#566573} details pre{font-size:11px;white-space:pre-wrap}
@page{size:A4 landscape;margin:10mm}
@media print{body{background:#fff;font-size:11px} main{max-width:none;padding:0 4px}
 section{break-inside:auto} tr,figure{break-inside:avoid} .path{max-width:none}
 .grid{display:block} figure{display:inline-block;width:48%;vertical-align:top}
 details pre{display:block}}
</style></head>
<body>
<header><h1>Case report: {{ case_name }}</h1>
<p>case ID {{ case_id }} &middot; made {{ made }} by heroes {{ version }} on {{ host }}
&middot; thumbnails are blurred; open a file only in a review tool that audits it</p></header>
<main>
<section id="summary"><h2>Summary</h2>
<div class="cards">
<div class="card">files<b data-key="total">{{ s.total }}</b></div>
<div class="card">bytes read<b data-key="bytes">{{ s.bytes }}</b></div>
<div class="card">files in error<b data-key="errors">{{ s.by_status["error"] }}</b></div>
<div class="card">known-hash matches<b data-key="matches">{{ s.matches.values()|sum }}</b></div>
<div class="card">faces (copies once)<b data-key="faces">{{ s.faces }}</b></div>
<div class="card">labelled<b data-key="labelled">{{ s.labelled }}</b></div>
<div class="card">time taken<b>{{ "%.1f"|format(elapsed) }} s</b></div>
<div class="card">throughput<b>{{ throughput }}</b></div>
</div>
<h3>Evidence roots</h3>
<table><tr><th>root</th><th>files</th><th>bytes</th><th>hashes</th></tr>
{% for r in roots %}<tr><td class="path">{{ r.evidence }}</td>
<td class="n" data-key="root-files">{{ r.files }}</td><td class="n">{{ r.bytes }}</td>
<td class="hash">{% if r.file_hashes %}{% for k, v in r.file_hashes.items() %}{{ k }} {{ v }}<br>
{% endfor %}{% endif %}listing SHA-256 <span data-key="listing">{{ r.listing_sha256 }}</span>
</td></tr>{% endfor %}
</table>
<p class="muted">The listing SHA-256 is the SHA-256 of the lines "path TAB sha256" (a dash for no
hash), one per file found under the root, archive members included, sorted by path: recompute it
from the JSONL export to check.</p>
<h3>Files by type and status</h3>
<table><tr><th>type</th>{% for st in statuses %}<th>{{ st }}</th>{% endfor %}<th>all</th></tr>
{% for mt in types %}<tr><td>{{ mt }}</td>{% for st in statuses %}
<td class="n" data-key="type-status:{{ mt }}:{{ st }}">{{ s.by_type_status[(mt, st)] }}</td>
{% endfor %}<td class="n" data-key="type:{{ mt }}">{{ s.by_type[mt] }}</td></tr>{% endfor %}
</table>
<h3>Errors by kind</h3>
{% if s.errors %}<table><tr><th>kind</th><th>files</th><th>examples</th></tr>
{% for kind, n in s.errors.most_common() %}<tr><td>{{ kind }}</td>
<td class="n" data-key="error:{{ kind }}">{{ n }}</td><td>{% for p, e in s.error_examples[kind] %}
<span class="path">{{ p }}</span>: {{ e }}<br>{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p>No errors.</p>{% endif %}
<h3>Known-hash matches</h3>
{% if s.matches %}<table><tr><th>hash set</th><th>category</th><th>method</th><th>files</th></tr>
{% for (hs, cat, method), n in matches %}<tr><td>{{ hs }}</td><td>{{ cat }}</td>
<td>{{ method }}</td>
<td class="n" data-key="match:{{ hs }}:{{ cat }}:{{ method }}">{{ n }}</td></tr>{% endfor %}
</table>{% else %}<p>No file matched a hash set.</p>{% endif %}
<h3>Hash sets</h3>
{% if hashsets %}<table><tr><th>name</th><th>format</th><th>scheme</th><th>entries</th>
<th>known-good</th><th>source SHA-256</th><th>imported</th></tr>
{% for h in hashsets %}<tr><td>{{ h.name }}</td><td>{{ h.format }}</td><td>{{ h.scheme }}</td>
<td class="n">{{ h.entries }}</td><td>{{ "yes" if h.known_good else "no" }}</td>
<td class="hash">{{ h.source_sha256 }}</td><td>{{ h.imported }}</td></tr>{% endfor %}</table>
{% else %}<p>No hash set imported.</p>{% endif %}
</section>

<section id="queue"><h2>Review queue (first {{ queue|length }})</h2>
<table><tr><th>rank</th><th>preview (blurred)</th><th>priority</th><th>item</th><th>path</th>
<th>status</th><th>why</th><th>label</th></tr>
{% for q in queue %}<tr><td class="n">{{ q.rank }}</td>
<td>{% if q.thumb %}<img class="thumb" alt="blurred preview" src="{{ q.thumb }}">{% else %}
<div class="nothumb">{{ q.media_type }}<br>no preview</div>{% endif %}</td>
<td class="n">{{ "%.3f"|format(q.priority or 0) }}</td><td class="n">{{ q.item_id }}</td>
<td class="path">{{ q.path }}</td><td>{{ q.status }}</td>
<td>{% for w in q.why %}{{ w }}<br>{% endfor %}</td><td>{{ q.label or "" }}</td></tr>{% endfor %}
</table></section>

<section id="labels"><h2>Labels ({{ labels|length }} files)</h2>
{% if labels %}<table><tr><th>item</th><th>path</th><th>category (VICS-US)</th><th>victim id.</th>
<th>offender id.</th><th>series</th><th>note</th><th>by</th><th>when</th></tr>
{% for l in labels %}<tr><td class="n">{{ l.item_id }}</td><td class="path">{{ l.path }}</td>
<td>{{ l.category_text }}</td><td>{{ "yes" if l.victim_identified else "" }}</td>
<td>{{ "yes" if l.offender_identified else "" }}</td><td>{{ l.series or "" }}</td>
<td>{{ l.note or "" }}</td><td>{{ l.by }}</td><td>{{ l.at }}</td></tr>{% endfor %}</table>
{% else %}<p>No file labelled yet (<code>heroes label</code>).</p>{% endif %}</section>

<section id="identities"><h2>Identities</h2>
{% if identities is none %}<p>Faces not grouped yet (<code>heroes persons CASE</code>).</p>
{% elif identities %}<table><tr><th>person</th><th>faces</th><th>files</th><th>examples</th></tr>
{% for p in identities %}<tr><td class="n">{{ p.identity }}</td><td class="n">{{ p.faces }}</td>
<td class="n">{{ p.files }}</td><td>{% for e in p.examples %}<span class="path">{{ e }}</span><br>
{% endfor %}</td></tr>{% endfor %}</table>{% else %}<p>No person with enough faces.</p>{% endif %}
</section>

<section id="plots"><h2>Plots</h2><div class="grid">
{% for title, note, svg in plots %}<figure><h3>{{ title }}</h3>
{% if svg %}{{ svg }}{% else %}<p class="muted">nothing to plot</p>{% endif %}
<figcaption>{{ note }}</figcaption></figure>{% endfor %}
</div></section>

<section id="custody"><h2>Chain of custody</h2>
<table><tr><th>tool</th><td>heroes {{ version }} (this report); Python {{ python }}</td></tr>
<tr><th>report made</th><td>{{ made }} on {{ host }}</td></tr>
<tr><th>records digest</th><td class="hash">SHA-256
<span data-key="records-digest">{{ records_digest }}</span> of the JSONL export
(<code>heroes export CASE --format jsonl</code>) at the time of this report</td></tr></table>
<h3>Runs</h3>
<table><tr><th>run</th><th>evidence</th><th>status</th><th>started (UTC)</th><th>ended (UTC)</th>
<th>seconds</th><th>files</th><th>engine</th><th>heroes</th><th>host</th></tr>
{% for r in runs %}<tr><td class="n">{{ r.id }}</td><td class="path">{{ r.evidence }}</td>
<td>{{ r.status }}</td><td>{{ r.started }}</td><td>{{ r.finished }}</td>
<td class="n">{{ "%.1f"|format(r.seconds) if r.seconds is not none else "-" }}</td>
<td class="n">{{ r.files }}</td><td>{{ r.engine or "-" }}</td><td>{{ r.version or "-" }}</td>
<td>{{ r.host or "-" }}</td></tr>{% endfor %}</table>
<h3>Models</h3>
{% if models %}<table><tr><th>model</th><th>task</th><th>state</th><th>SHA-256</th><th>licence</th>
<th>source</th></tr>{% for m in models %}<tr><td>{{ m.name }}</td><td>{{ m.task }}</td>
<td>{{ m.state }}</td><td class="hash">{{ m.sha256 }}</td><td>{{ m.licence }}</td>
<td>{{ m.source }}</td></tr>{% endfor %}</table>{% else %}<p>No model ran.</p>{% endif %}
<h3>Settings</h3>
{% for r in runs %}<details><summary>run {{ r.id }}</summary><pre>{{ r.settings }}</pre></details>
{% endfor %}
</section>
</main></body></html>
"""


def _label_text(lab: dict[str, Any] | None) -> str | None:
    if not lab:
        return None
    cat = lab.get("category")
    text = "uncategorised" if cat is None else f"{cat} {lab.get('category_name')}"
    flags = [
        f
        for f, k in (("victim id.", "victim_identified"), ("offender id.", "offender_identified"))
        if lab.get(k)
    ]
    return ", ".join([text, *flags]) + f" (by {lab.get('by')})"


class _Digest(io.TextIOBase):
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, s: str) -> int:
        self.h.update(s.encode("utf-8", "surrogateescape"))
        return len(s)


def _case_id(store: CaseStore) -> str:
    try:
        return store.case_id()
    except StoreError:
        return "not assigned (the case is read-only)"


def build_report(store: CaseStore, *, top: int = 24) -> str:
    """The report as one HTML string."""
    from heroes.pipeline.report import write_jsonl

    labels = current_labels(store)
    stats = _Stats()
    queue: list[dict[str, Any]] = []
    paths: dict[int, str] = {}
    for row in store.items(order="rank"):
        rec = record(row, labels.get(row.id))
        stats.add(rec)
        paths[rec["item_id"]] = rec["path"]
        if len(queue) < top:
            queue.append(
                {
                    **rec,
                    "thumb": thumbnail_uri(rec),
                    "why": [why_text(w) for w in rec["why"]],
                    "label": _label_text(rec["label"]),
                }
            )
    digest = _Digest()
    write_jsonl(store, digest)
    for root in stats.roots.values():
        root.listing_sha256 = listing_sha256(store, root.evidence)
    runs = store.runs()
    run_rows, elapsed, processed = _runs(runs)
    label_rows = [
        {
            "item_id": item_id,
            "path": paths.get(item_id, "?"),
            "category_text": "uncategorised"
            if lab["category"] is None
            else f"{lab['category']} {lab['category_name']}",
            **lab,
        }
        for item_id, lab in sorted(labels.items())
    ]
    hashsets = [
        {
            "name": h.name,
            "format": h.format,
            "scheme": h.scheme,
            "entries": h.entries,
            "known_good": h.known_good,
            "source_sha256": h.source_sha256,
            "imported": _iso(h.imported_at),
        }
        for h in store.hashset_rows()
    ]
    statuses = [s for s in ("ok", "duplicate", "known_good", "error", "skipped")]
    statuses += sorted(set(stats.by_status) - set(statuses))
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_TEMPLATE).render(
        case_name=store.case_dir.resolve().name,
        case_id=_case_id(store),
        made=_iso(datetime.now(UTC)),
        version=__version__,
        python=platform.python_version(),
        host=platform.node() or "unknown host",
        s=stats,
        roots=list(stats.roots.values()),
        types=sorted(stats.by_type),
        statuses=statuses,
        matches=sorted(stats.matches.items()),
        hashsets=hashsets,
        elapsed=elapsed,
        throughput=f"{processed / elapsed:.1f} files/s" if elapsed > 0 else "-",
        queue=queue,
        labels=label_rows,
        identities=_identities(store.case_dir, paths),
        plots=_plots(stats),
        runs=run_rows,
        models=_models(runs),
        records_digest=digest.h.hexdigest(),
    )


def write_report(store: CaseStore, out: IO[str], *, top: int = 24) -> None:
    out.write(build_report(store, top=top))


class PdfUnavailable(RuntimeError):
    """PDF output needs WeasyPrint (the ``pdf`` extra) and its Pango libraries."""


def write_pdf(store: CaseStore, out: IO[bytes], *, top: int = 24) -> None:
    """The same report as PDF (A4 landscape), laid out by WeasyPrint: no browser involved, and
    nothing fetched (its URL fetcher takes data URIs only, all the report holds)."""
    from PIL import ImageFile

    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        import weasyprint
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are missing
        raise PdfUnavailable(
            f"PDF reports need WeasyPrint: pip install 'heroes[pdf]' ({exc})"
        ) from exc
    finally:
        # WeasyPrint makes Pillow accept truncated images process-wide when imported
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    html = build_report(store, top=top)
    fetcher = URLFetcher(allowed_protocols=("data",))
    weasyprint.HTML(string=html, url_fetcher=fetcher).write_pdf(out)


__all__ = ["blurred_thumbnail", "build_report", "write_report"]
