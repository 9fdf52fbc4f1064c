"""The versioned JSON API: ``/api/v1/...`` (schema at ``/api/v1/openapi.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from neuronmap._keys import SIBLINGS
from neuronmap.service._history import HistoryCache
from neuronmap.service._problems import Problem

if TYPE_CHECKING:
    from neuronmap.service.app import ServiceState

__all__ = ["api_router"]

_MAX_PAGE = 500


class GateRequest(BaseModel):
    """Body of ``POST /runs/{run}/gate``."""

    config: str | list[Any] | dict[str, Any] = Field(description="gates.yaml text, or its parsed list/mapping")
    baseline: str | None = Field(default=None, description="a run id to compare with (baseline rules)")
    record: bool = Field(default=False, description="append the evaluation to the run's audit trail (write scope)")


class JobRequest(BaseModel):
    """Body of ``POST /jobs``: the spec ``neuronmap analyze`` takes, as YAML text or a mapping."""

    spec: str | dict[str, Any] = Field(description="model, probe, layers, analyses … (no 'out')")
    run_name: str | None = Field(default=None, description="run folder name (default job-<id>)")


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    page = items[offset: offset + limit]
    nxt = offset + limit if offset + limit < len(items) else None
    return {"items": page, "total": len(items), "limit": limit, "offset": offset, "next_offset": nxt}


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def api_router(state: ServiceState) -> APIRouter:
    """Every API route, bound to one server's state."""
    router = APIRouter()
    runs = state.runs

    # async: a token check is a stat and a hash, cheaper on the event loop than a thread hop
    async def reader(request: Request) -> Any:
        return state.authenticate(request, "read")

    async def writer(request: Request) -> Any:
        return state.authenticate(request, "write")

    read = [Depends(reader)]
    write = [Depends(writer)]
    history_cache = HistoryCache()

    @router.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (no token needed): ``{"status": "ok"}`` and the version."""
        from neuronmap import __version__

        return {"status": "ok", "version": __version__, "executor": state.jobs.executor.name}

    @router.get("/whoami", tags=["service"])
    def whoami(request: Request) -> dict[str, Any]:
        """The presented token's id, name and scope."""
        record = state.authenticate(request, "read")
        return {"id": record.id, "name": record.name, "scope": record.scope}

    # ------------------------------------------------------------------ runs
    @router.get("/runs", tags=["runs"], dependencies=read)
    def list_runs(q: str | None = Query(None, description="substring of the run id or its tags"),
                  status: str | None = Query(None, description="RUNNING, FINISHED, FAILED …"),
                  limit: int = Query(50, ge=1, le=_MAX_PAGE), offset: int = Query(0, ge=0)) -> dict[str, Any]:
        """Runs, newest first, one page at a time."""
        return _page(runs.list_runs(query=q, status=status), limit, offset)

    @router.get("/runs/{run}", tags=["runs"], dependencies=read)
    def get_run(run: str) -> dict[str, Any]:
        """Status, times, tags, config and findings counts of one run."""
        return runs.summary(run)

    @router.get("/runs/{run}/findings", tags=["runs"], dependencies=read)
    def findings(run: str) -> dict[str, Any]:
        """What the run says first: failures, significant results, notes."""
        return runs.findings(run)

    @router.get("/runs/{run}/history", tags=["runs"], dependencies=read)
    async def history(request: Request, run: str, analysis: str | None = None, layer: str | None = None,
                      metric: str | None = None, key: str | None = None,
                      step_min: int | None = None, step_max: int | None = None,
                      limit: int | None = Query(None, ge=1, description="rows per page (default: all)"),
                      offset: int = Query(0, ge=0, description="first row of the page")) -> Response:
        """The long-format History (filtered, optionally one page of rows), as columns with a key
        dictionary (see the docs). Answers carry an ETag (``If-None-Match`` gets a 304) and are
        gzipped for clients that accept it."""
        query = {"analysis": analysis, "layer": layer, "metric": metric, "key": key, "step_min": step_min,
                 "step_max": step_max, "limit": limit, "offset": offset}
        # a cached, unchanged run is answered on the event loop: a thread hop costs more than the lookup
        loaded = runs.peek(run) or await run_in_threadpool(runs.load, run)
        encoded = history_cache.get(loaded, run, query)
        if encoded is None:
            encoded = await run_in_threadpool(history_cache.get_or_build, loaded, run, query)
        return encoded.response(request.headers)

    @router.get("/runs/{run}/metrics", tags=["runs"], dependencies=read)
    def metric_keys(run: str) -> dict[str, Any]:
        """Every analysis, layer and metric name the run holds."""
        frame = runs.load(run).frame
        return {"analyses": sorted(set(frame["analysis"]) - {""}), "layers": sorted(set(frame["layer"]) - {""}),
                "metrics": sorted(set(frame["metric"])), "keys": sorted(set(frame["key"]))}

    @router.get("/runs/{run}/figures", tags=["artifacts"], dependencies=read)
    def figures(run: str) -> dict[str, Any]:
        """Every figure (PNG) by step and name; fetch one at ``/runs/{run}/figures/{path}``."""
        return {"items": runs.files(run, "figures", ".png")}

    @router.get("/runs/{run}/figures/{path:path}", tags=["artifacts"], dependencies=read)
    def figure(run: str, path: str) -> FileResponse:
        return FileResponse(runs.artifact(run, "figures", path, ".png"), media_type="image/png")

    @router.get("/runs/{run}/tables", tags=["artifacts"], dependencies=read)
    def tables(run: str) -> dict[str, Any]:
        """Every table (CSV) by step and name."""
        return {"items": runs.files(run, "tables", ".csv")}

    @router.get("/runs/{run}/tables/{path:path}", tags=["artifacts"], dependencies=read)
    def table(run: str, path: str, format: Literal["json", "csv"] = "json") -> Response:
        """One table as ``{"columns", "data"}`` JSON or as the stored CSV."""
        file = runs.artifact(run, "tables", path, ".csv")
        if format == "csv":
            return FileResponse(file, media_type="text/csv")
        frame = pd.read_csv(file)
        data = json.loads(frame.to_json(orient="split", index=False))
        return JSONResponse({"name": path, "columns": data["columns"], "data": data["data"]})

    @router.get("/runs/{run}/card", tags=["runs"], dependencies=read)
    def card(run: str, format: Literal["md", "html"] = "md", template: str = "default") -> Response:
        """The model card, rendered from the run folder (built-in templates only)."""
        from neuronmap.compliance.cards.data import ModelCard
        from neuronmap.compliance.cards.render import available_templates, render_card

        allowed = available_templates(format)
        if template not in allowed:
            raise Problem(422, f"Unknown card template {template!r} for format {format!r}; allowed: {allowed}.",
                          slug="invalid-parameter")
        text = render_card(ModelCard.from_run(runs.run_dir(run)), template=template, fmt=format, audit=False)
        return PlainTextResponse(text, media_type="text/html" if format == "html" else "text/markdown")

    @router.post("/runs/{run}/gate", tags=["runs"], dependencies=read)
    def gate(run: str, body: GateRequest, request: Request) -> dict[str, Any]:
        """Evaluate posted gate checks; ``exit_code``/``status`` as ``neuronmap gate`` would exit."""
        from neuronmap.compliance.audit import AuditTrail
        from neuronmap.compliance.gates import evaluate

        config = body.config
        if isinstance(config, str) and "\n" not in config:
            config += "\n"  # text, never a path on the server
        trail: Any = False
        if body.record:
            state.authenticate(request, "write")
            trail = AuditTrail(runs.run_dir(run))
        baseline = runs.load(body.baseline) if body.baseline else None
        report = evaluate(runs.load(run), config, baseline, audit=trail)
        status = {0: "passed", 1: "failed"}.get(report.exit_code, "error")
        return {"status": status, **report.to_dict(), "run": run, "baseline": body.baseline}

    @router.get("/runs/{run}/audit", tags=["runs"], dependencies=read)
    def audit(run: str,
              head: str | None = Query(None, description="the last entry's hash kept elsewhere")) -> dict[str, Any]:
        """Verify the run's hash-chained audit trail (every bad line named)."""
        from neuronmap.compliance._audit_verify import verify

        run_dir = runs.run_dir(run)
        if not (run_dir / "audit.jsonl").is_file():
            raise Problem(404, f"Run {run!r} has no audit trail (audit.jsonl).", slug="audit-not-found")
        result = verify(run_dir, head=head)
        return {"ok": result.ok, "entries": result.entries, "head": result.head, "signed": result.signed,
                "notes": list(result.notes),
                "problems": [{"line": p.line, "kind": p.kind, "message": p.message} for p in result.problems]}

    @router.get("/compare", tags=["runs"], dependencies=read)
    def compare(a: str, b: str) -> dict[str, Any]:
        """Each metric's last value in both runs and the delta; CKA when both runs stored activations."""
        latest_a, latest_b = _latest(runs.load(a).frame), _latest(runs.load(b).frame)
        shared = sorted(set(latest_a) & set(latest_b))
        rows = [{"key": k, "a": _finite(latest_a[k][1]), "b": _finite(latest_b[k][1]), "step_a": latest_a[k][0],
                 "step_b": latest_b[k][0], "delta": _finite(latest_b[k][1] - latest_a[k][1])}
                for k in shared if not k.endswith(SIBLINGS)]
        return {"a": a, "b": b, "metrics": rows, "only_a": sorted(set(latest_a) - set(latest_b)),
                "only_b": sorted(set(latest_b) - set(latest_a)), "cka": _cka(runs, a, b)}

    # ------------------------------------------------------------------ jobs
    @router.post("/jobs", tags=["jobs"], status_code=202, dependencies=write)
    def submit(body: JobRequest) -> dict[str, Any]:
        """Queue an analysis job (write scope); its results become the run ``run``."""
        return state.jobs.submit(body.spec, run_name=body.run_name).to_dict()

    @router.get("/jobs", tags=["jobs"], dependencies=read)
    def jobs(limit: int = Query(50, ge=1, le=_MAX_PAGE), offset: int = Query(0, ge=0)) -> dict[str, Any]:
        return _page([j.to_dict() for j in state.jobs.list()], limit, offset)

    @router.get("/jobs/{job_id}", tags=["jobs"], dependencies=read)
    def job(job_id: str) -> dict[str, Any]:
        return state.jobs.get(job_id).to_dict()

    @router.get("/jobs/{job_id}/logs", tags=["jobs"], dependencies=read)
    def logs(job_id: str, offset: int = Query(0, ge=0)) -> dict[str, Any]:
        """Log text from ``offset``; pass the returned ``next_offset`` to follow it."""
        text, nxt = state.jobs.logs(job_id, offset)
        return {"text": text, "next_offset": nxt}

    @router.post("/jobs/{job_id}/cancel", tags=["jobs"], dependencies=write)
    def cancel(job_id: str) -> dict[str, Any]:
        return state.jobs.cancel(job_id).to_dict()

    return router


