"""The ``heroes`` command. Thin: parse, call the library, map errors to messages and exit codes.

Exit codes: 0 done (bad files inside the evidence are records, not failures); 2 unusable
arguments (missing evidence, a bad option or ``HEROES_*`` value, a case inside the evidence, an
unwritable, read-only, busy or other-version case, unreadable hash set); 130 interrupted.

Names come from the seizure, so nothing printed is read as Rich markup and every control
character of a value is shown as ``\\xNN``: a file called ``[red]`` or one holding a terminal
escape sequence prints as what it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from heroes import __version__
from heroes.config import Settings
from heroes.names import shown

if TYPE_CHECKING:
    from heroes.pipeline.hashsets import HashSetSource

app = typer.Typer(
    name="heroes",
    help="Media triage for child-abuse and human-trafficking investigations.",
    no_args_is_help=True,
    add_completion=False,
)
hashsets_app = typer.Typer(
    help="Known-hash sets: VICS JSON, CSV/ICSE, NSRL RDSv3, PDQ lists.", no_args_is_help=True
)
app.add_typer(hashsets_app, name="hashsets")
models_app = typer.Typer(
    help="Models: list, fetch, export (manifests in heroes/models/manifests).", no_args_is_help=True
)
app.add_typer(models_app, name="models")

err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)
out = Console(markup=False, emoji=False, highlight=False)


def _shown(value: object) -> str:
    """A value as printed: control characters (ESC, CR, BEL, ...) as ``\\xNN``."""
    return shown(value)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", shown(message, keep_newlines=True)))
    return typer.Exit(code)


def _setting_problem(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        name = ".".join(str(x) for x in e["loc"])
        env = "HEROES_" + "__".join(str(x) for x in e["loc"]).upper()
        parts.append(f"{name} (option or {env}): {e['msg']}, got {e.get('input')!r}")
    return "invalid setting " + "; ".join(parts)


_base_settings: Settings | None = None


def _settings(**values: object) -> Settings:
    """The settings, from options and ``HEROES_*``, built once per command (options make a copy
    with their values); a bad value is exit 2, not a traceback."""
    global _base_settings
    try:
        if values:
            return Settings(**values)  # type: ignore[arg-type]
        if _base_settings is None:
            _base_settings = Settings()
        return _base_settings
    except ValidationError as exc:
        raise _fail(_setting_problem(exc)) from None


def main() -> None:
    """The console entry point: what the core raises for bad input becomes exit 2."""
    from heroes.store.db import StoreError

    try:
        app()
    except ValidationError as exc:
        raise SystemExit(_fail(_setting_problem(exc)).exit_code) from None
    except StoreError as exc:
        raise SystemExit(_fail(str(exc)).exit_code) from None


def _warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "bold yellow"), " ", shown(message)), soft_wrap=True)


def _hashset_sources(specs: list[str] | None) -> list[HashSetSource]:
    """Hash-set arguments (FILE or FORMAT:FILE) as sources, each checked to exist."""
    from heroes.pipeline.hashsets import hashset_source

    sources = [hashset_source(spec) for spec in specs or []]
    for source in sources:
        if not source.path.is_file():
            raise _fail(f"hash set not found: {source.path}")
    return sources


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    global _base_settings
    _base_settings = None  # each command reads the settings afresh, once
    if version:
        out.print(f"heroes {__version__}")
        raise typer.Exit(0)


@app.command()
def triage(
    seizure: Annotated[Path, typer.Argument(help="Evidence root: a folder, an archive or a file.")],
    case: Annotated[str, typer.Option("--case", help="Case folder (created if missing).")],
    hashset: Annotated[
        list[str] | None,
        typer.Option(
            "--hashset",
            help="Known-bad hash set to import and match; FORMAT:FILE (e.g. pdq:list.txt) says "
            "its format when the content cannot (a bare list of 64-digit hashes reads as SHA-256).",
        ),
    ] = None,
    known_good: Annotated[
        list[str] | None,
        typer.Option(
            "--known-good",
            help="Known-good hash set, FILE or FORMAT:FILE (NSRL is always known-good).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Decode processes (0: one per core).")] = 0,
    models: Annotated[
        bool | None, typer.Option(help="Run the models (default on; HEROES_MODELS).")
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option(help="Process files that failed before again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar (default: on a terminal).")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="ray (Ray actors, the default), local (a process pool; faster for small "
            "seizures on one machine) or auto (Ray for a cluster address or a large seizure). "
            "Default: HEROES_ENGINE, else ray."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Join a Ray cluster (auto, HOST:PORT, ray://HOST:10001) instead of "
            "starting Ray here; its nodes must see the evidence path."
        ),
    ] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for Ray started here.", min=1)] = None,
    gpus: Annotated[
        int | None, typer.Option(help="GPUs to use (default: detected).", min=0)
    ] = None,
    actors: Annotated[
        int | None, typer.Option(help="Model actors (default: one per CPU, or per GPU).", min=1)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Files per batch (default 8 on CPU, 32 on GPU).", min=1)
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(help="fused (one CPU stage) or split (CPU decode, GPU models); default auto."),
    ] = None,
    volume_key: Annotated[
        list[str] | None,
        typer.Option(
            "--volume-key",
            help="Password, BitLocker recovery password or LUKS passphrase tried on encrypted "
            "volumes of forensic images (repeatable; never stored in the case).",
        ),
    ] = None,
    shadow_copies: Annotated[
        bool | None,
        typer.Option(help="Walk Volume Shadow Copies of forensic images (always listed)."),
    ] = None,
    verify_images: Annotated[
        bool | None,
        typer.Option(help="Check E01 images against the hashes they store (default on)."),
    ] = None,
    carve: Annotated[
        bool | None,
        typer.Option(help="Carve JPEG/PNG/MP4 from the unallocated space of forensic images."),
    ] = None,
) -> None:
    """Ingest a seizure: discover, hash, match known hash sets, decode, run the models, score and
    rank every file. Runs on Ray (embedded, or on a cluster with --address) or in a
    local process pool; a re-run resumes."""
    from heroes.pipeline.hashsets import HashSetError
    from heroes.pipeline.runner import triage as run_triage
    from heroes.store.db import StoreError

    if not seizure.exists() and not seizure.is_symlink():
        raise _fail(f"evidence not found: {seizure}")
    if not case.strip():
        raise _fail(
            "--case needs a folder name (an empty one would put the case in the current folder)"
        )
    case_dir = Path(case)
    bad_sets = _hashset_sources(hashset)
    good_sets = _hashset_sources(known_good)
    settings = _settings(workers=workers)
    if models is not None:
        settings = settings.model_copy(update={"models": models})
    if engine is not None:
        if engine not in ("auto", "ray", "local"):
            raise _fail(f"--engine must be auto, ray or local, not {engine!r}")
        settings = settings.model_copy(update={"engine": engine})
    if layout is not None and layout not in ("auto", "fused", "split"):
        raise _fail(f"--layout must be auto, fused or split, not {layout!r}")
    ray_opts = {
        k: v
        for k, v in dict(
            address=address,
            cpus=cpus,
            gpus=gpus,
            actors=actors,
            batch_size=batch_size,
            layout=layout,
        ).items()
        if v is not None
    }
    if ray_opts:
        settings = settings.model_copy(update={"ray": settings.ray.model_copy(update=ray_opts)})
    disk_opts: dict[str, object] = {}
    if volume_key:
        disk_opts["keys"] = [*settings.disk.keys, *(SecretStr(k) for k in volume_key)]
    if shadow_copies is not None:
        disk_opts["shadow_copies"] = shadow_copies
    if verify_images is not None:
        disk_opts["verify"] = verify_images
    if carve is not None:
        disk_opts["carve"] = carve
    if disk_opts:
        settings = settings.model_copy(update={"disk": settings.disk.model_copy(update=disk_opts)})
    show = sys.stderr.isatty() if progress is None else progress
    try:
        summary = run_triage(
            seizure,
            case_dir,
            settings=settings,
            hashsets=bad_sets,
            known_good=good_sets,
            progress=show and not as_json,
            retry_errors=retry_errors,
        )
    except (StoreError, HashSetError, FileNotFoundError, RuntimeError) as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt:
        err.print("interrupted: what was done is kept; run the same command again to resume")
        raise typer.Exit(130) from None
    for message in summary.warnings:
        _warn(message)
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary.to_dict())
        print_known_bad(case_dir)
        print_faces(case_dir)


def print_known_bad(case: Path, limit: int = 20) -> None:
    from heroes.pipeline.report import known_bad_matches
    from heroes.store.db import CaseStore

    store = CaseStore(case, _settings().db_url, create=False)
    try:
        found = known_bad_matches(store, limit)
    finally:
        store.close()
    if not found:
        return
    t = Table(title=f"known-bad matches (first {limit})")
    for col in ("item", "path", "hash set", "category", "method", "distance"):
        t.add_column(col, overflow="fold")
    for m in found:
        cat = m["category"] or "-"
        if m.get("category_name"):
            cat = f"{cat} {m['category_name']}"
        t.add_row(
            str(m["item_id"]),
            _shown(m["path"]),
            _shown(m["hashset"]),
            _shown(cat),
            m["method"],
            str(m["distance"]),
        )
    out.print(t)


def print_summary(s: dict) -> None:  # type: ignore[type-arg]
    out.print(
        Text.assemble(
            ("case", "bold"),
            f" {_shown(s['case'])}  ",
            ("evidence", "bold"),
            f" {_shown(s['evidence'])}",
        )
    )
    out.print(
        f"{s['new']} new records, {s['already_done']} already done, {s['updated']} updated; "
        f"{s['bytes'] / 1e6:.1f} MB in {s['elapsed_s']:.1f} s ({s['files_per_s']:.1f} files/s"
        + (f", {s['frames']} frames, {s['frames_per_s']:.1f} frames/s)" if s.get("frames") else ")")
    )
    ray = s.get("ray")
    if ray:
        where = ray["address"] or "embedded"
        out.print(
            f"engine: Ray ({where}), {ray['nodes']} node(s), {ray['cpus']} CPUs, "
            f"{ray['gpus']} GPUs; "
            f"{ray['layout']} plan, {ray['actors']} model actors, batches of {ray['batch_size']}"
            + (f"; {ray['redone']} files redone in the driver" if ray["redone"] else ""),
            soft_wrap=True,
        )
    else:
        out.print(f"engine: {s.get('engine', 'local')} process pool")
    if s["hashsets_imported"]:
        out.print("hash sets imported: " + _shown(", ".join(s["hashsets_imported"])))
    if s["by_type_status"]:
        statuses = sorted({r["status"] for r in s["by_type_status"]})
        t = Table(title="files by type and status")
        t.add_column("type")
        for st in statuses:
            t.add_column(st, justify="right")
        t.add_column("total", justify="right")
        for media in sorted({r["media_type"] for r in s["by_type_status"]}):
            counts = {
                r["status"]: r["count"] for r in s["by_type_status"] if r["media_type"] == media
            }
            t.add_row(
                media, *[str(counts.get(st, "")) for st in statuses], str(sum(counts.values()))
            )
        out.print(t)
    if s["errors"]:
        t = Table(title="errors and skips by kind")
        t.add_column("kind")
        t.add_column("files", justify="right")
        for kind, n in s["errors"].items():
            t.add_row(_shown(kind), str(n))
        out.print(t)
    if s["matches"]:
        t = Table(title="known-hash matches")
        for col in ("hash set", "category", "method", "files"):
            t.add_column(col, overflow="fold")
        for m in s["matches"]:
            t.add_row(_shown(m["hashset"]), _shown(m["category"]), m["method"], str(m["count"]))
        out.print(t)
    else:
        out.print("no known-hash matches")
    if s.get("models"):
        usable = [n for n, st in s["models"].items() if st == "ok"]
        missing = {n: st for n, st in s["models"].items() if st != "ok"}
        out.print(
            f"models: {', '.join(usable) or 'none'}; {s['faces']} faces in {s['items_with_faces']} "
            f"files, {s['likely_minor_faces']} likely minors (P(age<18) >= 0.5), "
            f"{s['explicit']} files flagged explicit",
            soft_wrap=True,
        )
        for name, why in missing.items():
            out.print(
                Text.assemble((f"model {name} not used:", "yellow"), " ", _shown(why)),
                soft_wrap=True,
            )


def print_faces(case: Path, limit: int = 10) -> None:
    from heroes.pipeline.report import faces_found
    from heroes.store.db import CaseStore

    store = CaseStore(case, _settings().db_url, create=False)
    try:
        found = faces_found(store, limit)
    finally:
        store.close()
    if not found:
        return
    t = Table(title=f"faces (most likely minors first, first {limit})")
    for col in ("item", "path", "time", "age", "interval", "P(minor)", "score"):
        t.add_column(col, overflow="fold")
    for f in found:
        t_s = "" if f["frame_time"] is None else f"{f['frame_time']:.1f} s"
        lo, hi = f.get("age_interval") or (None, None)
        t.add_row(
            str(f["item_id"]),
            _shown(f["path"]),
            t_s,
            f"{f.get('age', float('nan')):.0f}",
            f"{lo:.0f}-{hi:.0f}" if lo is not None else "",
            f"{f.get('p_minor', 0):.2f}",
            f"{f['score']:.2f}" + (" not confirmed human" if f.get("confirmed") is False else ""),
        )
    out.print(t)


@app.command()
def queue(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    top: Annotated[int, typer.Option(help="How many items to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """The head of the review queue: rank, priority, path and why."""
    from heroes.pipeline.labels import current_labels
    from heroes.pipeline.report import record
    from heroes.store.db import CaseStore, StoreError

    try:
        store = CaseStore(case, _settings().db_url, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    try:
        head = [r for r, _ in zip(store.items(order="rank"), range(top), strict=False)]
        labels = current_labels(store, [r.id for r in head])
        rows = [record(r, labels.get(r.id)) for r in head]
    finally:
        store.close()
    if as_json:
        keys = ("rank", "priority", "item_id", "path", "status", "why", "label")
        for r in rows:
            print(json.dumps({k: r[k] for k in keys}, ensure_ascii=False))
        return
    t = Table(title=f"review queue (top {top})")
    for col in ("rank", "priority", "item", "path", "why", "label"):
        t.add_column(col, overflow="fold")
    for r in rows:
        why = "; ".join(_why_text(w) for w in r["why"]) or "-"
        t.add_row(
            str(r["rank"]),
            f"{(r['priority'] or 0):.3f}",
            str(r["item_id"]),
            _shown(r["path"]),
            _shown(why),
            _shown(_label_text(r["label"])),
        )
    out.print(t)


#: how each number of a ``why`` entry reads in the queue, in this order
_WHY_LABELS: tuple[tuple[str, str], ...] = (
    ("hashset", "hash set {}"),
    ("category", "category {}"),
    ("distance", "PDQ distance {}"),
    ("via_item", "via item {}"),
    ("nudity", "nudity score {}"),
    ("threshold", "explicit threshold {}"),
    ("p_minor", "P(under 18) {}"),
    ("age", "estimated age {}"),
    ("error", "{}"),
)


def _why_text(w: dict) -> str:  # type: ignore[type-arg]
    """One reason as a reviewer reads it aloud, e.g. ``low nudity score, below the explicit
    threshold (nudity score 0.15, explicit threshold 0.5)``."""
    extra = [label.format(w[k]) for k, label in _WHY_LABELS if w.get(k) is not None]
    if w.get("frame_time") is not None:
        extra.append(f"at {w['frame_time']:.1f} s")
    return w["reason"] + (f" ({', '.join(extra)})" if extra else "")


@app.command()
def search(
    cases: Annotated[
        list[Path], typer.Argument(help="Case folders (or a folder of cases with --all).")
    ],
    face: Annotated[Path | None, typer.Option(help="Find the faces of this image.")] = None,
    scene: Annotated[
        Path | None, typer.Option(help="Find the same room or objects as this image.")
    ] = None,
    pdq: Annotated[
        str | None, typer.Option(help="Find images within --max-distance of this PDQ hash.")
    ] = None,
    similar_to: Annotated[
        int | None, typer.Option(help="Find visual near-duplicates of this item.")
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="PDQ search by an image, in any rotation or mirror.")
    ] = None,
    k: Annotated[int, typer.Option(help="Hits per query (per query face with --all-faces).")] = 10,
    all_faces: Annotated[
        bool,
        typer.Option(
            "--all-faces", help="Face search: search every face of the image, not only the largest."
        ),
    ] = False,
    max_distance: Annotated[int, typer.Option(help="PDQ Hamming distance.")] = 31,
    recheck: Annotated[bool, typer.Option(help="Scene: re-rank by geometric agreement.")] = False,
    all_under: Annotated[
        bool, typer.Option("--all", help="Search every case under the given folders.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or jsonl.")] = "table",
) -> None:
    """Search one or several cases by face, scene or PDQ; hits merged by score."""
    from heroes.search import SearchError, search_faces, search_pdq, search_scene
    from heroes.store.db import DB_FILE, StoreError

    chosen = [x is not None for x in (face, scene, pdq, similar_to, image)]
    if sum(chosen) != 1:
        raise _fail("give exactly one of --face, --scene, --pdq, --similar-to, --image")
    if all_under:
        cases = sorted({p.parent for root in cases for p in root.rglob(DB_FILE)})
    for c in cases:
        if not (c / DB_FILE).is_file() and not _settings().db_url:
            raise _fail(f"no case at {c}")
    settings = _settings()
    try:
        if face is not None:
            hits = search_faces(cases, face, k=k, settings=settings, all_faces=all_faces)
        elif scene is not None:
            hits = search_scene(cases, scene, k=k, settings=settings, recheck=recheck)
        else:
            hits = search_pdq(
                cases,
                pdq=pdq,
                similar_to=similar_to,
                image=image,
                max_distance=max_distance,
                settings=settings,
            )
    except (SearchError, StoreError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if fmt == "jsonl":
        for h in hits:
            print(json.dumps(h.to_dict(), ensure_ascii=False))
        return
    t = Table(title=f"{len(hits)} hits")
    for col in ("rank", "score", "query face", "case", "item", "path", "time", "box"):
        t.add_column(col, overflow="fold")
    for h in hits:
        t.add_row(
            str(h.rank),
            f"{h.score:.3f}",
            "" if h.query_face is None else str(h.query_face),
            _shown(Path(h.case).name),
            str(h.item_id),
            _shown(h.path or "?"),
            "" if h.frame_time is None else f"{h.frame_time:.1f} s",
            "" if h.bbox is None else ",".join(f"{v:.0f}" for v in h.bbox),
        )
    out.print(t)


@app.command()
def persons(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    min_faces: Annotated[int, typer.Option(help="Smallest group shown as a person.")] = 3,
    min_similarity: Annotated[
        float | None,
        typer.Option(
            help="Cosine to join two faces (default 0.94 for dlib face descriptors, calibrated"
            " on labelled public photos of 19 adults: no two people reached it; docs/models.md)."
        ),
    ] = None,
    recluster: Annotated[bool, typer.Option(help="Cluster again even if no face is new.")] = False,
    merge: Annotated[
        tuple[int, int] | None, typer.Option(help="Merge person B into person A: --merge A B.")
    ] = None,
    split: Annotated[int | None, typer.Option(help="Move --faces out of this person.")] = None,
    faces: Annotated[
        str | None, typer.Option(help="Face ids for --split, comma-separated.")
    ] = None,
    show: Annotated[
        int | None,
        typer.Option(
            help="List this person's faces (face ids for --split, files, boxes, frame times)."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or jsonl.")] = "table",
) -> None:
    """Group the case's faces into identities (ids stay stable across runs); merge and split."""
    from dataclasses import asdict

    from heroes.search import person_faces
    from heroes.search import persons as find_persons
    from heroes.store.db import StoreError

    if (split is None) != (faces is None):
        raise _fail("--split PERSON needs --faces FACE_ID,...")
    if fmt not in ("table", "jsonl"):
        raise _fail(f"unknown format {fmt!r}: use table or jsonl")
    if show is not None:
        try:
            listed = person_faces(case, show)
        except StoreError as exc:
            raise _fail(str(exc)) from exc
        if listed is None:
            raise _fail(f"no person {show} in {case}")
        if fmt == "jsonl":
            for f in listed:
                print(json.dumps({"person": show, **f}, ensure_ascii=False))
            return
        t = Table(title=f"person {show}: {len(listed)} faces")
        for col in ("face", "item", "path", "box", "time"):
            t.add_column(col, overflow="fold")
        for f in listed:
            box = ", ".join(f"{v:.0f}" for v in f["bbox"]) if f["bbox"] else "-"
            when = "-" if f["frame_time"] is None else f"{f['frame_time']:.2f} s"
            t.add_row(f["face_id"], str(f["item_id"]), _shown(f["path"]), box, when)
        out.print(t)
        return
    try:
        people = find_persons(
            case,
            min_faces=min_faces,
            min_similarity=min_similarity,
            recluster=recluster,
            merge=merge,
            split=(split, faces.split(",")) if split is not None and faces else None,
        )
    except (StoreError, ValueError, KeyError) as exc:
        raise _fail(str(exc)) from exc
    if fmt == "jsonl":
        for p in people:
            print(json.dumps(asdict(p), ensure_ascii=False))
        return
    t = Table(title=f"{len(people)} persons with at least {min_faces} faces")
    for col in ("person", "faces", "files", "videos", "examples"):
        t.add_column(col, overflow="fold")
    for p in people:
        t.add_row(
            str(p.identity),
            str(p.faces),
            str(p.files),
            str(p.videos),
            _shown("; ".join(p.examples)),
        )
    out.print(t)


