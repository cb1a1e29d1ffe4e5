"""The open routes (health, the page and its static files) and the signed-in ones about the
service itself (metrics, API docs)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from heroes.serving.deps import AdminDep, PrincipalDep, StateDep
from heroes.serving.problems import Problem

router = APIRouter(tags=["system"])

STATIC_DIR = files("heroes.serving") / "static"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise Problem(404, "the web page is not installed")
    return FileResponse(str(page), media_type="text/html")


@router.get("/metrics", include_in_schema=False)
def metrics(who: AdminDep, state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/openapi.json", include_in_schema=False)
def openapi(who: PrincipalDep, request: Request) -> JSONResponse:
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get("/docs", include_in_schema=False)
def docs(who: PrincipalDep) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="heroes API")
