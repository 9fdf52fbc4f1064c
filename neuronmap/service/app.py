"""The FastAPI application of ``neuronmap serve``: the JSON API under ``/api/v1`` and the dashboard.

Security defaults: every route except ``GET /api/v1/health`` and the dashboard's login page
needs a bearer token (``Authorization: Bearer nm_…``, or the HttpOnly cookie the login page
sets); jobs need the ``write`` scope; request bodies are capped (``max_body_bytes``); CORS is
off unless origins are listed; errors are RFC 9457 problem+json without stack traces.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuronmap.service._problems import Problem, install_handlers, problem_response
from neuronmap.service._runs import RunStore
from neuronmap.service.tokens import Scope, TokenRecord, TokenStore

__all__ = ["COOKIE", "ServiceConfig", "ServiceState", "create_app"]

COOKIE = "neuronmap_token"
_log = logging.getLogger("neuronmap.service")


@dataclass
class ServiceConfig:
    """Settings of one server (the flags of ``neuronmap serve``).

    Example:
        >>> cfg = ServiceConfig(runs=Path("neuronmap-runs"), tokens=Path("tokens.json"))
        >>> cfg.executor, cfg.max_body_bytes
        ('local', 1000000)
    """

    #: Folder of run folders (``LocalReporter`` root); jobs write their runs here too.
    runs: Path
    #: The hashed token file (``neuronmap token create``).
    tokens: Path
    #: Folders that job specs may read models and probe sets from.
    model_roots: list[Path] = field(default_factory=list)
    #: An MLflow tracking URI whose runs are browsable as ``mlflow:<run_id>``.
    mlflow_uri: str | None = None
    #: ``local`` (worker processes on this machine) or ``ray``.
    executor: str = "local"
    #: Jobs at once for the local executor.
    workers: int = 1
    #: Ray cluster address (default ``RAY_ADDRESS``).
    ray_address: str | None = None
    #: Largest request body accepted (413 beyond).
    max_body_bytes: int = 1_000_000
    #: Origins allowed by CORS; empty means CORS headers are never sent.
    cors_origins: list[str] = field(default_factory=list)


class ServiceState:
    """What routes share: the config, token store, run store and job manager."""

    def __init__(self, config: ServiceConfig) -> None:
        from neuronmap.service.executors import make_executor
        from neuronmap.service.jobs import JobManager

        self.config = config
        config.runs.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenStore(config.tokens)
        self.runs = RunStore(config.runs, mlflow_uri=config.mlflow_uri)
        executor = make_executor(config.executor, workers=config.workers, ray_address=config.ray_address)
        self.jobs = JobManager(config.runs, config.model_roots, executor)

    def authenticate(self, request: Any, needed: Scope) -> TokenRecord:
        """The token of a request, or a 401/403 problem."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
        if not token:
            raise Problem(401, "This endpoint needs a bearer token: send 'Authorization: Bearer <token>' "
                               "(create one with `neuronmap token create --scope read`).",
                          slug="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="neuronmap"'})
        record = self.tokens.verify(token)
        if record is None:
            raise Problem(401, "The bearer token is not valid (unknown, revoked or mistyped).", slug="unauthorized",
                          headers={"WWW-Authenticate": 'Bearer realm="neuronmap", error="invalid_token"'})
        if not record.allows(needed):
            raise Problem(403, f"This endpoint needs a token with scope '{needed}'; token {record.id} has scope "
                               f"'{record.scope}'.", slug="forbidden",
                          headers={"WWW-Authenticate": f'Bearer realm="neuronmap", error="insufficient_scope", '
                                                       f'scope="{needed}"'})
        return record


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes, by Content-Length and while streaming."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = problem_response(413, f"The request body has {int(length)} bytes; this server accepts at "
                                             f"most {self.limit}.", instance=scope.get("path"))
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise Problem(413, f"The request body exceeds {self.limit} bytes.")
            return message

        await self.app(scope, limited, send)


def create_app(config: ServiceConfig) -> Any:
    """Build the application (call :meth:`ServiceState.jobs.close` via the app's shutdown).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> app = create_app(ServiceConfig(runs=root / "runs", tokens=root / "tokens.json"))
        >>> sorted(p for p in app.openapi()["paths"] if p.endswith("/health"))
        ['/api/v1/health']
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    from neuronmap import __version__
    from neuronmap.service.dashboard import dashboard_router
    from neuronmap.service.routes import api_router

    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        state.jobs.close()

    app = FastAPI(title="NeuronMap", version=__version__, lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None,
                  description="Runs, findings, metric histories, figures, tables, model cards, gates, audit "
                              "verification, run comparison and analysis jobs of NeuronMap.")
    app.state.neuronmap = state
    install_handlers(app)
    app.include_router(api_router(state), prefix="/api/v1")
    app.include_router(dashboard_router(state, cookie=COOKIE), prefix="/ui")
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)

    @app.get("/", include_in_schema=False)
    def root() -> Any:
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/ui/", status_code=307)

    if os.environ.get("NEURONMAP_SERVICE_DEBUG"):
        _log.setLevel(logging.DEBUG)
    return app
