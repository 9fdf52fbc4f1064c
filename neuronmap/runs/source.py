"""Read a finished run's metrics from a local run folder or an MLflow run.

Gates, model cards and the audit CLI accept a *run* in one of two spellings:

* a local run folder written by :class:`~neuronmap.reporters.LocalReporter`
  (``metrics.jsonl`` inside it), or
* a W&B run folder (``wandb/offline-run-*``) whose ``files/neuronmap/`` a WandbReporter wrote, or
* ``mlflow:<run_id>``: the full record NeuronMap uploaded (``neuronmap/metrics.jsonl``), else
  ``MlflowClient(tracking_uri).get_metric_history`` (tracker keys mapped back), with the
  tracking URI given explicitly or taken from ``MLFLOW_TRACKING_URI``. HTTP retries and timeouts
  are bounded as the reporters bound them (:mod:`neuronmap.reporters._mlflow_http`), so an
  unreachable tracker is an error within seconds, not after MLflow's minutes of back-off.

Both give the same long-format History table (``step, epoch, event, analysis, layer, metric,
value, key``), so everything downstream is tracker-agnostic.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from neuronmap._headline import LAYOUT, LAYOUT_TAG, history_key_of
from neuronmap.errors import NeuronMapError
from neuronmap.reporters._mlflow_http import READ_RETRIES, READ_TIMEOUT_S, bounded_http
from neuronmap.results import HISTORY_COLUMNS, split_key
from neuronmap.runs.folder import read_history

__all__ = ["LoadedRun", "RunReadError", "load_run"]

MLFLOW_PREFIX = "mlflow:"


class RunReadError(NeuronMapError, OSError):
    """A run folder or tracker run could not be read (missing, unreadable or malformed)."""


@dataclass(frozen=True)
class LoadedRun:
    """The metrics of one run, whatever stored them."""

    #: How the user named the run (a folder path or ``mlflow:<run_id>``).
    source: str
    #: Long-format History (columns of :data:`neuronmap.results.HISTORY_COLUMNS`).
    frame: pd.DataFrame
    #: The local run folder, or ``None`` for a tracker run.
    run_dir: Path | None = None

    @property
    def keys(self) -> list[str]:
        """Every metric key the run holds, sorted."""
        return sorted(set(self.frame["key"]))


def load_run(
    source: str | os.PathLike[str], *, tracking_uri: str | None = None, materialize: bool = False
) -> LoadedRun:
    """Read the metrics of a run folder or of ``mlflow:<run_id>``.

    Args:
        source: A run folder path, or ``mlflow:<run_id>``.
        tracking_uri: MLflow tracking URI (default: ``MLFLOW_TRACKING_URI``); ignored for folders.
        materialize: For a tracker run, download its whole ``neuronmap/`` artifact folder (a
            run folder in LocalReporter's format: figures, tables, reports) into a temporary
            folder, returned as ``run_dir`` (``neuronmap report mlflow:ID``); by default only the
            metrics record is fetched.

    Returns:
        The run's long-format History.

    Raises:
        RunReadError: The folder does not exist, holds no ``metrics.jsonl``, a line of it is not
            valid JSON, or the MLflow run cannot be fetched.

    Example:
        >>> load_run("no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RunReadError: Run folder 'no/such/folder' does not exist.
    """
    text = os.fspath(source)
    if text.startswith(MLFLOW_PREFIX):
        return _load_mlflow(text, text[len(MLFLOW_PREFIX) :], tracking_uri=tracking_uri, materialize=materialize)
    run_dir = Path(text)
    if (run_dir / "files" / "neuronmap" / "metrics.jsonl").is_file():  # a W&B (offline) run folder
        run_dir = run_dir / "files" / "neuronmap"
    if not run_dir.is_dir():
        raise RunReadError(f"Run folder {text!r} does not exist; pass a LocalReporter run folder or mlflow:<run_id>.")
    if not (run_dir / "metrics.jsonl").is_file():
        raise RunReadError(
            f"{text!r} is not a NeuronMap run folder: it has no metrics.jsonl "
            f"(found: {sorted(p.name for p in run_dir.iterdir())[:10]})."
        )
    try:
        frame = read_history(run_dir)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as err:
        raise RunReadError(f"Cannot read {run_dir / 'metrics.jsonl'}: {type(err).__name__}: {err}") from err
    return LoadedRun(text, frame, run_dir)


def _load_mlflow(source: str, run_id: str, *, tracking_uri: str | None, materialize: bool = False) -> LoadedRun:
    from neuronmap._imports import MLFLOW_AVAILABLE

    MLFLOW_AVAILABLE.require("Reading an MLflow run")
    from mlflow.tracking import MlflowClient

    if not run_id:
        raise RunReadError(f"{source!r} names no run; expected mlflow:<run_id>.")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri=uri)
    try:
        with bounded_http(READ_RETRIES, READ_TIMEOUT_S):
            run = client.get_run(run_id)
            mirrored = _mirrored(client, run_id, materialize=materialize)
            if mirrored is not None:  # the full record NeuronMap wrote beside the headline scalars
                folder, temp = mirrored
                if materialize:
                    return LoadedRun(source, read_history(folder), folder)
                try:  # only the metrics were needed: the download goes now (a long-running service reads often)
                    return LoadedRun(source, read_history(folder), None)
                finally:
                    shutil.rmtree(temp, ignore_errors=True)
            translate = run.data.tags.get(LAYOUT_TAG) == LAYOUT
            rows: list[list[object]] = []
            for key in sorted(run.data.metrics):
                name = history_key_of(key) if translate else key
                for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
                    rows.append(_row(name, int(m.step), float(m.value)))
    except Exception as err:  # MLflow raises its own MlflowException and OSError subclasses
        raise RunReadError(
            f"Cannot read MLflow run {run_id!r} from tracking URI {uri or '(MLflow default ./mlruns)'!r}: "
            + " ".join(str(err).split())
        ) from err
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return LoadedRun(source, frame, None)


def _mirrored(client: Any, run_id: str, *, materialize: bool) -> tuple[Path, Path] | None:
    """The run's ``neuronmap/`` artifact folder downloaded (all of it, or the record only), if any,
    with the temporary folder that holds it."""
    import tempfile

    names = {Path(a.path).name for a in client.list_artifacts(run_id, "neuronmap")}
    if "metrics.jsonl" not in names:
        return None
    target = Path(tempfile.mkdtemp(prefix="neuronmap-run-"))
    try:
        if materialize:
            # readers keep the path (a report, a card): the download goes when the process ends
            atexit.register(shutil.rmtree, target, ignore_errors=True)
            return Path(client.download_artifacts(run_id, "neuronmap", str(target))), target
        return Path(client.download_artifacts(run_id, "neuronmap/metrics.jsonl", str(target))).parent, target
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _row(key: str, step: int, value: float) -> list[object]:
    try:
        analysis, layer, metric = split_key(key)
    except ValueError:
        analysis, layer, metric = "", "", key
    return [step, None, None, analysis, layer, metric, value if math.isfinite(value) else math.nan, key]
