"""Search one case or many: by face, by scene, by PDQ hash; and the identities of a case.

A query image is embedded the way the pass embeds evidence (decoded at the same working size, the
same detector, landmarks, face and scene models), the case indexes are searched and merged by
score, and every hit is resolved to its item (path, frame time, box).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from heroes.config import Settings, get_settings
from heroes.index import (
    DEFAULT_MIN_SIMILARITY,
    BinaryIndex,
    FloatIndex,
    Hit,
    Identities,
    cluster_faces,
    hashes_from_hex,
    search_many,
)
from heroes.pipeline.decode import load_rgb
from heroes.pipeline.discover import Unreadable, open_item
from heroes.pipeline.indexing import case_name, index_root, update_indexes
from heroes.pipeline.infer import Analyzer, InferOptions
from heroes.store.db import CaseStore
from heroes.store.lock import CaseBusyError, case_lock
from heroes.store.schema import ItemRow, VectorRow
from heroes.vectors import decode_vectors

log = logging.getLogger(__name__)

IDENTITIES_FILE = "identities.json"


class SearchError(ValueError):
    """A query that cannot be answered (no face in the query image, no such index, bad hash)."""


@dataclass
class SearchHit:
    rank: int
    score: float
    distance: float
    case: str
    item_id: int
    path: str | None
    frame_time: float | None
    bbox: list[float] | None
    query_face: int | None = None
    query_bbox: list[float] | None = None
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


@contextmanager
def _open_cases(
    cases: Sequence[Path], settings: Settings, refresh: bool = True
) -> Iterator[dict[str, CaseStore]]:
    """The cases' stores, by case name, with their indexes brought up to date (a no-op when the
    last triage already did it, but one that reads the vectors table), closed afterwards.

    A long-running service passes ``refresh=False``: every triage updates the indexes when it
    finishes, and a saved index is read again by its manifest's time."""
    stores = {case_name(c): CaseStore(Path(c), settings.db_url, create=False) for c in cases}
    try:
        for c in cases if refresh else ():
            try:
                with case_lock(Path(c)):
                    update_indexes(
                        stores[case_name(c)], Path(c), min_quality=settings.pdq.min_quality
                    )
            except CaseBusyError:
                # a triage is writing the case and updates its indexes when it ends: search what
                # the indexes hold now (their files are replaced atomically)
                log.info("case %s is being triaged: searching its indexes as they are", c)
        yield stores
    finally:
        for store in stores.values():
            store.close()


def _resolve(
    hits: list[tuple[Hit, int | None, list[float] | None]], stores: dict[str, CaseStore], kind: str
) -> list[SearchHit]:
    by_case: dict[str, set[int]] = {}
    for h, _qf, _qb in hits:
        by_case.setdefault(h.meta.case, set()).add(h.meta.item_id)
    paths: dict[tuple[str, int], str] = {}
    for case, ids in by_case.items():
        store = stores.get(case)
        if store is None:
            continue
        with store.session() as s:
            for item_id, path in s.execute(
                select(ItemRow.id, ItemRow.path).where(ItemRow.id.in_(sorted(ids)))
            ):
                paths[(case, item_id)] = path
    out = []
    for rank, (h, qf, qb) in enumerate(hits, start=1):
        m = h.meta
        out.append(
            SearchHit(
                rank=rank,
                score=round(float(h.score), 6),
                distance=round(float(h.distance), 6),
                case=m.case,
                item_id=int(m.item_id),
                path=paths.get((m.case, m.item_id)),
                frame_time=m.frame_time,
                bbox=list(m.bbox) if m.bbox else None,
                query_face=qf,
                query_bbox=qb,
                kind=kind,
                extra={"face_id": m.ref} if m.ref else {},
            )
        )
    return out


_LOADED: dict[tuple[str, int], Any] = {}
_LOADED_LOCK = threading.Lock()


