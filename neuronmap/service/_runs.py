"""The runs a server shows: local run folders under one root, and optionally MLflow runs.

A run is named by its folder name under the runs root (``[A-Za-z0-9._-]``, not starting with a
dot) or by ``mlflow:<run_id>``. Every path a request names is checked twice: its characters are
checked against that pattern, and the resolved path must lie inside the runs root (so
``..``, absolute paths and symbolic links out of the root are refused alike).

Histories are read through :func:`neuronmap.runs.source.load_run` and cached by the
``metrics.jsonl`` file's (mtime, size), so a run that is still being written is re-read and a
finished one is parsed once. An MLflow run has no such stamp short of fetching it, so its
History is fetched again when it is older than :data:`MLFLOW_TTL_S` seconds.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd

from neuronmap.runs.source import MLFLOW_PREFIX, LoadedRun, RunReadError, load_run
from neuronmap.service._problems import Problem

__all__ = ["RunStore", "check_name", "encode_history", "filter_history"]

_NAME = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]{0,199}$")
_MLFLOW_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SIGNIFICANCE = 0.05
#: Seconds an MLflow run's History is served from the cache before it is fetched again.
MLFLOW_TTL_S = 30.0


def check_name(name: str, what: str = "run") -> str:
    """Refuse a path component that could leave its folder (``..``, ``/``, hidden names …)."""
    if not _NAME.match(name):
        raise Problem(404, f"No {what} named {name!r}: names are letters, digits and '._=+-', "
                           "not starting with a dot.", slug=f"{what}-not-found")
    return name


def _inside(root: Path, path: Path, what: str) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise Problem(404, f"No {what} at {path.name!r} inside this server's folder.", slug=f"{what}-not-found")
    return resolved


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class RunStore:
    """Lists and reads runs for the API and the dashboard.

    Args:
        root: The runs root (``neuronmap serve --runs``).
        mlflow_uri: An MLflow tracking URI whose runs are listed too (``mlflow:<run_id>``).
    """

    def __init__(self, root: Path, *, mlflow_uri: str | None = None, cache_size: int = 32) -> None:
        self.root = Path(root)
        self.mlflow_uri = mlflow_uri
        self._cache: OrderedDict[tuple[str, tuple[int, int]], LoadedRun] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ naming
    def run_dir(self, name: str) -> Path:
        """The folder of a local run, or a 404 problem."""
        check_name(name)
        path = _inside(self.root, self.root / name, "run")
        if not path.is_dir() or not ((path / "metrics.jsonl").is_file() or (path / "run.json").is_file()):
            raise Problem(404, f"No run named {name!r} under the runs root.", slug="run-not-found")
        return path

    def artifact(self, name: str, kind: str, relpath: str, suffix: str) -> Path:
        """A file under ``<run>/<kind>/`` named by a relative path of safe components."""
        run_dir = self.run_dir(name)
        parts = relpath.split("/")
        for part in parts:
            check_name(part, kind.rstrip("s"))
        path = _inside(run_dir / kind, run_dir.joinpath(kind, *parts), kind.rstrip("s"))
        if path.suffix != suffix or not path.is_file():
            raise Problem(404, f"Run {name!r} has no {kind.rstrip('s')} {relpath!r}.",
                          slug=f"{kind.rstrip('s')}-not-found")
        return path

    # ------------------------------------------------------------------ listing
    def local_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.match(p.name)
                      and ((p / "metrics.jsonl").is_file() or (p / "run.json").is_file()))

    def list_runs(self, *, query: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Summaries of every run, newest first, filtered by a substring and a status."""
        runs = [self.summary(name) for name in self.local_names()]
        if self.mlflow_uri:
            runs += self._mlflow_runs()
        if query:
            q = query.lower()
            runs = [r for r in runs if q in r["id"].lower() or q in json.dumps(r.get("tags", {})).lower()]
        if status:
            runs = [r for r in runs if r["status"].upper() == status.upper()]
        return sorted(runs, key=lambda r: (r.get("started") or "", r["id"]), reverse=True)

    def summary(self, name: str) -> dict[str, Any]:
        """Status, times, tags and counts of one run."""
        if name.startswith(MLFLOW_PREFIX):
            return self._mlflow_summary(name)
        run_dir = self.run_dir(name)
        info = _read_json(run_dir / "run.json") or {}
        steps = sorted(int(p.stem) for p in (run_dir / "reports").glob("*.json") if p.stem.lstrip("-").isdigit()) \
            if (run_dir / "reports").is_dir() else []
        findings = self.findings(name)
        return {
            "id": name, "source": "local", "status": str(info.get("status", "UNKNOWN")),
            "started": info.get("started"), "ended": info.get("ended"), "steps": steps,
            "tags": _read_json(run_dir / "tags.json") or {}, "config": _read_json(run_dir / "config.json") or {},
            "findings_count": len(findings["findings"]),
            "failures_count": sum(1 for f in findings["findings"] if f["severity"] == "error"),
            "has_audit": (run_dir / "audit.jsonl").is_file(),
        }

    # ------------------------------------------------------------------ history
    def load(self, name: str) -> LoadedRun:
        """The run's History through ``load_run``, cached while ``metrics.jsonl`` is unchanged."""
        if name.startswith(MLFLOW_PREFIX):
            if not self.mlflow_uri:
                raise Problem(404, f"{name!r} is an MLflow run, but this server was started without --mlflow.",
                              slug="run-not-found")
            if not _MLFLOW_ID.match(name[len(MLFLOW_PREFIX):]):
                raise Problem(404, f"{name!r} is not an MLflow run id.", slug="run-not-found")
            # an MLflow run has no cheap change stamp: re-read it at most every MLFLOW_TTL_S seconds
            bucket = (int(time.monotonic() // MLFLOW_TTL_S), 0)
            return self._load_cached(name, bucket, lambda: load_run(name, tracking_uri=self.mlflow_uri))
        run_dir = self.run_dir(name)
        try:
            st = (run_dir / "metrics.jsonl").stat()
        except FileNotFoundError:
            return LoadedRun(name, pd.DataFrame(columns=["step", "epoch", "event", "analysis", "layer", "metric",
                                                         "value", "key"]), run_dir)
        return self._load_cached(name, (st.st_mtime_ns, st.st_size), lambda: load_run(run_dir))

    def peek(self, name: str) -> LoadedRun | None:
        """The cached History of a local run if ``metrics.jsonl`` is unchanged, without reading it."""
        if name.startswith(MLFLOW_PREFIX):
            return None
        try:
            st = (self.run_dir(name) / "metrics.jsonl").stat()
        except FileNotFoundError:
            return None
        with self._lock:
            return self._cache.get((name, (st.st_mtime_ns, st.st_size)))

    def _load_cached(self, name: str, stamp: tuple[int, int], read: Any) -> LoadedRun:
        with self._lock:
            hit = self._cache.get((name, stamp))
            if hit is not None:
                self._cache.move_to_end((name, stamp))
                return hit
        try:
            run = read()
        except RunReadError as err:
            raise Problem(422, str(err), slug="run-unreadable") from err
        with self._lock:
            for key in [k for k in self._cache if k[0] == name]:
                del self._cache[key]
            self._cache[(name, stamp)] = run
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return run

    # ------------------------------------------------------------------ findings
    def findings(self, name: str) -> dict[str, Any]:
        """What the run says first: a findings file if the run has one, else derived from its reports.

        Sources, in order: ``findings.json`` in the run folder; the ``findings`` of the latest
        ``reports/<step>.json``; otherwise failures and notes of the latest report plus the metrics
        whose corrected p-value is below 0.05 at the last step.
        """
        if name.startswith(MLFLOW_PREFIX):
            return {"source": "none", "step": None, "findings": []}
        run_dir = self.run_dir(name)
        stored = _read_json(run_dir / "findings.json")
        if stored is not None:
            items = stored.get("findings", stored) if isinstance(stored, dict) else stored
            return {"source": "findings.json", "step": None, "findings": [_as_finding(i) for i in items or []]}
        reports = sorted(((int(p.stem), p) for p in (run_dir / "reports").glob("*.json")
                          if p.stem.lstrip("-").isdigit()),
                         key=lambda t: t[0]) if (run_dir / "reports").is_dir() else []
        if not reports:
            return {"source": "none", "step": None, "findings": []}
        step, path = reports[-1]
        report = _read_json(path) or {}
        if isinstance(report.get("findings"), list):
            return {"source": f"reports/{step}.json", "step": step,
                    "findings": [_as_finding(i, step) for i in report["findings"]]}
        out: list[dict[str, Any]] = []
        for analysis, info in sorted((report.get("analyses") or {}).items()):
            if not isinstance(info, dict):
                continue
            if info.get("status") == "failed":
                out.append({"severity": "error", "analysis": analysis, "step": step,
                            "text": f"{analysis} failed: {info.get('error') or 'no message'}"})
            out += [{"severity": "info", "analysis": analysis, "step": step, "text": str(n)}
                    for n in info.get("notes") or []]
        metrics = report.get("metrics") or {}
        for key, p_adj in sorted(metrics.items()):
            if key.endswith("_p_adj") and p_adj is not None and p_adj < _SIGNIFICANCE:
                base = key[: -len("_p_adj")]
                value = metrics.get(base)
                shown = "n/a" if value is None else f"{value:.4g}"
                out.append({"severity": "significant", "analysis": base.split("/")[1] if base.count("/") >= 3 else "",
                            "step": step, "key": base,
                            "text": f"{base} = {shown} (corrected p = {p_adj:.3g})"})
        order = {"error": 0, "warning": 1, "significant": 2, "info": 3}
        out.sort(key=lambda f: order.get(f["severity"], 4))
        return {"source": f"reports/{step}.json (derived)", "step": step, "findings": out}

    # ------------------------------------------------------------------ files
    def files(self, name: str, kind: str, suffix: str) -> list[dict[str, Any]]:
        """Every figure (``.png``) or table (``.csv``) of a run, by step then name."""
        root = self.run_dir(name) / kind
        out = []
        if root.is_dir():
            for path in sorted(root.rglob(f"*{suffix}")):
                rel = path.relative_to(root)
                step = rel.parts[0]
                out.append({"step": int(step) if step.lstrip("-").isdigit() else None,
                            "name": rel.relative_to(step).with_suffix("").as_posix(), "path": rel.as_posix()})
        return sorted(out, key=lambda f: (f["step"] is None, f["step"] or 0, f["name"]))

    # ------------------------------------------------------------------ MLflow
    def _client(self) -> Any:
        from neuronmap._imports import MLFLOW_AVAILABLE

        MLFLOW_AVAILABLE.require("Browsing MLflow runs")
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_uri)

    def _mlflow_runs(self) -> list[dict[str, Any]]:
        client = self._client()
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, max_results=500) if experiments else []
        return [self._mlflow_record(r) for r in runs]

    def _mlflow_summary(self, name: str) -> dict[str, Any]:
        self.load(name)  # validates the id and the server setting
        try:
            return self._mlflow_record(self._client().get_run(name[len(MLFLOW_PREFIX):]))
        except Exception as err:  # MLflow raises its own exception types
            raise Problem(404, f"Cannot read MLflow run {name!r}: {err}", slug="run-not-found") from err

    @staticmethod
    def _mlflow_record(run: Any) -> dict[str, Any]:
        from datetime import datetime, timezone

        def iso(ms: int | None) -> str | None:
            return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else None

        return {"id": MLFLOW_PREFIX + run.info.run_id, "source": "mlflow", "status": run.info.status,
                "started": iso(run.info.start_time), "ended": iso(run.info.end_time), "steps": [],
                "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
                "config": dict(run.data.params), "findings_count": 0, "failures_count": 0, "has_audit": False}