@app.command()
def export(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (the record contract), csv or vics.")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
    vics_version: Annotated[
        str, typer.Option("--vics-version", help="VICS 2.0 (Cases) or 1.3 (Media).")
    ] = "2.0",
    profile: Annotated[str, typer.Option(help="VICS 2.0 profile: US, UK or Default.")] = "US",
    with_model_tags: Annotated[
        bool,
        typer.Option(
            "--with-model-tags",
            help="VICS: add model outputs as Tags (heroes:priority=0.93); never as a Category.",
        ),
    ] = False,
    case_number: Annotated[
        str | None, typer.Option(help="VICS CaseNumber (default: the case folder's name).")
    ] = None,
) -> None:
    """Write the case out: one record per file (jsonl, csv; schema in docs/records.md), or one
    VICS Media per distinct MD5 with its files (vics)."""
    from heroes.pipeline.report import ExportError, open_output
    from heroes.pipeline.report import export as do_export
    from heroes.pipeline.vics import VicsError, write_vics
    from heroes.store.db import CaseStore, StoreError

    if fmt not in ("jsonl", "csv", "vics"):
        raise _fail(f"unknown format {fmt!r}: use jsonl, csv or vics")
    profiles = {"us": "US", "uk": "UK", "default": "Default"}
    if profile.lower() not in profiles:
        raise _fail(f"--profile must be US, UK or Default, not {profile!r}")
    if output is not None and not output.parent.is_dir():
        raise _fail(f"cannot write {output}: folder {output.parent} does not exist")
    try:
        store = CaseStore(case, _settings().db_url, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    try:
        if fmt == "vics":
            options = dict(
                version=vics_version,
                profile=profiles[profile.lower()],
                with_model_tags=with_model_tags,
                case_number=case_number,
            )
            if output is None:
                n = write_vics(store, sys.stdout, **options)
            else:
                with open_output(output) as f:
                    n = write_vics(store, f, **options)
        else:
            n = do_export(store, fmt, output)
    except (ExportError, VicsError, StoreError) as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}") from exc
    finally:
        store.close()
    if output is not None:
        what = "VICS Media" if fmt == "vics" else "records"
        err.print(f"{n} {what} written to {_shown(output)}")


