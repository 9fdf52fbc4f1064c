"""The dashboard: server-rendered pages (Jinja2, autoescaped, sandboxed) plus plotly charts.

Pages: runs list (``/ui/``), a run (``/ui/runs/{run}``: findings first, then metric-over-steps
charts with every layer per metric and CI bands, layer × step heatmaps, figures, tables, the
card), a comparison (``/ui/compare?a=&b=``) and jobs (``/ui/jobs``: submit and follow).

Works offline: ``plotly.min.js`` is served from the installed ``plotly`` package and the
Content-Security-Policy allows scripts from this server only, so no page can reach a CDN.
Authentication: the login page takes a token in the URL *fragment* (``/ui/login#<token>``,
never sent to the server or written to logs) or a form, and exchanges it for an HttpOnly,
SameSite=Strict cookie.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import FileSystemLoader, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from neuronmap.service._problems import Problem

if TYPE_CHECKING:
    from neuronmap.service.app import ServiceState

__all__ = ["dashboard_router"]

_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-eval'; connect-src 'self'; frame-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'")
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


class _Session(BaseModel):
    token: str


def _plotly_js() -> Path:
    from neuronmap._imports import PLOTLY_AVAILABLE

    PLOTLY_AVAILABLE.require("The dashboard's charts")
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def dashboard_router(state: ServiceState, *, cookie: str) -> APIRouter:
    """Every dashboard route, bound to one server's state.

    ``cookie`` names the session cookie that ``ServiceState.authenticate`` reads; the app passes
    it in so that this module never imports the app that mounts it.
    """
    router = APIRouter(include_in_schema=False)
    env = SandboxedEnvironment(loader=FileSystemLoader(str(files("neuronmap") / "service" / "templates")),
                               autoescape=select_autoescape(["html", "j2"]))
    static_dir = Path(str(files("neuronmap") / "service" / "static"))

    def page(name: str, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer", "X-Frame-Options": "SAMEORIGIN"})

    def user(request: Request) -> Any:
        try:
            return state.authenticate(request, "read")
        except Problem as err:
            if err.status == 401:
                return None
            raise

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)

    @router.get("/login")
    def login(request: Request) -> HTMLResponse:
        nxt = request.query_params.get("next", "/ui/")
        return page("login.html.j2", next=nxt if nxt.startswith("/ui/") else "/ui/", title="Sign in")

    @router.post("/session")
    def session(body: _Session) -> JSONResponse:
        record = state.tokens.verify(body.token)
        if record is None:
            raise Problem(401, "The token is not valid (unknown, revoked or mistyped).", slug="unauthorized")
        response = JSONResponse({"id": record.id, "scope": record.scope})
        response.set_cookie(cookie, body.token, httponly=True, samesite="strict", path="/", max_age=8 * 3600)
        return response

    @router.post("/logout")
    def logout() -> JSONResponse:
        response = JSONResponse({"ok": True})
        response.delete_cookie(cookie, path="/")
        return response

    @router.get("/static/plotly.min.js")
    def plotly_js(request: Request) -> Response:
        state.authenticate(request, "read")
        return FileResponse(_plotly_js(), media_type="text/javascript",
                            headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        # public like the login page that needs them; they hold code, never data
        if name not in _STATIC:
            raise Problem(404, f"No static file {name!r}.")
        return FileResponse(static_dir / name, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    @router.get("/")
    def runs_page(request: Request, q: str | None = None) -> Response:
        who = user(request)
        if who is None:
            return to_login(request)
        return page("runs.html.j2", runs=state.runs.list_runs(query=q), q=q or "", who=who, title="Runs")

    @router.get("/runs/{run}")
    def run_page(run: str, request: Request) -> Response:
        who = user(request)
        if who is None:
            return to_login(request)
        summary = state.runs.summary(run)
        local = summary["source"] == "local"
        figures = state.runs.files(run, "figures", ".png") if local else []
        tables = state.runs.files(run, "tables", ".csv") if local else []
        latest = max((f["step"] for f in figures if f["step"] is not None), default=None)
        return page("run.html.j2", run=summary, findings=state.runs.findings(run), who=who, title=run,
                    figures=[f for f in figures if f["step"] == latest], all_figures=len(figures), tables=tables,
                    quote=quote, page_data={"run": run})

    @router.get("/compare")
    def compare_page(request: Request, a: str | None = None, b: str | None = None) -> Response:
        who = user(request)
        if who is None:
            return to_login(request)
        names = [r["id"] for r in state.runs.list_runs()]
        return page("compare.html.j2", names=names, a=a or "", b=b or "", who=who, title="Compare",
                    page_data={"a": a, "b": b})

    @router.get("/jobs")
    def jobs_page(request: Request) -> Response:
        who = user(request)
        if who is None:
            return to_login(request)
        return page("jobs.html.j2", jobs=[j.to_dict() for j in state.jobs.list()], who=who, title="Jobs",
                    roots=[str(r) for r in state.config.model_roots])

    return router
