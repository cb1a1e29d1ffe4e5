"""Cases, the review queue, items, thumbnails, labels, similar items and persons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select

from heroes.pipeline.decode import DecodeError
from heroes.pipeline.labels import Label, apply_label, current_labels
from heroes.pipeline.report import record
from heroes.search import SearchError, person_faces, persons, search_pdq, similar_scenes
from heroes.serving import thumbs
from heroes.serving.deps import CaseDep, CaseRef, PrincipalDep, StateDep, audit
from heroes.serving.exposure import count_reveal
from heroes.serving.problems import Problem
from heroes.serving.schemas import LabelCreate
from heroes.store.schema import ItemRow

router = APIRouter(prefix="/api/v1", tags=["cases"])

#: statuses that stay in the review queue (known-good and deliberately skipped files do not)
REVIEW = ("ok", "duplicate", "error")


def _item(case: CaseRef, item_id: int) -> ItemRow:
    with case.store.session() as s:
        row = s.get(ItemRow, item_id)
    if row is None:
        raise Problem(404, f"no item {item_id} in case {case.name!r}")
    return row


def _record(case: CaseRef, row: ItemRow) -> dict[str, Any]:
    return record(row, current_labels(case.store, [row.id]).get(row.id))


@router.get("/cases")
def list_cases(who: PrincipalDep, state: StateDep) -> list[dict[str, Any]]:
    out = []
    for name in state.cases.names():
        if not who.may_see(name):
            continue
        store = state.cases.store(name)
        labelled = set(current_labels(store))
        with store.session() as s:
            items = s.execute(select(func.count(ItemRow.id))).scalar_one()
            review = s.execute(
                select(func.count(ItemRow.id)).where(ItemRow.status.in_(REVIEW))
            ).scalar_one()
            done = 0
            ids = sorted(labelled)
            for i in range(0, len(ids), 500):
                done += s.execute(
                    select(func.count(ItemRow.id)).where(
                        ItemRow.status.in_(REVIEW), ItemRow.id.in_(ids[i : i + 500])
                    )
                ).scalar_one()
        out.append({"case": name, "items": int(items), "queued": int(review - done)})
    return out


@router.get("/cases/{case}/queue")
def queue(
    case: CaseDep,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(max_length=16)] = None,
    min_priority: Annotated[float | None, Query(ge=0, le=1)] = None,
) -> dict[str, Any]:
    limit = min(limit, state.settings.max_page)
    where = []
    if status:
        where.append(ItemRow.status == status)
    if min_priority is not None:
        where.append(ItemRow.priority >= min_priority)
    with case.store.session() as s:
        total = s.execute(select(func.count(ItemRow.id)).where(*where)).scalar_one()
        rows = (
            s.execute(
                select(ItemRow)
                .where(*where)
                .order_by(ItemRow.rank.is_(None), ItemRow.rank, ItemRow.id)
                .offset(offset)
                .limit(limit)
            )
            .scalars()
            .all()
        )
    labels = current_labels(case.store, [r.id for r in rows]) if rows else {}
    audit(
        request,
        state,
        who,
        "queue.view",
        case=case.name,
        detail={
            "offset": offset,
            "limit": limit,
            "status": status,
            "min_priority": min_priority,
            "returned": len(rows),
        },
    )
    return {
        "total": int(total),
        "offset": offset,
        "limit": limit,
        "items": [record(r, labels.get(r.id)) for r in rows],
    }


@router.get("/cases/{case}/items/{item_id}")
def item(
    case: CaseDep, item_id: int, who: PrincipalDep, state: StateDep, request: Request
) -> dict[str, Any]:
    row = _item(case, item_id)
    audit(request, state, who, "item.view", case=case.name, target=str(item_id))
    return _record(case, row)


@router.get(
    "/cases/{case}/items/{item_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}},
)
def thumbnail(
    case: CaseDep,
    item_id: int,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    reveal: bool = False,
) -> Response:
    """A small WebP of the item: blurred unless ``reveal=true`` (audited, counted, capped)."""
    row = _item(case, item_id)
    cfg = state.settings
    grey = bool(who.prefs.get("greyscale"))
    headers = {"Cache-Control": "no-store"}
    if not reveal:
        cached = thumbs.cache_path(case.folder, row.id, grey, cfg.thumb_size)
        if cached.is_file():
            return Response(cached.read_bytes(), media_type="image/webp", headers=headers)
    at = thumbs.priority_frame(row.video, row.nudity, row.faces)
    rgb = thumbs.picture(
        row.evidence,
        row.path,
        row.media_type,
        time=at,
        size=cfg.thumb_size,
        limits=state.core.limits,
        evidence_roots=cfg.evidence_roots,
    )
    if not reveal:
        data = thumbs.render(rgb, blur=True, greyscale=grey, radius=cfg.blur_radius)
        thumbs.save_blurred(cached, data)
        return Response(data, media_type="image/webp", headers=headers)
    cap = who.prefs.get("daily_reveal_cap")
    count = count_reveal(state.db, who.user_id, cap if isinstance(cap, int) else None)
    state.metrics.reveals.inc()
    audit(
        request,
        state,
        who,
        "thumbnail.reveal",
        case=case.name,
        target=str(item_id),
        detail={"reveals_today": count, "frame_time": at if row.media_type == "video" else None},
    )
    data = thumbs.render(rgb, blur=False, greyscale=grey, radius=cfg.blur_radius)
    return Response(data, media_type="image/webp", headers=headers)


@router.post("/cases/{case}/items/{item_id}/label")
def label(
    case: CaseDep,
    item_id: int,
    body: LabelCreate,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
) -> dict[str, Any]:
    """Label the item and its exact copies; the answer is the stored label (and the items it
    now covers). Only people categorise: no model ever calls this."""
    _item(case, item_id)
    lab = Label(
        category=body.category,
        victim_identified=body.victim_identified,
        offender_identified=body.offender_identified,
        series=body.series,
        note=body.note,
    )
    ids = apply_label(case.store, [item_id], lab, by=who.user)
    audit(
        request,
        state,
        who,
        "label",
        case=case.name,
        target=str(item_id),
        detail={**body.model_dump(), "items": ids},
    )
    stored = current_labels(case.store, [item_id])[item_id]
    return {**stored, "items": ids}


@router.get("/cases/{case}/items/{item_id}/similar")
def similar(
    case: CaseDep,
    item_id: int,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    row = _item(case, item_id)
    near = []
    try:
        near = search_pdq([case.folder], similar_to=item_id, settings=state.core, refresh=False)
    except SearchError:
        pass
    if row.media_type == "image" and row.pdq:
        # the picture itself also finds its mirrored and rotated copies (PDQ's 8 variants)
        try:
            data = thumbs.evidence_bytes(
                row.evidence, row.path, state.core.limits, state.settings.evidence_roots
            )
            near += search_pdq([case.folder], image=data, settings=state.core, refresh=False)
        except (thumbs.NoPictureError, SearchError, DecodeError):
            pass
    best: dict[int, Any] = {}
    for h in near:
        if h.item_id == item_id:
            continue
        if h.item_id not in best or h.distance < best[h.item_id].distance:
            best[h.item_id] = h
    pdq = [
        {"item_id": h.item_id, "path": h.path, "distance": int(h.distance)}
        for h in sorted(best.values(), key=lambda h: (h.distance, h.item_id))[:k]
    ]
    scene = [
        {"item_id": h.item_id, "path": h.path, "score": h.score}
        for h in similar_scenes(case.folder, item_id, k=k, settings=state.core, refresh=False)
    ]
    audit(
        request,
        state,
        who,
        "search.similar",
        case=case.name,
        target=str(item_id),
        detail={"pdq": len(pdq), "scene": len(scene)},
    )
    return {"pdq": pdq, "scene": scene}


@router.get("/cases/{case}/persons")
def list_persons(
    case: CaseDep, who: PrincipalDep, state: StateDep, request: Request
) -> list[dict[str, Any]]:
    found = persons(case.folder, settings=state.core)
    audit(request, state, who, "persons.view", case=case.name, detail={"persons": len(found)})
    return [{"person_id": p.identity, "faces": p.faces, "items": p.items} for p in found]


@router.get("/cases/{case}/persons/{person_id}")
def person(
    case: CaseDep, person_id: int, who: PrincipalDep, state: StateDep, request: Request
) -> dict[str, Any]:
    faces = person_faces(case.folder, person_id, settings=state.core)
    if faces is None:
        raise Problem(404, f"no person {person_id} in case {case.name!r}")
    audit(request, state, who, "person.view", case=case.name, target=str(person_id))
    return {"person_id": person_id, "faces": faces}
