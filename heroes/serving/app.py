"""The FastAPI app factory.

Settings are injected (``create_app(ServeSettings(...))``) or read from ``HEROES_SERVE_*``
(``app_from_env``, the factory that ``uvicorn --factory`` and several workers use). The lifespan
opens the service database and makes the model holders once per process; every blocking route is
a plain function, so FastAPI runs it in its thread pool, off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heroes.config import MiB, Settings
from heroes.search import face_analyzer, scene_analyzer
from heroes.serving import audit, problems
from heroes.serving.cases import Cases
from heroes.serving.db import ServiceDB
from heroes.serving.deps import LockedAnalyzer, ServiceState
from heroes.serving.jobs import Jobs
from heroes.serving.metrics import Metrics
from heroes.serving.routes import account, cases, jobs, search, system
from heroes.serving.settings import DEV_SECRET, ServeSettings

log = logging.getLogger("heroes.serving")

#: what the page keeps (no inline script or style; thumbnails through blob: URLs)
CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class BodyLimit:
    """Refuse a request body past the upload limit before anything parses it (413); a body sent
    without a length is counted as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await problems.problem(413, f"the request body is larger than {self.limit} bytes")(
                scope, receive, send
            )
            return
        seen = 0
        too_large = replaced = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise _TooLarge()
            return message

        async def answer() -> None:
            nonlocal replaced
            if not replaced:
                replaced = True
                text = f"the request body is larger than {self.limit} bytes"
                await problems.problem(413, text)(scope, receive, send)

        async def guarded(message: Message) -> None:
            # whatever the app makes of a body cut short (a parse error), the answer is 413
            if too_large:
                await answer()
            else:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            await answer()


class _TooLarge(Exception):
    pass


def _headers_middleware() -> Callable[
    [Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]
]:
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path != "/docs":
            response.headers.setdefault("Content-Security-Policy", CSP)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return headers


def build_state(settings: ServeSettings, core: Settings | None = None) -> ServiceState:
    """Open what one process serves with (raises when no secret is configured)."""
    pepper = settings.secret()
    if settings.root is None:
        raise ValueError("no cases folder: give --root or HEROES_SERVE_ROOT")
    core = core or Settings()
    db = ServiceDB(settings.service_db_url())
    audit.ensure_head(db)
    case_folders = Cases(settings.root)
    models = threading.Lock()
    return ServiceState(
        settings=settings,
        core=core,
        pepper=pepper,
        db=db,
        cases=case_folders,
        jobs=Jobs(db, case_folders, lambda: core, settings.evidence_roots),
        metrics=Metrics(),
        face_analyzer=LockedAnalyzer(face_analyzer(core), models),
        scene_analyzer=LockedAnalyzer(scene_analyzer(core), models),
    )


def create_app(settings: ServeSettings | None = None, core: Settings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    settings.secret()  # refuse to build an app without a secret (unless in dev mode)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, core)
        if state.pepper == DEV_SECRET:
            log.warning("DEVELOPMENT MODE: keys are hashed with a public secret; no evidence here")
        if settings.preload_models:
            preload(state)
        app.state.service = state
        try:
            yield
        finally:
            state.cases.close()
            state.db.close()

    app = FastAPI(
        title="heroes",
        summary="Investigators' service over heroes cases",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    problems.install(app)

    @app.middleware("http")
    async def _metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        state: ServiceState | None = getattr(request.app.state, "service", None)
        if state is None:
            return await call_next(request)
        return await state.metrics.middleware(request, call_next)

    app.middleware("http")(_headers_middleware())
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 1 * MiB)
    for r in (system.router, account.router, cases.router, search.router, jobs.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(packages=[("heroes.serving", "static")]), name="static")
    return app


def preload(state: ServiceState) -> None:
    """Load the query models now rather than on the first search."""
    for analyzer in (state.face_analyzer, state.scene_analyzer):
        if isinstance(analyzer, LockedAnalyzer):
            analyzer.load()


def app_from_env() -> FastAPI:
    """The app with settings from the environment (``uvicorn --factory``, several workers)."""
    return create_app()
