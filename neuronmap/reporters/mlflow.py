"""MLflow reporter: metrics, params, figures, tables and model cards into an MLflow run.

Every call goes through an ``MlflowClient`` with an explicit run id (never the fluent
globals), so logging into someone else's run, a Lightning ``MLFlowLogger``'s run for
instance, neither starts nor ends runs behind its owner's back. Layout in the run's
artifacts::

    neuronmap/config.json                      the full configuration (params are truncated)
    neuronmap/figures/<step>/<analysis>/<name>.png
    neuronmap/tables/<step>/<analysis>/<name>.json   (MLflow table, shown in the UI)
    neuronmap/tables/<step>/<analysis>/<name>.csv
    neuronmap/texts/<name>.md                  model cards and other text
    neuronmap/artifacts/...                    files from log_artifact
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._headline import Scalars, check_scalars
from neuronmap._imports import MLFLOW_AVAILABLE
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters._mlflow_http import bounded_http
from neuronmap.reporters._present import RunMirror
from neuronmap.reporters._spool import is_retryable
from neuronmap.reporters.base import BaseReporter, RunStatus, render_png
from neuronmap.runs.folder import DEFAULT_ROOT, new_run_name, safe_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from neuronmap.results import Report

__all__ = ["MLflowReporter"]

_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: MLflow error codes that mean "this payload is wrong", not "the server is away".
_REJECTED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"})


class MLflowReporter(BaseReporter):
    """Log into an MLflow run: the active one, a given one, a Lightning logger's, or a new one.

    Which run: ``run`` when given (a run id, an ``mlflow`` ``Run``/``ActiveRun``, or a
    Lightning ``MLFlowLogger``); else the active fluent run (``mlflow.active_run()`` when
    this reporter is created, if ``tracking_uri`` is not given or names the same store);
    else a new run, started on first use, in ``experiment_name`` at ``tracking_uri``, else
    at ``MLFLOW_TRACKING_URI`` / ``mlflow.set_tracking_uri``, else in an embedded store
    ``sqlite:///<root>/mlflow.db`` (default ``neuronmap-runs/mlflow.db``, shared by the project's
    runs so that ``mlflow ui`` compares them over time).

    Args:
        run: The run to log into (see above).
        tracking_uri: Tracking server or store URI.
        experiment_name: Experiment of a new run.
        run_name: Name of a new run.
        tags: Tags of a new run.
        run_dir: Folder of this run's embedded store (default: the project's shared store,
            ``<root>/mlflow.db``).
        request_retries: HTTP retries per request while this reporter talks to the server.
            MLflow's default (7 retries with exponential back-off) stalls training for
            minutes when the server is down; NeuronMap spools and retries on its own
            schedule instead. An ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` set by the user wins.
        request_timeout: HTTP timeout in seconds (``MLFLOW_HTTP_REQUEST_TIMEOUT`` wins).
        root: Folder of the project's embedded store ``mlflow.db`` (and ``mlartifacts/``),
            shared by every run that does not name a ``run_dir``.
        scalars: ``"headline"`` (default): charts get each analysis' headline metrics;
            ``"all"``: every statistic as a scalar too. The full record is always in the
            artifact ``neuronmap/metrics.jsonl``.

    Only a run this reporter started is ended by :meth:`close`.

    Raises:
        InvalidParameterError: ``run`` is none of the accepted kinds.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import MLflowReporter
        >>> rep = MLflowReporter(run_dir=tempfile.mkdtemp())  # doctest: +SKIP
        >>> rep.log_metrics({"neuronmap/probing/encoder.layer.5/accuracy": 0.91}, step=100)  # doctest: +SKIP
        >>> rep.close()  # doctest: +SKIP
    """

    name = "mlflow"

    def __init__(
        self,
        run: str | Any | None = None,
        *,
        tracking_uri: str | None = None,
        experiment_name: str = "neuronmap",
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_dir: str | Path | None = None,
        request_retries: int = 1,
        request_timeout: float = 10.0,
        root: str | Path = DEFAULT_ROOT,
        scalars: Scalars = "headline",
    ) -> None:
        mlflow = MLFLOW_AVAILABLE.require("MLflowReporter")
        self.scalars = check_scalars(scalars, "MLflowReporter")
        if not isinstance(request_retries, int) or request_retries < 0:
            raise InvalidParameterError(f"request_retries must be an int >= 0; got {request_retries!r}.")
        self._logger: Any | None = None
        self._run_id: str | None = None
        self._tracking_uri = tracking_uri
        if isinstance(run, str):
            self._run_id = run
        elif hasattr(run, "experiment") and hasattr(run, "run_id"):
            self._logger = run
        elif run is not None and hasattr(getattr(run, "info", None), "run_id"):
            self._run_id = run.info.run_id
        elif run is not None:
            raise InvalidParameterError(
                "run must be a run id, an mlflow Run/ActiveRun or a Lightning MLFlowLogger "
                f"(with .experiment and .run_id); got {type(run).__name__}."
            )
        else:
            active = mlflow.active_run()
            if active is not None and tracking_uri in (None, mlflow.get_tracking_uri()):
                self._run_id = active.info.run_id
        if self._run_id is not None and self._tracking_uri is None:
            self._tracking_uri = mlflow.get_tracking_uri()
        self._owns_run = False
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.run_dir = Path(run_dir) if run_dir is not None else Path(root) / new_run_name()
        #: Folder of the embedded store: ``run_dir`` when given, else ``root`` (shared by a project's
        #: runs, so ``mlflow ui`` compares them).
        self.store_dir = Path(run_dir) if run_dir is not None else Path(root)
        self._run_dir_given = run_dir is not None
        self._mirror: RunMirror | None = None
        self.request_retries = request_retries
        self.request_timeout = request_timeout
        self._client: MlflowClient | None = None
        self._params: dict[str, str] = {}
        self._config: dict[str, Any] = {}

    def __repr__(self) -> str:
        where = self._run_id or ("new run" if self._logger is None else "logger's run")
        return f"MLflowReporter({where!r})"

    def _limits(self) -> AbstractContextManager[None]:
        """Bound MLflow's HTTP retries for the duration of one call (user settings win)."""
        return bounded_http(self.request_retries, self.request_timeout)

    @property
    def tracking_uri(self) -> str:
        """Where a new run goes (argument, then the user's MLflow setting, then the embedded store)."""
        if self._tracking_uri is not None:
            return self._tracking_uri
        import mlflow
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

        if is_tracking_uri_set():
            return mlflow.get_tracking_uri()
        return f"sqlite:///{self.store_dir.resolve() / 'mlflow.db'}"

    def _ensure(self) -> tuple[MlflowClient, str]:
        """The client and run id, starting the run on first use (so a server outage at start is spooled)."""
        if self._client is not None and self._run_id is not None:
            return self._client, self._run_id
        from mlflow import MlflowClient

        if self._logger is not None:
            client, run_id = self._logger.experiment, self._logger.run_id
        elif self._run_id is not None:
            client, run_id = MlflowClient(self._tracking_uri), self._run_id
        else:
            uri = self.tracking_uri
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                location = None
                if uri.startswith("sqlite:///") and self._tracking_uri is None:
                    self.store_dir.mkdir(parents=True, exist_ok=True)
                    location = (self.store_dir.resolve() / "mlartifacts").as_uri()
                experiment_id = client.create_experiment(self.experiment_name, artifact_location=location)
            tags = {"neuronmap.version": _version(), **self.tags}
            run_id = client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
            self._owns_run = True
        self._client, self._run_id = client, run_id
        return client, run_id

    @property
    def client(self) -> MlflowClient:
        """The ``MlflowClient`` (starts the run if needed)."""
        with self._limits():
            return self._ensure()[0]

    @property
    def run_id(self) -> str:
        """Id of the run this reporter logs into (starts it if needed)."""
        with self._limits():
            return self._ensure()[1]

    def replay_spec(self) -> dict[str, Any]:
        """How to rebuild this reporter in another process (``neuronmap replay``); no network I/O."""
        uri = self._tracking_uri
        if uri is None and self._logger is not None:
            uri = getattr(self._logger, "_tracking_uri", None)
        return {
            "run_id": self._run_id,
            "tracking_uri": uri if uri is not None else self.tracking_uri,
            "owns_run": self._owns_run or self._run_id is None,
            "experiment_name": self.experiment_name,
            "run_name": self.run_name,
            "tags": self.tags,
            "run_dir": str(self.run_dir),
        }

    @classmethod
    def from_replay_spec(cls, spec: Mapping[str, Any]) -> MLflowReporter:
        """The reporter :meth:`replay_spec` described: same run (or a new one if it was never created).

        A run this reporter had started is ended by :meth:`close`, as it would have been.
        """
        if spec.get("run_id"):
            reporter = cls(str(spec["run_id"]), tracking_uri=spec.get("tracking_uri"))
            reporter._owns_run = bool(spec.get("owns_run"))
            return reporter
        return cls(tracking_uri=spec.get("tracking_uri"), experiment_name=str(spec.get("experiment_name", "neuronmap")),
                   run_name=spec.get("run_name"), tags=spec.get("tags") or {}, run_dir=spec.get("run_dir"))

    def is_retryable(self, error: BaseException) -> bool:
        """Retry outages and server errors; not payloads MLflow refused (bad key, changed param)."""
        if getattr(error, "error_code", None) in _REJECTED:
            return False
        return is_retryable(error)

    # ------------------------------------------------------------------ Reporter API
    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """Log ``metrics`` at ``step`` with ``log_batch`` (MLflow's 1000-per-request limit respected).

        ``timestamp`` is when the values were produced (default: now). MLflow stores a metric
        once per (key, value, timestamp, step), so a retried call with the same timestamp,
        after an answer was lost, adds no duplicate row.
        """
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        millis = int((time.time() if timestamp is None else timestamp) * 1000)
        batch = [Metric(mlflow_key(k), float(v), millis, int(step)) for k, v in metrics.items()]
        with self._limits():
            client, run_id = self._ensure()
            for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH], synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flattened params, values truncated to MLflow's limit; the full config goes to ``neuronmap/config.json``.

        MLflow refuses to change a logged param, so keys already logged keep their first
        value as params; the JSON artifact always holds the latest.
        """
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        flat = {mlflow_key(k): _truncate(v, MAX_PARAM_VAL_LENGTH) for k, v in _flatten(params).items()}
        new = [Param(k, v) for k, v in flat.items() if k not in self._params]
        with self._limits():
            client, run_id = self._ensure()
            for start in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(run_id, params=new[start : start + MAX_PARAMS_TAGS_PER_BATCH], synchronous=True)
            self._params.update({p.key: p.value for p in new})
            self._config = {**self._config, **params}
            client.log_text(run_id, json.dumps(self._config, indent=2, default=str, sort_keys=True),
                            "neuronmap/config.json")

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        """Log ``figure`` as ``neuronmap/figures/<step>/<name>.png``."""
        import tempfile

        target = Path(f"neuronmap/figures/{int(step)}/{safe_name(name)}.png")
        # drawn once for every reporter and never concurrently with another thread (render_png)
        png = render_png(figure)
        with self._limits(), tempfile.TemporaryDirectory() as tmp:
            client, run_id = self._ensure()
            local = Path(tmp) / target.name
            local.write_bytes(png)
            client.log_artifact(run_id, str(local), target.parent.as_posix())

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        """Log a CSV artifact, then an MLflow table (``.json``) of the same data.

        The CSV goes first: uploading it again on a replay is harmless, while ``log_table``
        appends to an existing table, so it must be the last step.
        """
        import pandas as pd

        frame = dataframe if isinstance(dataframe.index, pd.RangeIndex) else dataframe.reset_index()
        base = f"neuronmap/tables/{int(step)}/{safe_name(name)}"
        with self._limits():
            client, run_id = self._ensure()
            client.log_text(run_id, frame.to_csv(index=False), f"{base}.csv")
            client.log_table(run_id, frame, f"{base}.json")

    def log_text(self, name: str, text: str) -> None:
        """Log ``text`` as ``neuronmap/texts/<name>`` (``.md`` unless ``name`` has a suffix)."""
        path = safe_name(name) if Path(name).suffix else f"{safe_name(name)}.md"
        with self._limits():
            client, run_id = self._ensure()
            client.log_text(run_id, text, f"neuronmap/texts/{path}")

    def log_artifact(self, path: str | Path) -> None:
        """Upload a file or folder under ``neuronmap/artifacts/``."""
        src = Path(path)
        if not src.exists():
            raise InvalidParameterError(f"log_artifact got a path that does not exist: {str(src)!r}.")
        with self._limits():
            client, run_id = self._ensure()
            if src.is_dir():
                client.log_artifacts(run_id, str(src), f"neuronmap/artifacts/{src.name}")
            else:
                client.log_artifact(run_id, str(src), "neuronmap/artifacts")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (values truncated to MLflow's limit)."""
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        batch = [RunTag(mlflow_key(k), _truncate(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        with self._limits():
            client, run_id = self._ensure()
            client.log_batch(run_id, tags=batch, synchronous=True)

    def log_report(self, report: Report) -> None:
        """Log a report the way MLflow's UI reads best.

        Headline scalars keyed ``neuronmap/<analysis>/<metric>/<layer>`` (MLflow files charts
        under the prefix before the last ``/``: one section per metric, a chart per layer;
        ``scalars="all"`` adds every CI and p-value), the figures and tables, the full record
        as ``neuronmap/metrics.jsonl`` and ``neuronmap/reports/<step>.json`` (what
        ``neuronmap gate|report mlflow:ID`` read), and the findings as the run description
        (``mlflow.note.content``) and tags.
        """
        from neuronmap._headline import tracker_metrics
        from neuronmap.reporters._present import finding_tags, findings_markdown
        from neuronmap.reporters.base import report_time

        metrics = tracker_metrics(report, scalars=self.scalars)
        if metrics:
            self.log_metrics(metrics, report.step, timestamp=report_time(report))
        for analysis, result in report.results.items():
            for fig_name, figure in result.figures.items():
                self.log_figure(f"{analysis}/{fig_name}", figure, report.step)
            for table_name, table in result.tables.items():
                self.log_table(f"{analysis}/{table_name}", table, report.step)
        jsonl, report_json = self.mirror.add(report)
        with self._limits():
            client, run_id = self._ensure()
            client.log_artifact(run_id, str(jsonl), "neuronmap")
            client.log_artifact(run_id, str(report_json), "neuronmap/reports")
        self.set_tags({**finding_tags(report), "mlflow.note.content": findings_markdown(report)})

    @property
    def mirror(self) -> RunMirror:
        """The run-folder copy behind ``neuronmap/metrics.jsonl`` and ``report.html`` (a temp folder)."""
        if self._mirror is None:
            import tempfile

            self._mirror = RunMirror(tempfile.mkdtemp(prefix="neuronmap-mlflow-"))
        return self._mirror

    def where(self) -> str:
        """Where to look: the run, and the ``mlflow ui`` command for an embedded store."""
        uri = self._tracking_uri or self.tracking_uri
        run = f"MLflow run {self._run_id}" if self._run_id else "MLflow"
        if uri.startswith("sqlite:///"):
            return f"{run}: mlflow ui --backend-store-uri {uri}"
        return f"{run} at {uri}"

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Upload ``neuronmap/report.html``, then end the run with ``status`` if this reporter started it.

        A borrowed run is left to its owner.
        """
        if status not in _STATUSES:
            raise InvalidParameterError(f"status must be one of {list(_STATUSES)}; got {status!r}.")
        if self._mirror is not None:
            self._mirror.set_json("run.json", {"status": status, "run_id": self._run_id or ""})
            self._mirror.set_json("config.json", self._config)
            page = self._mirror.render()
            with self._limits():
                client, run_id = self._ensure()
                client.log_artifact(run_id, str(page), "neuronmap")
        if not self._owns_run:
            return
        with self._limits():
            client, run_id = self._ensure()
            client.set_terminated(run_id, status=status)


def mlflow_key(key: str) -> str:
    """An MLflow-valid metric/param/tag key.

    MLflow accepts alphanumerics, ``_ - . /`` and spaces (``:`` too, except on Windows), at
    most 250 characters, and no path that normalises to another name. Other characters
    become ``_``; empty, ``.`` and ``..`` segments are dropped; a key that has to be cut
    keeps a hash suffix so two long keys stay distinct.

    Example:
        >>> mlflow_key("neuronmap/bias/layer[3]/dp@0.5")
        'neuronmap/bias/layer_3_/dp_0.5'
    """
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    clean = re.sub(r"[^\w.\- /]", "_", str(key))
    clean = "/".join(p for p in clean.split("/") if p not in ("", ".", "..")) or "_"
    if len(clean) > MAX_ENTITY_KEY_LENGTH:
        digest = hashlib.sha1(str(key).encode()).hexdigest()[:8]
        clean = f"{clean[: MAX_ENTITY_KEY_LENGTH - 9]}-{digest}"
    return clean


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _truncate(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neuronmap")
    except PackageNotFoundError:
        return "unknown"
