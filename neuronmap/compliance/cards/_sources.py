"""Read what a model card needs out of a run folder: metrics with their statistics, figures,
tables, dated test logs, failures, environment and the audit-trail status.

Everything is read generically through the run-folder layout of :mod:`neuronmap.runs.folder`,
so analyses added later appear on cards unchanged.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pandas as pd

from neuronmap._files import read_jsonl_numbered
from neuronmap.runs.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    iter_reports,
    latest_files,
    latest_report,
    read_object,
)
from neuronmap.runs.source import load_run

__all__ = ["metric_rows", "read_run_folder"]

_SIBLINGS = {"ci_low": "_ci_low", "ci_high": "_ci_high", "p_adj": "_p_adj", "p": "_p"}
_GROUP_ANALYSES = ("fairness", "representation_bias", "counterfactual_bias", "performance")
_MAX_FIGURES = 40
#: Rows shown per table; the rest are counted ("N more rows in <file>"), never dropped silently.
_MAX_TABLE_ROWS = 200
#: Entry kinds that evaluate the model or its results (a sign-off must come after the last one).
_EVALUATIONS = ("engine_run", "gate")


def _is_sibling(key: str) -> bool:
    return key.endswith(tuple(_SIBLINGS.values()))


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def metric_rows(history: pd.DataFrame) -> list[dict[str, Any]]:
    """Each metric's latest value with the CI bounds and p-values logged at the same step.

    Returns one dict per metric key (siblings folded in): ``key, analysis, layer, metric, step,
    value, ci_low, ci_high, p, p_adj, has_ci, has_p, has_p_adj, display``.
    """
    if history is None or len(history) == 0:
        return []
    frame = history.dropna(subset=["key"]).sort_values("step", kind="stable")
    values = {(k, int(s)): v for k, s, v in zip(frame["key"], frame["step"], frame["value"], strict=True)}
    latest = frame.drop_duplicates("key", keep="last")
    rows = []
    for _, rec in latest.iterrows():
        key = str(rec["key"])
        if _is_sibling(key):
            continue
        step = int(rec["step"])
        row: dict[str, Any] = {
            "key": key, "analysis": str(rec["analysis"] or ""), "layer": str(rec["layer"] or ""),
            "metric": str(rec["metric"]), "step": step, "value": _finite(rec["value"]),
        }
        for name, suffix in _SIBLINGS.items():
            row[name] = _finite(values.get((key + suffix, step)))
        row["has_ci"] = row["ci_low"] is not None and row["ci_high"] is not None
        row["has_p"], row["has_p_adj"] = row["p"] is not None, row["p_adj"] is not None
        text = _fmt(row["value"])
        if row["has_ci"]:
            text += f" [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
        if row["has_p_adj"]:
            text += f" (p_adj = {_fmt(row['p_adj'])})"
        elif row["has_p"]:
            text += f" (p = {_fmt(row['p'])})"
        row["display"] = text
        rows.append(row)
    return sorted(rows, key=lambda r: (r["analysis"], r["metric"], r["layer"]))


def _figures(run_dir: Path) -> list[dict[str, Any]]:
    figures = []
    for name, (step, path) in list(latest_files(run_dir / "figures", ".png").items())[:_MAX_FIGURES]:
        data = base64.b64encode(path.read_bytes()).decode()
        figures.append({"name": name, "step": step, "path": path.relative_to(run_dir).as_posix(),
                        "data_uri": f"data:image/png;base64,{data}"})
    return figures


def _tables(run_dir: Path) -> list[dict[str, Any]]:
    """Group-level tables (fairness and bias analyses, or any table named ``*group*``)."""
    tables = []
    for name, (step, path) in latest_files(run_dir / "tables", ".csv").items():
        if not (name.split("/")[0] in _GROUP_ANALYSES or "group" in name.lower()):
            continue
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        shown = frame.head(_MAX_TABLE_ROWS)
        rows = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in rec] for rec in shown.itertuples(index=False)]
        tables.append({"name": name, "step": step, "path": path.relative_to(run_dir).as_posix(),
                       "columns": [str(c) for c in frame.columns], "rows": rows, "total_rows": len(frame)})
    return tables


def _findings(run_dir: Path) -> list[dict[str, Any]]:
    """The findings of the latest report (``reports/<step>.json``), most important first."""
    latest = latest_report(run_dir, warn=False)
    if latest is None:
        return []
    step, report = latest
    found = report.get("findings") or []
    return [{"analysis": f.get("analysis"), "kind": f.get("kind"), "line": f.get("line") or f.get("text"),
             "step": step} for f in found if isinstance(f, dict)]


def _notes(run_dir: Path) -> dict[str, list[str]]:
    """Each analysis' notes from the latest report that ran it (``reports/<step>.json``)."""
    notes: dict[str, list[str]] = {}
    for _, report in iter_reports(run_dir, warn=False):
        for analysis, info in (report.get("analyses") or {}).items():
            if isinstance(info, dict) and info.get("notes") is not None:
                notes[str(analysis)] = [str(n) for n in info.get("notes") or []]
    return notes