def _load_index(cls: type[FloatIndex] | type[BinaryIndex], path: Path) -> Any:
    """An index read once per process and again only after it was saved anew (a long-running
    service keeps its indexes; a triage that adds vectors rewrites the manifest)."""
    manifest = path / "manifest.json"
    try:
        key = (str(path), manifest.stat().st_mtime_ns)
    except FileNotFoundError:
        return cls.load(path)
    with _LOADED_LOCK:
        ix = _LOADED.get(key)
        if ix is None:
            for old in [k for k in _LOADED if k[0] == key[0]]:
                del _LOADED[old]
            ix = _LOADED[key] = cls.load(path)
        return ix


def _load_float(cases: Sequence[Path], key: str) -> list[FloatIndex]:
    out = []
    for c in cases:
        p = index_root(Path(c)) / key
        if p.exists():
            out.append(_load_index(FloatIndex, p))
    return out


def model_family(name: str) -> list[str]:
    """``name`` and the models that stand for the same one (its FP32 model, its INT8 copies):
    their vectors agree by construction, so one's query searches another's index."""
    from heroes.models import registry

    try:
        spec = registry.get_spec(name)
    except (ValueError, registry.ModelError):
        return [name]
    base = spec.fp32_model or name
    family = [name, base, *(v.name for v in registry.variants_of(base))]
    return list(dict.fromkeys(family))


def case_model(case: Path, kind: str, wanted: str, store: CaseStore | None = None) -> str:
    """The model whose ``kind`` vectors this case holds, for a search asked with ``wanted``:
    ``wanted`` or a model of its family (the INT8 copy the pass ran on CPU); else, when the case
    holds vectors of one other model only (a case made with an earlier default), that one; else
    ``wanted``. Read from the case's index folder, or its vectors when it has no index yet."""
    root = index_root(Path(case))
    held = (
        sorted(p.name[len(kind) + 1 :] for p in root.glob(f"{kind}-*") if p.is_dir())
        if root.is_dir()
        else []
    )
    if not held and store is not None:
        with store.session() as s:
            held = sorted(
                str(m)
                for (m,) in s.execute(
                    select(VectorRow.model).where(VectorRow.kind == kind).distinct()
                )
                if m
            )
    for name in model_family(wanted):
        if name in held:
            return name
    return held[0] if len(held) == 1 else wanted


def _by_case_model(cases: Sequence[Path], kind: str, wanted: str) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for c in cases:
        groups.setdefault(case_model(Path(c), kind, wanted), []).append(Path(c))
    return groups


def _query_image(image: Path | bytes, settings: Settings) -> np.ndarray:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    rgb, _info = load_rgb(
        data, working_size=settings.working_size, max_pixels=settings.limits.max_pixels
    )
    return rgb


