"""Analysis jobs: the spec of ``neuronmap analyze``, submitted over HTTP, run by an executor.

A job is a folder ``<runs root>/.jobs/<id>/`` holding ``job.json`` (the record below),
``spec.yaml`` (the validated spec with absolute paths, as ``neuronmap analyze`` reads it) and
``log.txt``. Its results land as an ordinary run folder ``<runs root>/<run_name>``, so
everything that reads runs (gates, cards, the dashboard) reads a job's results unchanged.

What a request may not do: write outside the runs root (``out`` is set by the server), read a
model or probe file outside the configured model roots, reuse an existing run's folder, or
enable ``trust_remote_code`` (``neuronmap analyze`` has no such key, and the loader never sets
it).

States: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``. A job that was
queued or running when the server stopped is marked ``failed`` at the next start.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from neuronmap.errors import InvalidParameterError, NeuronMapError
from neuronmap.service._problems import Problem
from neuronmap.service._runs import check_name

if TYPE_CHECKING:
    from neuronmap.service.executors import Executor

__all__ = ["JOBS_DIR", "Job", "JobManager", "JobState", "validate_spec"]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES = ("succeeded", "failed", "cancelled")
JOBS_DIR = ".jobs"
_MAX_LOG_BYTES = 2_000_000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    """The record of one analysis job (round-trips through ``job.json``)."""

    id: str
    #: ``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``.
    status: JobState
    #: The executor that runs it (``local`` or ``ray``).
    executor: str
    #: Name of the run folder the results land in.
    run: str
    created: str = field(default_factory=_now)
    started: str | None = None
    ended: str | None = None
    #: 0 … 1, with a word on the current stage in :attr:`message`.
    progress: float = 0.0
    message: str = "queued"
    #: Why it failed (one line, no traceback), when it did.
    error: str | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_in_roots(value: Any, what: str, roots: list[Path]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidParameterError(f"'{what}' must be a non-empty path string; got {value!r}.")
    if not roots:
        raise Problem(422, "This server has no model roots, so it runs no jobs on models or probe files; start "
                           "it with `neuronmap serve --model-root DIR`.", slug="jobs-disabled")
    raw = Path(value)
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    chosen = next((c for c in candidates if c.exists()), candidates[0]).resolve()
    if not any(chosen.is_relative_to(root.resolve()) for root in roots):
        raise Problem(422, f"'{what}' path {value!r} is outside the server's model roots "
                           f"{[str(r) for r in roots]}; requests may only name files inside them.",
                      slug="path-not-allowed")
    return str(chosen)


def validate_spec(spec: Any, *, runs_root: Path, model_roots: list[Path], run_name: str) -> dict[str, Any]:
    """Check a job spec and return it with absolute, confined paths and the server's ``out``.

    Raises:
        Problem: 422 with what is wrong, what was received and what is allowed.
    """
    if isinstance(spec, str):
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as err:
            raise Problem(422, f"The job spec is not valid YAML: {err}", slug="invalid-spec") from err
    if not isinstance(spec, Mapping):
        raise Problem(422, f"The job spec must be a mapping like the YAML of `neuronmap analyze`; got "
                           f"{type(spec).__name__}.", slug="invalid-spec")
    spec = dict(spec)
    if "trust_remote_code" in spec:
        raise Problem(422, "'trust_remote_code' cannot be set by a request: this server never runs code shipped "
                           "with a model.", slug="invalid-spec")
    if "out" in spec:
        raise Problem(422, f"'out' is set by the server (the runs root); got {spec['out']!r}.", slug="invalid-spec")
    for key in ("model", "activations"):
        if key in spec:
            spec[key] = _resolve_in_roots(spec[key], key, model_roots)
    probe = spec.get("probe")
    if isinstance(probe, str):
        spec["probe"] = _resolve_in_roots(probe, "probe", model_roots)
    elif isinstance(probe, Mapping):
        probe = dict(probe)
        for key in ("csv", "texts", "npz"):
            if key in probe:
                probe[key] = _resolve_in_roots(probe[key], f"probe.{key}", model_roots)
        spec["probe"] = probe
    spec["run_name"] = run_name
    spec["out"] = str(runs_root.resolve())
    return spec


def _import_spec_checks() -> None:
    """Import what :meth:`JobManager._check_with_analyze` needs (the analyses: seconds), ahead of
    the first submission, which would otherwise wait for it."""
    import importlib

    importlib.import_module("neuronmap.cli.config")
    importlib.import_module("neuronmap.analyses")


class JobManager:
    """Keeps job records on disk and hands jobs to an executor.

    Args:
        runs_root: Where run folders (and ``.jobs/``) live.
        model_roots: Folders that model and probe paths must lie in.
        executor: What runs the jobs (:class:`~neuronmap.service.executors.LocalExecutor` or
            :class:`~neuronmap.service.executors.RayExecutor`).
    """

    def __init__(self, runs_root: Path, model_roots: list[Path], executor: Executor) -> None:
        self.runs_root = Path(runs_root)
        self.model_roots = [Path(r) for r in model_roots]
        self.executor = executor
        self.dir = self.runs_root / JOBS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        for path in sorted(self.dir.glob("*/job.json")):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            if job.status not in FINAL_STATES:
                job.status, job.error, job.ended = "failed", "the server stopped while the job was pending", _now()
                job.message = "failed"
            self._jobs[job.id] = job
            self._save(job)
        if self.model_roots:  # jobs are possible: have a job process ready, and the spec checks imported
            warm_up = getattr(executor, "warm_up", None)
            if warm_up is not None:
                warm_up()
            threading.Thread(target=_import_spec_checks, name="neuronmap-job-imports", daemon=True).start()

    # ------------------------------------------------------------------ records
    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def _save(self, job: Job) -> None:
        path = self.job_dir(job.id) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.to_dict(), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise Problem(404, f"No job with id {job_id!r}.", slug="job-not-found")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: (j.created, j.id), reverse=True)

    def update(self, job_id: str, **changes: Any) -> Job:
        """Change fields of a job record and persist it (executors report through this)."""
        with self._lock:
            job = self._jobs[job_id]
            if job.status in FINAL_STATES and "status" in changes:
                return job  # a late report from a killed worker must not revive a finished job
            for name, value in changes.items():
                setattr(job, name, value)
            if changes.get("status") == "running" and job.started is None:
                job.started = _now()
            if changes.get("status") in FINAL_STATES:
                job.ended = _now()
            self._save(job)
            return job

    def append_log(self, job_id: str, text: str) -> None:
        path = self.job_dir(job_id) / "log.txt"
        with self._lock:
            size = path.stat().st_size if path.exists() else 0
            if size < _MAX_LOG_BYTES:
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(text[: _MAX_LOG_BYTES - size])

    def logs(self, job_id: str, offset: int = 0) -> tuple[str, int]:
        """Log text from a character offset, and the offset to ask from next time."""
        self.get(job_id)
        path = self.job_dir(job_id) / "log.txt"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return text[offset:], len(text)

    # ------------------------------------------------------------------ actions
    def submit(self, spec: Any, *, run_name: str | None = None) -> Job:
        """Validate a spec, record the job and queue it; the run folder is ``run_name`` or ``job-<id>``."""
        job_id = secrets.token_hex(6)
        name = check_name(str(run_name or (spec.get("run_name") if isinstance(spec, Mapping) else None)
                              or f"job-{job_id}"))
        if isinstance(spec, Mapping):
            spec = {k: v for k, v in spec.items() if k != "run_name"}
        if (self.runs_root / name).exists():
            raise Problem(409, f"A run named {name!r} already exists; choose another run_name.", slug="run-exists")
        config = validate_spec(spec, runs_root=self.runs_root, model_roots=self.model_roots, run_name=name)
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True)
        spec_path = job_dir / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        try:
            self._check_with_analyze(spec_path)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        job = Job(id=job_id, status="queued", executor=self.executor.name, run=name)
        with self._lock:
            self._jobs[job_id] = job
            self._save(job)
            accepted = replace(job)  # the record as accepted; a free worker may start it at once
        self.executor.submit(job_id, job_dir, self)
        return accepted

    @staticmethod
    def _check_with_analyze(spec_path: Path) -> None:
        """The checks of ``neuronmap analyze`` itself, so a bad spec is a 422 now, not a failed job later."""
        from neuronmap.cli.config import build_analyses, load_config

        try:
            config = load_config(spec_path)
            build_analyses(config["analyses"])
        except Problem:
            raise
        except (NeuronMapError, TypeError) as err:
            raise Problem(422, f"Invalid job spec: {err}", slug="invalid-spec") from err

    def cancel(self, job_id: str) -> Job:
        """Ask the executor to stop a job; a finished job is returned unchanged."""
        job = self.get(job_id)
        if job.status in FINAL_STATES:
            return job
        self.update(job_id, cancel_requested=True, message="cancelling")
        if self.executor.cancel(job_id):
            self.update(job_id, status="cancelled", message="cancelled")
        return self.get(job_id)

    def close(self) -> None:
        self.executor.shutdown()