@app.command()
def label(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    items: Annotated[list[int], typer.Argument(help="Item ids (their exact copies follow).")],
    category: Annotated[
        int | None,
        typer.Option(
            help="VICS-US category: 0 non-pertinent, 1 child abuse material, 2 child exploitive /"
            " age difficult, 3 CGI/animation, 4 comparison. Omit to set only flags or a note."
        ),
    ] = None,
    victim_identified: Annotated[
        bool, typer.Option("--victim-identified", help="The victim is identified.")
    ] = False,
    offender_identified: Annotated[
        bool, typer.Option("--offender-identified", help="The offender is identified.")
    ] = False,
    series: Annotated[str | None, typer.Option(help="Series name.")] = None,
    note: Annotated[str | None, typer.Option(help="Free text for the record.")] = None,
    by: Annotated[str | None, typer.Option(help="Who labels (default: the login name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the labels as JSON.")] = False,
) -> None:
    """Label items by hand (a human act: models never categorise). Every label is kept, with who
    and when; the latest is the item's label."""
    import getpass

    from heroes.pipeline.labels import Label, apply_label, current_labels
    from heroes.store.db import CaseStore, StoreError

    try:
        lab = Label(category, victim_identified, offender_identified, series, note)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if by is None:
        try:
            by = getpass.getuser()
        except (KeyError, OSError):
            raise _fail("cannot tell who you are: give --by NAME") from None
    try:
        store = CaseStore(case, _settings().db_url, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    try:
        labelled = apply_label(store, items, lab, by)
        now = current_labels(store, labelled)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from exc
    except (ValueError, StoreError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        for item_id in labelled:
            print(json.dumps({"item_id": item_id, "label": now[item_id]}, ensure_ascii=False))
        return
    copies = len(labelled) - len(set(items))
    err.print(
        f"labelled {len(labelled)} items ({copies} exact copies included): "
        + _label_text(now[labelled[0]])
    )


def _label_text(lab: dict | None) -> str:  # type: ignore[type-arg]
    if not lab:
        return "-"
    parts = [
        "uncategorised" if lab["category"] is None else f"{lab['category']} {lab['category_name']}"
    ]
    if lab["victim_identified"]:
        parts.append("victim identified")
    if lab["offender_identified"]:
        parts.append("offender identified")
    if lab["series"]:
        parts.append(f"series {lab['series']}")
    if lab["note"]:
        parts.append(f"note {lab['note']}")
    return ", ".join(parts) + f" (by {lab['by']})"


@app.command()
def report(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The report file.")],
    fmt: Annotated[
        str, typer.Option("--format", help="html (one self-contained file) or pdf.")
    ] = "html",
    top: Annotated[
        int, typer.Option(help="Queue items shown, with blurred thumbnails.", min=0)
    ] = 24,
) -> None:
    """One self-contained HTML report of the case: summary, queue head with blurred thumbnails,
    labels, identities, plots and the chain of custody."""
    from heroes.pipeline.casereport import PdfUnavailable, write_pdf, write_report
    from heroes.pipeline.report import ExportError, open_output
    from heroes.store.db import CaseStore, StoreError

    if fmt not in ("html", "pdf"):
        raise _fail(f"unknown report format {fmt!r}: use html or pdf")
    if not output.parent.is_dir():
        raise _fail(f"cannot write {output}: folder {output.parent} does not exist")
    try:
        store = CaseStore(case, _settings().db_url, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    try:
        if fmt == "pdf":
            if output.is_dir():
                raise ExportError(f"cannot write {output}: it is a folder")
            with open(output, "wb") as pdf:
                write_pdf(store, pdf, top=top)
        else:
            with open_output(output) as f:
                write_report(store, f, top=top)
    except (ExportError, PdfUnavailable, OSError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        store.close()
    err.print(f"report written to {output}")


@hashsets_app.command("import")
def hashsets_import(
    files: Annotated[list[str], typer.Argument(help="Hash-set files (FILE or FORMAT:FILE).")],
    into: Annotated[Path, typer.Option("--into", help="Case folder.")],
    known_good: Annotated[
        bool, typer.Option("--known-good", help="These sets list known-good files.")
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Read every file as this format (vics-1, vics-2, csv, icse, nsrl, pdq) instead "
            "of detecting it; needed for a bare list of 64-digit PDQ hashes.",
        ),
    ] = None,
) -> None:
    """Import hash sets into a case (each file once; format detected from its content unless
    --format or a FORMAT: prefix says it)."""
    from heroes.pipeline.hashsets import FORMATS, HashSetError, HashSetSource
    from heroes.pipeline.importsets import import_hashsets
    from heroes.store.db import CaseStore, StoreError

    if fmt is not None and fmt.lower() not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    sources = _hashset_sources(files)
    if fmt is not None:
        sources = [HashSetSource(s.path, s.fmt or fmt.lower()) for s in sources]
    try:
        store = CaseStore(into, _settings().db_url)
        done = import_hashsets(store, sources, known_good=True if known_good else None, warn=_warn)
    except (StoreError, HashSetError) as exc:
        raise _fail(str(exc)) from exc
    for name, entries, rejected, new in done:
        state = "imported" if new else "already in the case"
        out.print(f"{_shown(name)}: {entries} entries, {rejected} rejected rows ({state})")
    store.close()


@hashsets_app.command("list")
def hashsets_list(case: Annotated[Path, typer.Argument(help="Case folder.")]) -> None:
    """Show the hash sets of a case with their schemes and categories."""
    from heroes.store.db import CaseStore, StoreError

    try:
        store = CaseStore(case, _settings().db_url, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    rows = store.hashset_rows()
    t = Table(title="hash sets")
    t.add_column("name", no_wrap=True)
    for col in ("format", "scheme", "known-good", "entries", "rejected"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            _shown(r.name),
            r.format,
            _shown(r.scheme),
            "yes" if r.known_good else "no",
            str(r.entries),
            str(r.rejected),
        )
    out.print(t)
    for r in rows:
        cats = "; ".join(f"{k} {v}" for k, v in r.categories.items()) or "none"
        out.print(_shown(f"{r.name} categories ({r.scheme}): {cats}"), soft_wrap=True)
        if (r.meta or {}).get("warning"):
            _warn(str(r.meta["warning"]))
    store.close()


@models_app.command("list")
def models_list(
    verify: Annotated[
        bool, typer.Option(help="Check each file's sha256 (reads the files).")
    ] = True,
) -> None:
    """Each model: task, where it is, its licence, and whether it is usable here."""
    from heroes.models import registry

    t = Table(title=f"models (model dir: {registry.model_dir()})")
    t.add_column("name", no_wrap=True)
    for col in ("task", "usable", "location", "licence"):
        t.add_column(col, overflow="fold")
    for name, spec in sorted(registry.manifest_specs().items()):
        st = registry.status(spec, check=verify)
        t.add_row(
            name, st.task, "yes" if st.usable else f"no: {st.reason}", st.location, st.licence
        )
    out.print(t)
    try:
        from heroes.models.runtime import choose_providers

        out.print("onnxruntime providers: " + ", ".join(choose_providers()))
    except ImportError:
        out.print("onnxruntime is not installed")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="Model name (see heroes models list).")],
    url: Annotated[
        str | None, typer.Option(help="Download from here instead of the manifest URL.")
    ] = None,
) -> None:
    """Download a model into the model directory, checking its sha256."""
    from heroes.models import registry

    try:
        spec = registry.get_spec(name)
        path = registry.fetch(spec, url=url)
    except (ValueError, registry.ModelError, OSError) as exc:
        raise _fail(str(exc)) from exc
    out.print(f"{name}: {path} (sha256 verified)")


@models_app.command("export")
def models_export(
    name: Annotated[str, typer.Argument(help="Name of the new model (its manifest name).")],
    open_clip_arch: Annotated[
        str | None, typer.Option("--open-clip", help="open_clip architecture, e.g. ViT-B-32.")
    ] = None,
    factory: Annotated[
        str | None, typer.Option(help="package.module:callable returning a torch nn.Module.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Local weights file.")] = None,
    size: Annotated[int | None, typer.Option(help="Input size (default: the model's own).")] = None,
    licence: Annotated[
        str, typer.Option(help="Licence of the weights (shown to users).")
    ] = "unknown",
    source: Annotated[str, typer.Option(help="Where the weights come from.")] = "",
    task: Annotated[str, typer.Option(help="scene_embed or face_embed.")] = "scene_embed",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Default: the model directory.")
    ] = None,
) -> None:
    """Export a PyTorch image encoder (CLIP, DINOv2, ...) to ONNX plus a manifest (extra: train)."""
    from heroes.models import registry
    from heroes.models.export import ExportError, export_image_encoder, load_factory, load_open_clip

    if (open_clip_arch is None) == (factory is None):
        raise _fail("give exactly one of --open-clip ARCH or --factory module:callable")
    try:
        if open_clip_arch is not None:
            if weights is None:
                raise _fail("--open-clip needs --weights (a local file; nothing is downloaded)")
            model, native = load_open_clip(open_clip_arch, weights)
            size = size or native
        else:
            assert factory is not None
            model = load_factory(factory, weights)
        if size is None:
            raise _fail("--size is needed for a --factory model")
        onnx_path, toml_path = export_image_encoder(
            model,
            out_dir or registry.model_dir(),
            name=name,
            size=size,
            licence=licence,
            source=source or (str(weights) if weights else factory or ""),
            task=task,
        )
    except (ExportError, ImportError, OSError) as exc:
        raise _fail(str(exc)) from exc
    out.print(f"{name}: {onnx_path} and {toml_path}; use it with HEROES_SCENE_MODEL={name}")


