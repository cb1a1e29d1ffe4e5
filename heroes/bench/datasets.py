"""Labelled sets in the public datasets' own layouts, read into plain lists of samples.

Age: a UTKFace folder (``AGE_GENDER_RACE_DATE.jpg``), an APPA-REAL CSV (``file_name``,
``real_age``, ``apparent_age_avg``) or a generic CSV (``path``, ``age``). Nudity: a folder per
label or a CSV (``path``, ``label``). Face verification: an LFW ``pairs.txt`` or a CSV (``path1``,
``path2``, ``same``). Search: an INRIA Holidays folder (``GGGGNN.jpg``, ``NN == 00`` the query of
group ``GGGG``) or a CSV (``path``, ``group`` and optionally ``query``).

A sample whose file is missing or whose label cannot be read is kept with its reason in
``Dataset.problems``: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
#: folder or CSV labels read as the positive (explicit) class unless ``positive=`` says otherwise
POSITIVE_LABELS = frozenset(
    {"1", "true", "yes", "positive", "explicit", "nsfw", "nude", "nudity", "porn", "sexy", "hentai"}
)


class DatasetError(ValueError):
    """A dataset cannot be read at all (missing file, unknown format, no usable column)."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: float  # age in years, 1/0 for a binary label, group number for search
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


@dataclass
class Dataset:
    format: str
    root: Path
    samples: list[Sample] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)  # indexes into samples (search)
    problems: list[dict[str, str]] = field(default_factory=list)