def _failures(run_dir: Path) -> list[dict[str, Any]]:
    failures = []
    for _, report in iter_reports(run_dir, warn=False):
        for analysis, info in (report.get("analyses") or {}).items():
            if isinstance(info, dict) and info.get("status") == "failed":
                failures.append({"step": report.get("step"), "analysis": analysis, "error": info.get("error") or ""})
    return sorted(failures, key=lambda f: (f["step"] is None, f["step"] or 0, f["analysis"]))


def _audit(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Verification summary, gate-evaluation log lines and the first engine-run entry.

    The summary also holds what the trail says about the run: the model's name, the last gate
    outcome, every sign-off, the git commits seen and the time of the last evaluation.
    """
    path = run_dir / "audit.jsonl"
    if not path.is_file():
        return {"present": False, "verified": False, "runs": 0, "sign_offs": [], "commits": []}, [], None
    from neuronmap.compliance.audit import verify

    result = verify(path)
    summary: dict[str, Any] = {
        "present": True, "path": "audit.jsonl", "ok": result.ok, "verified": result.verified,
        "entries": result.entries, "runs": result.runs, "files_checked": result.files_checked,
        "evidence_checked": result.evidence_checked, "head": result.head, "signed": result.signed,
        "signers": [{"key_id": k, "public_key": v} for k, v in result.signers],
        "problems": [str(p) for p in result.problems], "notes": list(result.notes),
        "sign_offs": [], "commits": [], "last_gate": None, "last_evaluation": None, "model_name": None,
    }
    gates, first_run = [], None
    # unreadable lines are already among the verification's problems: no second warning
    for lineno, entry in read_jsonl_numbered(path, warn=False):
        if not isinstance(entry, dict):
            continue
        kind = entry.get("kind")
        if kind in _EVALUATIONS:
            summary["last_evaluation"] = {"timestamp": entry.get("timestamp"), "seq": entry.get("seq"),
                                          "kind": kind, "line": lineno}
        git = entry.get("git") or {}
        commit = git.get("commit") if isinstance(git, dict) else None
        if commit and commit not in [c["commit"] for c in summary["commits"]]:
            summary["commits"].append({"commit": commit, "dirty": git.get("dirty"),
                                       "first_seen": entry.get("timestamp"), "kind": kind})
        if kind == "engine_run":
            summary["model_name"] = entry.get("model_name") or summary["model_name"]
        if kind == "sign_off":
            summary["sign_offs"].append({k: entry.get(k) for k in ("by", "role", "statement", "card_digest",
                                                                   "timestamp", "seq")}
                                        | {"line": lineno, "key_id": (entry.get("signer") or {}).get("key_id")})
        if kind == "gate":
            summary["last_gate"] = {"timestamp": entry.get("timestamp"), "line": lineno,
                                    **{k: v for k, v in (entry.get("summary") or {}).items()}}
        if entry.get("kind") == "engine_run" and first_run is None:
            first_run = entry
        if entry.get("kind") == "gate":
            s = entry.get("summary") or {}
            gates.append({
                "date": entry.get("timestamp"), "kind": "gate evaluation", "step": None, "event": None,
                "result": f"exit code {s.get('exit_code')}: {s.get('passed', 0)} passed, {s.get('failed', 0)} failed, "
                          f"{s.get('error', 0)} not run (config {s.get('config')})",
                "source": f"audit.jsonl line {lineno}", "user": entry.get("user"),
            })
    return summary, gates, first_run


def _test_log(run_dir: Path, gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    log = []
    path = run_dir / METRICS_FILE
    # torn records were reported (TornLineWarning) when load_run read the history
    for lineno, record in read_jsonl_numbered(path, warn=False):
        if not isinstance(record, dict):
            continue
        metrics = record.get("metrics") or {}
        log.append({"date": record.get("time"), "kind": "evaluation on the probe set", "step": record.get("step"),
                    "event": record.get("event"), "result": f"{len(metrics)} metrics logged",
                    "source": f"metrics.jsonl line {lineno}", "user": None})
    return sorted(log + gates, key=lambda r: str(r["date"] or ""))


def read_run_folder(run_dir: Path) -> dict[str, Any]:
    """Everything a card reads from a run folder.

    Raises:
        RunReadError: The folder does not exist or holds no ``metrics.jsonl``.
    """
    history = load_run(run_dir).frame
    audit, gates, first_run = _audit(run_dir)
    if first_run is not None:
        environment = {k: first_run.get(k) for k in ("user", "host", "platform", "git", "versions")}
        environment["recorded"] = f"audit trail, first engine run at {first_run.get('timestamp')}"
    else:
        from neuronmap.compliance.audit import environment_info

        environment = {**environment_info(), "recorded": "at card rendering (no audit trail in the run folder)"}
    return {
        "history": history,
        "notes": _notes(run_dir),
        "findings": _findings(run_dir),
        "config": read_object(run_dir / CONFIG_FILE, warn=False),
        "run": {**read_object(run_dir / RUN_FILE, warn=False), "folder": str(run_dir), "name": run_dir.name},
        "failures": _failures(run_dir),
        "figures": _figures(run_dir),
        "tables": _tables(run_dir),
        "test_log": _test_log(run_dir, gates),
        "audit": audit,
        "environment": environment,
    }
