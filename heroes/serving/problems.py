"""Errors as RFC 9457 problem details (``application/problem+json``: type, title, status, detail).

The core raises its own exceptions; this module alone turns them into HTTP answers.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from heroes.search import SearchError
from heroes.serving.auth import AccountError
from heroes.serving.cases import NoSuchCaseError
from heroes.serving.exposure import RevealCapError
from heroes.serving.jobs import JobBusyError, JobError
from heroes.serving.thumbs import NoPictureError

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int, detail: Any, *, title: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    phrase = HTTPStatus(status).phrase
    slug = phrase.lower().replace(" ", "-").replace("'", "")
    body = {
        "type": f"https://heroes.invalid/problems/{slug}",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class Problem(Exception):
    """Raised by routes and dependencies for an answer other than 2xx."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_r: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status, exc.detail, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem(422, errors, title="Invalid request")

    @app.exception_handler(NoSuchCaseError)
    async def _no_case(_r: Request, exc: NoSuchCaseError) -> JSONResponse:
        return problem(404, f"no case named {exc.args[0]!r}")

    @app.exception_handler(NoPictureError)
    async def _no_picture(_r: Request, exc: NoPictureError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(SearchError)
    async def _search(_r: Request, exc: SearchError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(RevealCapError)
    async def _cap(_r: Request, exc: RevealCapError) -> JSONResponse:
        return problem(429, str(exc), title="Daily reveal cap reached")

    @app.exception_handler(JobBusyError)
    async def _busy(_r: Request, exc: JobBusyError) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(JobError)
    async def _job(_r: Request, exc: JobError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(AccountError)
    async def _account(_r: Request, exc: AccountError) -> JSONResponse:
        return problem(422, str(exc))