def _as_finding(item: Any, step: int | None = None) -> dict[str, Any]:
    if isinstance(item, dict):
        text = item.get("text") or item.get("message") or item.get("summary") or json.dumps(item, default=str)
        return {"severity": str(item.get("severity") or item.get("kind") or "info"),
                "analysis": str(item.get("analysis") or ""), "step": item.get("step", step),
                "text": str(text), **({"key": item["key"]} if "key" in item else {})}
    return {"severity": "info", "analysis": "", "step": step, "text": str(item)}


def filter_history(frame: pd.DataFrame, *, analysis: str | None = None, layer: str | None = None,
                   metric: str | None = None, key: str | None = None, step_min: int | None = None,
                   step_max: int | None = None) -> pd.DataFrame:
    """Rows of a History frame matching every given filter (exact values; steps inclusive)."""
    mask = pd.Series(True, index=frame.index)
    for column, wanted in (("analysis", analysis), ("layer", layer), ("metric", metric), ("key", key)):
        if wanted is not None:
            mask &= frame[column] == wanted
    if step_min is not None:
        mask &= frame["step"] >= step_min
    if step_max is not None:
        mask &= frame["step"] <= step_max
    return frame[mask] if not bool(mask.all()) else frame


def encode_history(frame: pd.DataFrame) -> dict[str, Any]:
    """A History frame as columns with a key dictionary (about 5x smaller than records).

    ``keys`` lists each distinct key with its analysis, layer and metric; ``rows`` holds
    ``step``, ``epoch``, ``event``, ``key_index`` and ``value`` as parallel lists (NaN as null).
    """
    keys = list(dict.fromkeys(frame["key"]))
    index = {k: i for i, k in enumerate(keys)}
    first = frame.drop_duplicates("key")
    parts = {k: (a, layer, m) for k, a, layer, m in zip(first["key"], first["analysis"], first["layer"],
                                                        first["metric"], strict=True)}
    return {
        "columns": ["step", "epoch", "event", "analysis", "layer", "metric", "value", "key"],
        "keys": [{"key": k, "analysis": parts[k][0], "layer": parts[k][1], "metric": parts[k][2]} for k in keys],
        "step": [int(s) for s in frame["step"]],
        "epoch": [None if e is None or (isinstance(e, float) and math.isnan(e)) else e for e in frame["epoch"]],
        "event": [None if e is None or (isinstance(e, float) and math.isnan(e)) else e for e in frame["event"]],
        "key_index": [index[k] for k in frame["key"]],
        "value": [v if math.isfinite(v) else None for v in frame["value"].astype(float)],
        "count": len(frame),
    }