def _latest(frame: pd.DataFrame) -> dict[str, tuple[int, float]]:
    if frame.empty:
        return {}
    last = frame.sort_values("step", kind="stable").drop_duplicates("key", keep="last")
    return {str(k): (int(s), float(v)) for k, s, v in zip(last["key"], last["step"], last["value"], strict=True)}


def _activations_file(run_dir: Path | None) -> Path | None:
    if run_dir is None:
        return None
    files = [p for sub in ("activations", "artifacts") for p in sorted((run_dir / sub).glob("*.npz"))
             if (run_dir / sub).is_dir()]
    return files[-1] if files else None


def _cka(runs: Any, a: str, b: str) -> dict[str, Any]:
    """Linear CKA between the runs' stored activations (``activations/*.npz`` or ``artifacts/*.npz``)."""
    from neuronmap.capture.hooks import Activations

    files = [_activations_file(runs.load(r).run_dir) for r in (a, b)]
    if None in files:
        return {"available": False, "note": "CKA needs activations stored in both runs (activations/*.npz "
                                            "or artifacts/*.npz, as written by Activations.save)."}
    from neuronmap.analyses.similarity import compare_models

    try:
        acts = [Activations.load(f) for f in files]  # type: ignore[arg-type]
        matrix = compare_models(acts[0], acts[1])
    except (ValueError, KeyError, OSError) as err:
        return {"available": False, "note": f"CKA could not be computed: {err}"}
    diagonal = {layer: _finite(matrix.loc[layer, layer]) for layer in matrix.index if layer in matrix.columns}
    return {"available": True, "rows": [str(r) for r in matrix.index], "columns": [str(c) for c in matrix.columns],
            "matrix": [[_finite(v) for v in row] for row in matrix.to_numpy()], "diagonal": diagonal,
            "files": [f.name for f in files if f is not None]}