def _pdq_query_image(image: Path | bytes, settings: Settings) -> np.ndarray:
    """The pixels the pass hashes with PDQ (alpha dropped, as the reference hashers do)."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    rgb, info = load_rgb(
        data, working_size=settings.working_size, max_pixels=settings.limits.max_pixels
    )
    return rgb if info.pdq_pixels is None else info.pdq_pixels


def search_faces(
    cases: Sequence[Path],
    image: Path | bytes,
    *,
    k: int = 10,
    settings: Settings | None = None,
    all_faces: bool = False,
    analyzer: Analyzer | None = None,
) -> list[SearchHit]:
    """The query image's largest face searched in the cases' face indexes: ``k`` hits.

    A query photo often shows a bystander in the background; searching every face would return
    ``k`` rows for each, mixed by score. With ``all_faces`` every face is searched, ``k`` hits
    each, merged by score. Each hit names the query face it answers (``query_face``, its index
    among the faces found, and ``query_bbox``)."""
    return search_faces_detail(
        cases, image, k=k, settings=settings, all_faces=all_faces, analyzer=analyzer
    )[1]


def face_analyzer(settings: Settings) -> Analyzer:
    """The models a face query runs (detector, landmarks, face embedding: the variant the pass
    runs on this device), loaded on first use."""
    from heroes.models import registry

    face = settings.face_model
    if face in registry.manifest_specs():
        face = registry.preferred_variant(face, settings.device, allow_int8=settings.int8)
    return Analyzer(
        InferOptions.from_settings(
            settings,
            threads=settings.ort_threads,
            detector=settings.detector_model,
            landmarks=settings.landmarks_model,
            age=None,
            face_embed=face,
            scene_embed=None,
        )
    )


def scene_analyzer(settings: Settings) -> Analyzer:
    """The model a scene query runs, loaded on first use."""
    return Analyzer(
        InferOptions.from_settings(
            settings,
            threads=settings.ort_threads,
            detector=None,
            landmarks=None,
            age=None,
            face_embed=None,
            scene_embed=settings.scene_model,
        )
    )


def search_faces_detail(
    cases: Sequence[Path],
    image: Path | bytes,
    *,
    k: int = 10,
    settings: Settings | None = None,
    all_faces: bool = False,
    analyzer: Analyzer | None = None,
    refresh: bool = True,
) -> tuple[list[dict[str, Any]], list[SearchHit]]:
    """:func:`search_faces` plus the faces found in the query (``bbox``, detector ``score``)."""
    settings = settings or get_settings()
    with _open_cases(cases, settings, refresh) as stores:
        rgb = _query_image(image, settings)
        query: list[dict[str, Any]] | None = None
        merged: list[tuple[Hit, int | None, list[float] | None]] = []
        chosen: list[int] = []
        # each case is searched with the model its faces were embedded with (the query is
        # embedded again only for a case made with a model of another family)
        family = model_family(settings.face_model)
        for model, group in _by_case_model(cases, "face", settings.face_model).items():
            same = model in family
            own = (
                analyzer
                if same and analyzer is not None
                else face_analyzer(settings.model_copy(update={"face_model": model}))
            )
            (res,) = own.analyze([rgb], [None])
            vecs = [v for v in res.vectors if v["kind"] == "face"]
            if not vecs:
                raise SearchError("no face found in the query image")
            if query is None:
                query = [_query_face(v, res.faces) for v in vecs]
            indexes = _load_float(group, f"face-{model}")
            if not indexes:
                continue
            chosen = list(range(len(vecs))) if all_faces else [_largest_face(vecs)]
            q = np.stack([vecs[i]["vector"] for i in chosen]).astype(np.float32)
            for qi, hits in zip(chosen, search_many(indexes, q, k), strict=True):
                merged += [(h, qi, list(vecs[qi]["bbox"])) for h in hits]
        merged.sort(key=lambda t: -t[0].score)
        return query or [], _resolve(merged[: k * max(1, len(chosen))], stores, "face")


def _largest_face(vecs: Sequence[dict[str, Any]]) -> int:
    """Index of the face with the largest box (the first of equals): the subject of a photo."""

    def area(v: dict[str, Any]) -> float:
        x1, y1, x2, y2 = v["bbox"]
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    return max(range(len(vecs)), key=lambda i: (area(vecs[i]), -i))


def _query_face(vector: dict[str, Any], faces: list[dict[str, Any]]) -> dict[str, Any]:
    bbox = [round(float(x), 2) for x in vector["bbox"]]
    score = None
    for f in faces:
        if [round(float(x), 2) for x in f.get("bbox", [])] == bbox:
            score = f.get("score")
            break
    return {"bbox": bbox, "score": None if score is None else round(float(score), 4)}


def search_scene(
    cases: Sequence[Path],
    image: Path | bytes,
    *,
    k: int = 10,
    settings: Settings | None = None,
    recheck: bool = False,
    analyzer: Analyzer | None = None,
    refresh: bool = True,
) -> list[SearchHit]:
    """The query image's scene embedding searched in the cases' scene indexes.

    With ``recheck`` (the SIFT-VLAD models only), the hits whose file is on disk are re-ordered
    by geometric agreement (RANSAC inliers) with the query."""
    settings = settings or get_settings()
    with _open_cases(cases, settings, refresh) as stores:
        rgb = _query_image(image, settings)
        found: list[Hit] = []
        sift = False
        # each case is searched with the model its scenes were embedded with (a case made with
        # an earlier default model keeps being searchable)
        for model, group in _by_case_model(cases, "scene", settings.scene_model).items():
            indexes = _load_float(group, f"scene-{model}")
            if not indexes:
                continue
            own = (
                analyzer
                if model == settings.scene_model and analyzer is not None
                else (scene_analyzer(settings.model_copy(update={"scene_model": model})))
            )
            (res,) = own.analyze([rgb], [None])
            if not res.vectors:
                continue
            q = np.asarray(res.vectors[0]["vector"], dtype=np.float32)[None]
            if not np.any(q):
                raise SearchError(
                    "the query image has no local features to compare (flat or empty)"
                )
            found += search_many(indexes, q, k)[0]
            sift = sift or _is_sift_vlad(model)
        found.sort(key=lambda h: -h.score)
        hits = _resolve([(h, None, None) for h in found[:k]], stores, "scene")
        if recheck and sift:
            hits = _recheck(rgb, hits, stores, settings)
        return hits


def _is_sift_vlad(model: str) -> bool:
    """Whether a scene model is a SIFT-VLAD codebook (``scene-vlad``, ``scene-vlad-fast``)."""
    from heroes.models import registry

    return registry.get_spec(model).format == "npz"


def _recheck(
    query: np.ndarray, hits: list[SearchHit], stores: dict[str, CaseStore], settings: Settings
) -> list[SearchHit]:
    from heroes.models.scene_embed import SceneEmbedder, geometric_inliers

    emb = SceneEmbedder()
    qk, qd = emb.features(query)
    for h in hits:
        h.extra["inliers"] = None
        store = stores.get(h.case)
        if store is None or h.path is None or h.frame_time is not None:
            continue
        with store.session() as s:
            ev = s.execute(select(ItemRow.evidence).where(ItemRow.id == h.item_id)).scalar()
        if not ev:
            continue
        try:
            # read again the walk's way: read-only, no symlink, no access-time change
            with open_item(Path(ev), h.path, settings.limits) as f:
                data = f.read(settings.limits.max_member_bytes + 1)
            rgb = _query_image(data, settings)
        except (OSError, ValueError, Unreadable):
            continue
        ck, cd = emb.features(rgb)
        h.extra["inliers"] = int(geometric_inliers(qk, qd, ck, cd))
    hits.sort(key=lambda h: (-(h.extra.get("inliers") or -1), -h.score))
    for r, h in enumerate(hits, start=1):
        h.rank = r
    return hits


def search_pdq(
    cases: Sequence[Path],
    *,
    pdq: str | None = None,
    similar_to: int | None = None,
    image: Path | bytes | None = None,
    max_distance: int = 31,
    settings: Settings | None = None,
    refresh: bool = True,
) -> list[SearchHit]:
    """Images and video frames within ``max_distance`` of a PDQ hash, of an item of the first
    case (``similar_to``), or of an image (all 8 rotations and mirrors of it)."""
    settings = settings or get_settings()
    with _open_cases(cases, settings, refresh) as stores:
        variants: list[np.ndarray] = []
        if pdq is not None:
            try:
                variants = [hashes_from_hex([pdq.strip().lower()])]
            except ValueError as exc:
                raise SearchError(f"not a PDQ hash: {pdq!r} ({exc})") from exc
        elif similar_to is not None:
            store = stores[case_name(cases[0])]
            with store.session() as s:
                row = s.execute(
                    select(ItemRow.pdq, ItemRow.video, ItemRow.pdq_dihedral).where(
                        ItemRow.id == similar_to
                    )
                ).first()
            if row is None:
                raise SearchError(f"no item {similar_to} in {cases[0]}")
            hexes = (
                # an image's rotations and mirrors too, as the pass hashed them
                (row.pdq_dihedral or [row.pdq])
                if row.pdq
                else [kf["pdq"] for kf in (row.video or {}).get("keyframes", []) if kf.get("pdq")]
            )
            if not hexes:
                raise SearchError(f"item {similar_to} has no PDQ hash")
            variants = [hashes_from_hex(hexes)]
        elif image is not None:
            import pdqhash

            rgb = _pdq_query_image(image, settings)
            dihedral, _q = pdqhash.compute_dihedral(rgb)
            variants = [np.packbits(np.asarray(dihedral, dtype=np.uint8).reshape(8, 256), axis=1)]
        else:
            raise SearchError("give a PDQ hash, an item id or an image")
        indexes = []
        for c in cases:
            p = index_root(Path(c)) / "pdq"
            if p.exists():
                indexes.append(_load_index(BinaryIndex, p))
        if not indexes:
            return []
        per_index = [ix.range_search_variants(variants, max_distance)[0] for ix in indexes]
        hits = sorted(
            (h for hs in per_index for h in hs),
            key=lambda h: (h.distance, h.meta.case, h.meta.item_id),
        )
        found = [(h, None, None) for h in hits]
        return _resolve(found, stores, "pdq")


def similar_scenes(
    case: Path,
    item_id: int,
    *,
    k: int = 10,
    settings: Settings | None = None,
    refresh: bool = True,
) -> list[SearchHit]:
    """Items whose scene looks like item ``item_id``'s (every keyframe of a video asks), best
    score per item, the item itself left out."""
    settings = settings or get_settings()
    with _open_cases([case], settings, refresh) as stores:
        store = stores[case_name(case)]
        model = case_model(Path(case), "scene", settings.scene_model, store)
        with store.session() as s:
            rows = s.execute(
                select(VectorRow.dim, VectorRow.vector).where(
                    VectorRow.item_id == item_id,
                    VectorRow.kind == "scene",
                    VectorRow.model == model,
                )
            ).all()
        indexes = _load_float([case], f"scene-{model}")
        if not rows or not indexes:
            return []
        q = decode_vectors([r.vector for r in rows], int(rows[0].dim))
        best: dict[int, Hit] = {}
        for hits in search_many(indexes, np.ascontiguousarray(q), k + 1):
            for h in hits:
                mid = int(h.meta.item_id)
                if mid != item_id and (mid not in best or h.score > best[mid].score):
                    best[mid] = h
        ranked = sorted(best.values(), key=lambda h: (-h.score, h.meta.item_id))[:k]
        return _resolve([(h, None, None) for h in ranked], stores, "scene")


# identities -----------------------------------------------------------------------------------


@dataclass
class Person:
    identity: int
    faces: int
    files: int
    videos: int
    examples: list[str]
    items: list[int] = field(default_factory=list)


def persons(
    case: Path,
    *,
    min_faces: int = 3,
    min_similarity: float | None = None,
    recluster: bool = False,
    merge: tuple[int, int] | None = None,
    split: tuple[int, Sequence[str]] | None = None,
    settings: Settings | None = None,
) -> list[Person]:
    """The case's identities, with ids kept across runs.

    Faces are clustered again only when the case has faces the last clustering did not see, when
    the settings changed, or when asked (``recluster``): so manual ``merge``/``split`` edits stay
    until new evidence arrives (and even then steer which ids the new clusters keep)."""
    settings = settings or get_settings()
    store = CaseStore(Path(case), settings.db_url, create=False)
    try:
        model = case_model(Path(case), "face", settings.face_model, store)
        with store.session() as s:
            rows = s.execute(
                select(VectorRow.ref, VectorRow.item_id, VectorRow.dim, VectorRow.vector)
                .where(VectorRow.kind == "face", VectorRow.model == model)
                .order_by(VectorRow.id)
            ).all()
            media = dict(s.execute(select(ItemRow.id, ItemRow.media_type)).all())
            paths = dict(s.execute(select(ItemRow.id, ItemRow.path)).all())
            unconfirmed = _unconfirmed_faces(s)
        # a face the human-face check did not confirm (an animal, a pattern) makes no identity
        rows = [r for r in rows if r.ref not in unconfirmed]
        root = index_root(Path(case))
        root.mkdir(parents=True, exist_ok=True)
        path = root / IDENTITIES_FILE
        previous = Identities.load(path) if path.is_file() else None
        # the similarity is always recorded, so a changed default clusters again (ids are kept)
        wanted = {
            "min_faces": min_faces,
            "min_similarity": DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity,
        }
        seen = previous.params.get("faces_seen") if previous else None
        stale = (
            previous is None
            or recluster
            or seen != len(rows)
            or any(previous.params.get(k) != v for k, v in wanted.items())
        )
        ident = previous
        if stale and rows:
            vecs = decode_vectors([r.vector for r in rows], int(rows[0].dim))
            ident = cluster_faces(
                vecs,
                [r.ref for r in rows],
                items=[int(r.item_id) for r in rows],
                previous=previous,
                **wanted,  # type: ignore[arg-type]
            )
            ident.params["faces_seen"] = len(rows)
        if ident is None:
            return []
        if merge is not None:
            ident.merge(*merge)
        if split is not None:
            ident.split(split[0], list(split[1]))
        ident.save(path)
        return [p for p in describe(ident, media, paths) if p.faces >= 1]
    finally:
        store.close()


def _unconfirmed_faces(session: Any) -> set[str]:
    """``face_id`` of every face whose record says ``confirmed: false``."""
    out: set[str] = set()
    for item_id, faces in session.execute(select(ItemRow.id, ItemRow.faces)).all():
        for k, face in enumerate(faces or []):
            if isinstance(face, dict) and face.get("confirmed") is False:
                out.add(str(face.get("face_id") or f"{item_id}-{k}"))
    return out


def describe(ident: Identities, media: dict[int, str], paths: dict[int, str]) -> list[Person]:
    out = []
    for identity in ident.ids():
        refs = ident.refs(identity)
        items = sorted({int(ident.items.get(r, r.split("-")[0])) for r in refs})
        kinds = Counter(media.get(i) for i in items)
        out.append(
            Person(
                identity,
                len(refs),
                len(items),
                kinds.get("video", 0),
                [paths.get(i, "?") for i in items[:3]],
                items,
            )
        )
    out.sort(key=lambda p: (-p.faces, p.identity))
    return out


def person_faces(
    case: Path, identity: int, *, settings: Settings | None = None
) -> list[dict[str, Any]] | None:
    """Every face of one identity (``face_id``, ``item_id``, ``path``, ``bbox``, ``frame_time``),
    or None when the case has no such identity. Clusters the case first if it never was."""
    settings = settings or get_settings()
    path = index_root(Path(case)) / IDENTITIES_FILE
    if not path.is_file():
        persons(case, settings=settings)
    if not path.is_file():
        return None
    ident = Identities.load(path)
    if identity not in ident.ids():
        return None
    refs = ident.refs(identity)
    store = CaseStore(Path(case), settings.db_url, create=False)
    try:
        model = case_model(Path(case), "face", settings.face_model, store)
        with store.session() as s:
            rows = s.execute(
                select(VectorRow.ref, VectorRow.item_id, VectorRow.bbox, VectorRow.frame_time)
                .where(
                    VectorRow.kind == "face",
                    VectorRow.model == model,
                    VectorRow.ref.in_(refs),
                )
                .order_by(VectorRow.item_id, VectorRow.id)
            ).all()
            ids = sorted({int(r.item_id) for r in rows})
            paths = dict(
                s.execute(select(ItemRow.id, ItemRow.path).where(ItemRow.id.in_(ids))).all()
            )
    finally:
        store.close()
    return [
        {
            "face_id": r.ref,
            "item_id": int(r.item_id),
            "path": paths.get(int(r.item_id)),
            "bbox": list(r.bbox) if r.bbox else None,
            "frame_time": r.frame_time,
        }
        for r in rows
    ]