def load_rgb(path: Path) -> NDArray[np.uint8]:
    """An image file as RGB uint8, EXIF orientation applied (the way a person sees it)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def _images(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return [c.strip().lower() for c in reader.fieldnames or []], [
            {k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in rows
        ]


def _pick(columns: list[str], names: Iterable[str], what: str, path: Path) -> str:
    for n in names:
        if n in columns:
            return n
    raise DatasetError(f"{path}: no {what} column (looked for {', '.join(names)}); has {columns}")


def _resolve(base: Path, name: str, extra_dirs: Iterable[Path] = ()) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for d in (base, *extra_dirs):
        if (d / p).exists():
            return d / p
    return base / p


_UTK = re.compile(r"^(\d+)_(\d+)_(\d+)_")
_UTK_SHORT = re.compile(r"^(\d+)_(\d+)_")


def read_age(path: Path, fmt: str) -> Dataset:
    """Age sets: ``utkface`` (folder), ``appa-real`` (CSV), ``csv`` (path, age)."""
    path = Path(path)
    if fmt == "utkface":
        if not path.is_dir():
            raise DatasetError(f"UTKFace format needs a folder: {path}")
        ds = Dataset(fmt, path)
        for p in _images(path):
            m = _UTK.match(p.name) or _UTK_SHORT.match(p.name)
            if m is None:
                ds.problems.append({"path": str(p), "reason": "name is not AGE_GENDER_RACE_..."})
                continue
            ds.samples.append(Sample(p, float(m.group(1))))
        return ds
    cols, rows = _csv_rows(path)
    ds = Dataset(fmt, path.parent)
    if fmt == "appa-real":
        fcol = _pick(cols, ("file_name", "file", "path"), "file", path)
        acol = _pick(cols, ("real_age", "age"), "real_age", path)
        app = next((c for c in ("apparent_age_avg", "apparent_age") if c in cols), None)
        split = path.stem.rsplit("_", 1)[-1]
        extra_dirs = [path.parent / split, path.parent / "images"]
    elif fmt == "csv":
        fcol = _pick(cols, ("path", "file", "file_name", "image"), "path", path)
        acol = _pick(cols, ("age", "real_age"), "age", path)
        app, extra_dirs = None, []
    else:
        raise DatasetError(f"unknown age format {fmt!r}: utkface, appa-real or csv")
    for r in rows:
        p = _resolve(path.parent, r[fcol], extra_dirs)
        try:
            age = float(r[acol])
        except ValueError:
            ds.problems.append({"path": str(p), "reason": f"age {r[acol]!r} is not a number"})
            continue
        extra = {}
        if app and r.get(app):
            try:
                extra["apparent_age"] = float(r[app])
            except ValueError:
                pass
        ds.samples.append(Sample(p, age, extra))
    return ds


def _is_positive(label: str, positive: set[str] | None) -> bool:
    lab = label.strip().lower()
    return lab in positive if positive else lab in POSITIVE_LABELS


def read_binary(path: Path, fmt: str, positive: Iterable[str] | None = None) -> Dataset:
    """Binary sets (nudity): ``folders`` (one subfolder per label) or ``csv`` (path, label).

    Labels in ``positive`` (default: 1, true, positive, explicit, nsfw, nude, porn, sexy, hentai)
    are the positive class; every other label is negative.
    """
    path = Path(path)
    pos = {p.strip().lower() for p in positive} if positive else None
    if fmt == "folders":
        if not path.is_dir():
            raise DatasetError(f"folder-per-label format needs a folder: {path}")
        ds = Dataset(fmt, path)
        for sub in sorted(d for d in path.iterdir() if d.is_dir()):
            y = _is_positive(sub.name, pos)
            ds.samples.extend(Sample(p, float(y)) for p in _images(sub))
        return ds
    if fmt != "csv":
        raise DatasetError(f"unknown nudity format {fmt!r}: folders or csv")
    cols, rows = _csv_rows(path)
    fcol = _pick(cols, ("path", "file", "file_name", "image"), "path", path)
    lcol = _pick(cols, ("label", "class", "y"), "label", path)
    ds = Dataset(fmt, path.parent)
    for r in rows:
        ds.samples.append(Sample(_resolve(path.parent, r[fcol]), float(_is_positive(r[lcol], pos))))
    return ds


def read_pairs(path: Path, fmt: str = "lfw") -> Dataset:
    """Verification pairs: ``lfw`` (pairs.txt; images under lfw/NAME/NAME_0001.jpg beside it,
    or ``lfw-deepfunneled/``, or directly beside it) or ``csv`` (path1, path2, same)."""
    path = Path(path)
    ds = Dataset(fmt, path.parent)
    if fmt == "csv":
        cols, rows = _csv_rows(path)
        a, b = (
            _pick(cols, ("path1", "a"), "path1", path),
            _pick(cols, ("path2", "b"), "path2", path),
        )
        s = _pick(cols, ("same", "label", "match"), "same", path)
        for r in rows:
            ds.pairs.append(
                Pair(
                    _resolve(path.parent, r[a]),
                    _resolve(path.parent, r[b]),
                    r[s].lower() in {"1", "true", "yes", "same"},
                )
            )
        return ds
    if fmt != "lfw":
        raise DatasetError(f"unknown pairs format {fmt!r}: lfw or csv")
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    roots = [path.parent / "lfw", path.parent / "lfw-deepfunneled", path.parent]
    root = next((r for r in roots if r.is_dir() and any(r.iterdir())), path.parent)

    def img(name: str, n: str) -> Path:
        return root / name / f"{name}_{int(n):04d}.jpg"

    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if len(f) == 3:
            ds.pairs.append(Pair(img(f[0], f[1]), img(f[0], f[2]), True))
        elif len(f) == 4:
            ds.pairs.append(Pair(img(f[0], f[1]), img(f[2], f[3]), False))
        elif f and not all(x.isdigit() for x in f):
            ds.problems.append({"path": str(path), "reason": f"unreadable pairs line {line!r}"})
    return ds


_HOLIDAYS = re.compile(r"^(\d{4})(\d{2})$")


def read_search(path: Path, fmt: str) -> Dataset:
    """Retrieval sets: ``holidays`` (folder) or ``csv`` (path, group[, query]).

    Holidays: ``100000.jpg`` is the query of group 1000 and ``100001.jpg``... its relevant
    images. CSV: rows of one ``group`` are relevant to each other; with a ``query`` column
    (1/0) only those rows are queries, otherwise every row is a query (leave-one-out).
    """
    path = Path(path)
    if fmt == "holidays":
        if not path.is_dir():
            raise DatasetError(f"Holidays format needs a folder: {path}")
        ds = Dataset(fmt, path)
        for p in _images(path):
            m = _HOLIDAYS.match(p.stem)
            if m is None:
                ds.problems.append({"path": str(p), "reason": "name is not GGGGNN (Holidays)"})
                continue
            if m.group(2) == "00":
                ds.queries.append(len(ds.samples))
            ds.samples.append(Sample(p, float(m.group(1))))
        return ds
    if fmt != "csv":
        raise DatasetError(f"unknown search format {fmt!r}: holidays or csv")
    cols, rows = _csv_rows(path)
    fcol = _pick(cols, ("path", "file", "file_name", "image"), "path", path)
    gcol = _pick(cols, ("group", "label", "id"), "group", path)
    ds = Dataset(fmt, path.parent)
    groups: dict[str, int] = {}
    for i, r in enumerate(rows):
        g = groups.setdefault(r[gcol], len(groups))
        ds.samples.append(Sample(_resolve(path.parent, r[fcol]), float(g)))
        if "query" not in cols or r["query"].lower() in {"1", "true", "yes"}:
            ds.queries.append(i)
    return ds


def make_transform_set(photos: dict[str, NDArray[np.uint8]], dest: Path, *, seed: int = 0) -> Path:
    """A search set of our own: each photo plus resized, cropped, rotated and mirrored copies,
    written as JPEGs with a ``groups.csv`` (path, group, query) where the original is the query.
    """
    rng = np.random.default_rng(seed)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, a in sorted(photos.items()):
        im = Image.fromarray(a).convert("RGB")
        w, h = im.size
        cx, cy = int(rng.integers(0, w // 8 + 1)), int(rng.integers(0, h // 8 + 1))
        variants = {
            "orig": im,
            "half": im.resize((max(1, w // 2), max(1, h // 2))),
            "crop": im.crop((cx, cy, cx + int(w * 0.8), cy + int(h * 0.8))),
            "rot": im.rotate(float(rng.uniform(5, 15)), expand=True),
            "mirror": ImageOps.mirror(im),
        }
        for kind, v in variants.items():
            rel = f"{name}_{kind}.jpg"
            v.save(dest / rel, quality=85)
            rows.append((rel, name, 1 if kind == "orig" else 0))
    with (dest / "groups.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "query"])
        w.writerows(rows)
    return dest / "groups.csv"
