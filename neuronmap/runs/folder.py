"""The run folder: its layout, and the one place that names, reads and lists its files.

Layout of ``neuronmap-runs/<run-name>/``::

    metrics.jsonl          one JSON line per logged step (step, epoch, event, metrics)
    history.csv            the long-format History (step, epoch, event, analysis, layer, metric, value, key)
    config.json            parameters from log_params
    tags.json              tags from set_tags
    run.json               run status and times
    reports/<step>.json    the engine's Report of each step (results, notes, findings)
    failures.json          the analyses that failed, by step
    figures/<step>/<analysis>/<name>.png
    tables/<step>/<analysis>/<name>.csv
    texts/<name>.md        text documents (model cards)
    artifacts/             files from log_artifact
    audit.jsonl            the hash-chained audit trail (:mod:`neuronmap.compliance.audit`)
    spool/                 tracker calls not yet delivered (:mod:`neuronmap.reporters._spool`)
    report.html            a self-contained page (metrics over steps, latest figures and tables)

:class:`~neuronmap.reporters.LocalReporter` writes it (the MLflow and W&B reporters upload the
same files under ``neuronmap/``); the HTML report, model cards, gates and the service read it
through the functions here. Crash safety is one layer down, in :mod:`neuronmap._files`:
``metrics.jsonl`` appends start on a new line, readers skip a torn record with a
:class:`~neuronmap.errors.TornLineWarning`, and every whole-file JSON write is atomic.

Example:
    >>> import tempfile
    >>> from neuronmap._files import append_jsonl
    >>> run = Path(tempfile.mkdtemp())
    >>> append_jsonl(run / METRICS_FILE, {"step": 0, "metrics": {"neuronmap/probing/net.0/accuracy": 0.9}})
    >>> read_history(run)[["step", "analysis", "layer", "metric", "value"]].values.tolist()
    [[0, 'probing', 'net.0', 'accuracy', 0.9]]
    >>> safe_name("probing/net.0/a b"), figure_path(run, 3, "probing/curve").relative_to(run).as_posix()
    ('probing/net.0/a_b', 'figures/3/probing/curve.png')
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from neuronmap._files import read_json, read_jsonl_numbered
from neuronmap.results import HISTORY_COLUMNS, split_key

__all__ = ["CONFIG_FILE", "DEFAULT_ROOT", "FAILURES_FILE", "HISTORY_FILE", "METRICS_FILE", "REPORTS_DIR",
           "REPORT_FILE", "RUN_FILE", "TAGS_FILE", "figure_path", "iter_reports", "latest_files", "latest_report",
           "new_run_name", "read_history", "read_object", "safe_name", "table_path", "text_path"]

#: Where runs go when no folder is given.
DEFAULT_ROOT = "neuronmap-runs"
METRICS_FILE = "metrics.jsonl"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.json"
TAGS_FILE = "tags.json"
RUN_FILE = "run.json"
FAILURES_FILE = "failures.json"
REPORT_FILE = "report.html"
REPORTS_DIR = "reports"


def safe_name(name: str) -> str:
    """A path-safe version of a figure/table name (``/`` kept as folder separators)."""
    parts = [re.sub(r"[^A-Za-z0-9._=+-]", "_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"


def new_run_name() -> str:
    """A fresh run folder name: UTC time plus a short random id (``20250101-120000-1a2b3c``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def figure_path(root: Path, step: int, name: str) -> Path:
    """Where the figure ``name`` of ``step`` goes under ``root`` (a run folder)."""
    return root / "figures" / str(int(step)) / f"{safe_name(name)}.png"


def table_path(root: Path, step: int, name: str) -> Path:
    """Where the table ``name`` of ``step`` goes under ``root`` (a run folder)."""
    return root / "tables" / str(int(step)) / f"{safe_name(name)}.csv"


def text_path(root: Path, name: str) -> Path:
    """Where the text document ``name`` goes (``.md`` unless the name has a suffix)."""
    return root / "texts" / (safe_name(name) if Path(name).suffix else f"{safe_name(name)}.md")


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """The long-format History of a run folder, rebuilt from ``metrics.jsonl``.

    Keys that are not NeuronMap keys (a user's own metrics) get empty analysis and layer. A torn
    line (a record cut short by a crash) is skipped with a
    :class:`~neuronmap.errors.TornLineWarning` naming it; every other record is read.

    Raises:
        ValueError: A line is valid JSON but not a metrics record (``step`` and ``metrics``).
    """
    path = Path(run_dir) / METRICS_FILE
    rows: list[list[Any]] = []
    for number, record in read_jsonl_numbered(path, stacklevel=3):
        if not (isinstance(record, dict) and isinstance(record.get("metrics"), dict) and "step" in record):
            raise ValueError(f"line {number} of {path} is not a metrics record (an object with 'step' and "
                             f"'metrics'): {str(record)[:80]!r}")
        for key, value in record["metrics"].items():
            try:
                analysis, layer, metric = split_key(key)
            except ValueError:
                analysis, layer, metric = "", "", key
            rows.append([record["step"], record.get("epoch"), record.get("event"), analysis, layer, metric,
                         math.nan if value is None else float(value), key])
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return frame


def read_object(path: Path, *, warn: bool = True) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when it is missing, unreadable or not an object.

    ``warn=True`` reports an unreadable file with a :class:`~neuronmap.errors.TornLineWarning`
    (:func:`neuronmap._files.read_json`); ``warn=False`` reads it as empty in silence.
    """
    if warn:
        data = read_json(path)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
    return data if isinstance(data, dict) else {}


def iter_reports(run_dir: Path, *, warn: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(step, report)`` for every ``reports/<step>.json``, in step order."""
    folder = run_dir / REPORTS_DIR
    paths = [p for p in folder.glob("*.json") if p.stem.lstrip("-").isdigit()] if folder.is_dir() else []
    for path in sorted(paths, key=lambda p: int(p.stem)):
        yield int(path.stem), read_object(path, warn=warn)


def latest_report(run_dir: Path, *, warn: bool = True) -> tuple[int, dict[str, Any]] | None:
    """``(step, report)`` of the last analysed step, or ``None`` when no report was written."""
    folder = run_dir / REPORTS_DIR
    steps = [int(p.stem) for p in folder.glob("*.json") if p.stem.lstrip("-").isdigit()] if folder.is_dir() else []
    if not steps:
        return None
    step = max(steps)
    return step, read_object(folder / f"{step}.json", warn=warn)


def latest_files(root: Path, suffix: str) -> dict[str, tuple[int, Path]]:
    """``relative name -> (step, path)`` keeping each name's latest step under ``root/<step>/``
    (``root`` is a run folder's ``figures`` or ``tables``), sorted by name."""
    out: dict[str, tuple[int, Path]] = {}
    if not root.is_dir():
        return out
    for step_dir in root.iterdir():
        if not (step_dir.is_dir() and step_dir.name.lstrip("-").isdigit()):
            continue
        step = int(step_dir.name)
        for file in step_dir.rglob(f"*{suffix}"):
            name = file.relative_to(step_dir).with_suffix("").as_posix()
            if name not in out or out[name][0] < step:
                out[name] = (step, file)
    return dict(sorted(out.items()))