# the research harness ---------------------------------------------------------------------------

bench_app = typer.Typer(
    help="Research harness: accuracy and speed of models chosen by manifest.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("accuracy")
def bench_accuracy(
    task: Annotated[str, typer.Option(help="age, nudity, face-verify or search.")],
    dataset: Annotated[Path, typer.Option(help="The labelled set: a folder or a CSV/pairs file.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="age: utkface, appa-real, csv; nudity: folders, csv; face-verify: lfw, csv; "
            "search: holidays, csv.",
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(help="Manifest name or TOML path; repeat to compare (default: the task's)."),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Without --model: every manifest of the task.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The result object on stdout.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write result.json, table.md and plots here.")
    ] = None,
    faces: Annotated[
        str,
        typer.Option(help="detect: find faces; whole: each image is an aligned face crop."),
    ] = "detect",
    positive: Annotated[
        list[str] | None, typer.Option(help="Nudity labels of the positive class (repeatable).")
    ] = None,
) -> None:
    """Accuracy of one or more models on a labelled set, as a table or JSON."""
    from heroes.bench.accuracy import markdown_table
    from heroes.bench.run import run_accuracy
    from heroes.bench.scorers import DEFAULT_MODELS, TASK_OF_BENCH
    from heroes.models import registry

    if task not in TASK_OF_BENCH:
        raise _fail(f"unknown task {task!r}: {', '.join(TASK_OF_BENCH)}")
    if faces not in ("detect", "whole"):
        raise _fail("--faces is detect or whole")
    models = list(model or [])
    if not models and compare:
        models = sorted(
            n for n, s in registry.manifest_specs().items() if s.task in TASK_OF_BENCH[task]
        )
    models = models or [DEFAULT_MODELS[task]]
    try:
        result = run_accuracy(
            task, dataset, fmt, models, out=out_dir, faces=faces, positive=positive
        )
    except (ValueError, OSError, registry.ModelError) as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    out.print(markdown_table(result["results"]), soft_wrap=True)
    for r in result["results"]:
        if r.get("problems"):
            _warn(f"{r['model']}: {len(r['problems'])} samples not scored (see --json)")
    if out_dir is not None:
        out.print(f"written: {out_dir / 'result.json'}, {out_dir / 'table.md'}")


@bench_app.command("speed")
def bench_speed(
    quick: Annotated[bool, typer.Option("--quick", help="A few seconds: tiny inputs.")] = False,
    images: Annotated[int | None, typer.Option(help="Synthetic JPEGs per stage.")] = None,
    peers: Annotated[
        bool, typer.Option(help="Also time the tools a user would otherwise run.")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="The result object on stdout.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write speed.json and speed.svg/png here.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
) -> None:
    """Throughput per stage and end to end on synthetic JPEGs, peers measured in the same run."""
    from heroes.bench.speed import run_speed, speed_table

    result = run_speed(quick=quick, images=images, peers=peers, out=out_dir, seed=seed)
    if json_out:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    out.print(speed_table(result), soft_wrap=True)


# the investigators' service ---------------------------------------------------------------------

users_app = typer.Typer(
    help="Users of the service (admin, lab, investigator).", no_args_is_help=True
)
app.add_typer(users_app, name="users")
keys_app = typer.Typer(help="API keys of the service: create, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The service's hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

RootOpt = Annotated[
    Path, typer.Option("--root", help="Cases folder: each subfolder is a case.", file_okay=False)
]


def _serve_settings(root: Path, **values: object) -> Any:
    from heroes.serving.settings import ServeSettings

    if not root.is_dir():
        raise _fail(f"no cases folder {root}")
    return ServeSettings(root=root.resolve(), **values)


def _service_db(settings: Any) -> Any:
    from heroes.serving.db import ServiceDB

    try:
        return ServiceDB(settings.service_db_url())
    except Exception as exc:  # an unreachable or unwritable database
        raise _fail(f"cannot open the service database: {exc}") from exc


def _secret(settings: Any) -> str:
    from heroes.serving.settings import SecretMissingError

    try:
        return str(settings.secret())
    except (SecretMissingError, OSError) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def serve(
    root: RootOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    dev: Annotated[
        bool, typer.Option("--dev", help="Development mode: a public secret; never for evidence.")
    ] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run under Ray Serve (a cluster).")] = False,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas.")] = 2,
) -> None:
    """Serve the cases under ROOT: the API (/api/v1, /docs for signed-in users) and the page."""
    import os

    settings = _serve_settings(root, host=host, port=port, dev=dev)
    _secret(settings)
    if settings.dev and not settings.secret_key and settings.secret_key_file is None:
        err.print(
            Text.assemble(
                ("DEVELOPMENT MODE", "bold yellow"),
                ": API keys are hashed with a public secret. "
                "Do not load evidence into this service.",
            )
        )
    # workers and Ray replicas read their settings from the environment
    os.environ["HEROES_SERVE_ROOT"] = str(settings.root)
    os.environ["HEROES_SERVE_DEV"] = "1" if dev else "0"
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"listening on {host}: reachable from other machines; use TLS in front of it")
    if ray:
        from heroes.serving.rayserve import run as run_ray

        run_ray(host=host, port=port, replicas=replicas, settings=settings)
        return
    import uvicorn

    if workers == 1:
        from heroes.serving.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    else:
        uvicorn.run(
            "heroes.serving.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
        )


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="admin, lab or investigator.")],
    root: RootOpt,
    reveal_cap: Annotated[
        int | None, typer.Option(min=0, help="Most clear thumbnails this user may see a day.")
    ] = None,
) -> None:
    """Add a user of the service."""
    from heroes.serving import audit as audit_log
    from heroes.serving.auth import AccountError, add_user

    db = _service_db(_serve_settings(root))
    try:
        row = add_user(db, name, role, daily_reveal_cap=reveal_cap)
        audit_log.append(
            db,
            "user.create",
            user="cli",
            target=row.name,
            source="cli",
            detail={"role": row.role, "daily_reveal_cap": reveal_cap},
        )
    except AccountError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.close()
    out.print(f"user {row.name} ({row.role}) added")


