"""Search by an uploaded image: faces or scenes, in one case or across the caller's cases."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from PIL import Image, UnidentifiedImageError

from heroes.search import SearchHit, search_faces_detail, search_scene
from heroes.serving.deps import CaseDep, PrincipalDep, ServiceState, StateDep, audit
from heroes.serving.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["search"])

ImageDep = Annotated[UploadFile, File(description="the query image")]
KDep = Annotated[int, Form(ge=1, le=100)]


def read_upload(upload: UploadFile, state: ServiceState) -> bytes:
    """The uploaded bytes, refused when too large (413), not an image or a pixel bomb (422)."""
    limit = state.settings.max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, f"the image is larger than {limit} bytes")
    if not data:
        raise Problem(422, "the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Problem(422, "not an image (or a pixel bomb Pillow refuses to open)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise Problem(422, f"not a readable image: {exc}") from None
    if width * height > state.settings.max_upload_pixels:
        raise Problem(
            422,
            f"pixel bomb: {width}x{height} = {width * height} pixels > "
            f"{state.settings.max_upload_pixels}",
        )
    return data


def _hits(hits: list[SearchHit]) -> list[dict[str, Any]]:
    return [
        {
            "case": Path(h.case).name,
            "item_id": h.item_id,
            "path": h.path,
            "score": h.score,
            "face_id": h.extra.get("face_id"),
            "bbox": h.bbox,
            "frame_time": h.frame_time,
        }
        for h in hits
    ]


def _faces(folders: list[Path], data: bytes, k: int, state: ServiceState) -> dict[str, Any]:
    query, hits = search_faces_detail(
        folders, data, k=k, settings=state.core, analyzer=state.face_analyzer, refresh=False
    )
    state.metrics.searches.labels("faces").inc()
    return {"query": {"faces": query}, "results": _hits(hits)}


def _audit_search(
    request: Request,
    state: ServiceState,
    who: Any,
    kind: str,
    cases: list[str],
    data: bytes,
    k: int,
    answer: dict[str, Any],
) -> None:
    audit(
        request,
        state,
        who,
        f"search.{kind}",
        case=",".join(cases),
        detail={
            "k": k,
            "query_sha256": hashlib.sha256(data).hexdigest(),
            "results": len(answer["results"]),
        },
    )


@router.post("/cases/{case}/search/faces")
def case_faces(
    case: CaseDep,
    image: ImageDep,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    k: KDep = 10,
) -> dict[str, Any]:
    data = read_upload(image, state)
    answer = _faces([case.folder], data, k, state)
    _audit_search(request, state, who, "faces", [case.name], data, k, answer)
    return answer


@router.post("/cases/{case}/search/scenes")
def case_scenes(
    case: CaseDep,
    image: ImageDep,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    k: KDep = 10,
) -> dict[str, Any]:
    data = read_upload(image, state)
    hits = search_scene(
        [case.folder],
        data,
        k=k,
        settings=state.core,
        analyzer=state.scene_analyzer,
        refresh=False,
    )
    state.metrics.searches.labels("scenes").inc()
    answer = {"query": {"faces": []}, "results": _hits(hits)}
    _audit_search(request, state, who, "scenes", [case.name], data, k, answer)
    return answer


@router.post("/search/faces")
def across_cases(
    image: ImageDep,
    who: PrincipalDep,
    state: StateDep,
    request: Request,
    cases: Annotated[str | None, Query(max_length=4000)] = None,
    k: KDep = 10,
) -> dict[str, Any]:
    """Faces across several cases (``cases=a,b``; default: every case the key may see)."""
    names = [c for c in (cases or "").split(",") if c] or [
        c for c in state.cases.names() if who.may_see(c)
    ]
    if any(not who.may_see(c) for c in names):
        raise Problem(403, "this key has no access to that case")
    folders = [state.cases.folder(c) for c in names]
    data = read_upload(image, state)
    answer = _faces(folders, data, k, state) if folders else {"query": {"faces": []}, "results": []}
    _audit_search(request, state, who, "faces", names, data, k, answer)
    return answer