@users_app.command("cap")
def users_cap(
    name: Annotated[str, typer.Argument(help="User name.")],
    root: RootOpt,
    reveals: Annotated[
        int | None, typer.Option(min=0, help="Clear thumbnails a day; omit to lift the cap.")
    ] = None,
) -> None:
    """Set or lift a user's daily reveal cap."""
    from heroes.serving import audit as audit_log
    from heroes.serving.auth import AccountError, set_reveal_cap

    db = _service_db(_serve_settings(root))
    try:
        set_reveal_cap(db, name, reveals)
        audit_log.append(
            db,
            "user.update",
            user="cli",
            target=name,
            source="cli",
            detail={"daily_reveal_cap": reveals},
        )
    except AccountError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.close()
    cap = "no cap" if reveals is None else f"at most {reveals} reveals a day"
    out.print(f"{name}: {cap}")


@users_app.command("list")
def users_list(root: RootOpt) -> None:
    """List the users of the service."""
    from sqlalchemy import select

    from heroes.serving.db import UserRow

    db = _service_db(_serve_settings(root))
    try:
        with db.reader() as s:
            rows = s.execute(select(UserRow).order_by(UserRow.name)).scalars().all()
    finally:
        db.close()
    for u in rows:
        cap = "" if u.daily_reveal_cap is None else f" (reveal cap {u.daily_reveal_cap}/day)"
        out.print(f"{u.name}\t{u.role}{cap}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The user the key belongs to.")],
    root: RootOpt,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Grant a case (repeatable).")
    ] = None,
    dev: Annotated[bool, typer.Option("--dev", help="Hash with the development secret.")] = False,
) -> None:
    """Create an API key for NAME; the key is printed once, as the last line."""
    from heroes.serving import audit as audit_log
    from heroes.serving.auth import AccountError, create_key

    settings = _serve_settings(root, dev=dev)
    pepper = _secret(settings)
    db = _service_db(settings)
    try:
        key_id, key = create_key(db, name, pepper, case or [])
        audit_log.append(
            db,
            "key.create",
            user="cli",
            target=key_id,
            source="cli",
            detail={"user": name, "cases": sorted(set(case or []))},
        )
    except AccountError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.close()
    err.print(f"key {key_id} for {name}; cases: {', '.join(sorted(set(case or []))) or '-'}")
    err.print("the key is shown only now; store it safely")
    print(key)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (hk_<id>_...).")], root: RootOpt
) -> None:
    """Revoke a key at once."""
    from heroes.serving import audit as audit_log
    from heroes.serving.auth import revoke_key

    db = _service_db(_serve_settings(root))
    try:
        if not revoke_key(db, key_id):
            raise _fail(f"no active key {key_id!r}")
        audit_log.append(db, "key.revoke", user="cli", target=key_id, source="cli")
    finally:
        db.close()
    out.print(f"key {key_id} revoked")


@audit_app.command("verify")
def audit_verify(root: RootOpt) -> None:
    """Check the audit chain: exit 0 when it holds, 1 and the first bad row when not."""
    from heroes.serving.audit import verify

    db = _service_db(_serve_settings(root))
    try:
        verdict = verify(db)
    finally:
        db.close()
    if verdict.ok:
        print(f"audit chain holds: {verdict.rows} rows, head {verdict.head}")
        return
    err.print(
        Text.assemble(
            ("audit chain broken", "bold red"),
            f" at row {verdict.bad_id}: {shown(verdict.reason)}",
        )
    )
    if verdict.row is not None:
        print(json.dumps(verdict.row, ensure_ascii=False))
    raise typer.Exit(1)


if __name__ == "__main__":
    main()
