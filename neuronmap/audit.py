"""A tamper-evident audit trail: one hash-chained JSON line per engine run, card and gate.

Each line of ``<run_dir>/audit.jsonl`` records who ran what where (UTC time, user, host, git
commit and dirty flag, package versions), on which inputs (config hash, probe-set fingerprint,
model parameter hash) and with which outcome (results hash and a short summary), plus the
previous line's hash. The line's own ``hash`` is SHA-256 over its canonical JSON, so changing,
removing, adding or moving any line breaks the chain (the construction of Haber & Stornetta
1991, "How to time-stamp a digital document"). With ``NEURONMAP_AUDIT_KEY`` set, every line also
carries an HMAC-SHA256 (RFC 2104) of its hash, so that a forger who rewrites the whole file
cannot re-sign it without the key.

What the chain alone cannot show: removing the *last* lines (compare the head hash with one kept
elsewhere: ``verify(path, head=...)``, ``neuronmap audit verify RUN --head HASH``).

Example:
    >>> import tempfile
    >>> import neuronmap as nm
    >>> from neuronmap.reporters import LocalReporter
    >>> from neuronmap.testing import tiny_mlp, tiny_probe
    >>> rep = LocalReporter(tempfile.mkdtemp(), run_name="audited", render_html=False)
    >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[rep])
    >>> trail = AuditTrail(rep.run_dir).attach(monitor)
    >>> _ = monitor.run(tiny_mlp(), step=0)
    >>> verify(trail.path).ok
    True
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import platform
import socket
import subprocess
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._audit_verify import GENESIS, AuditProblem, AuditVerification, entry_hash, verify
from neuronmap.errors import InvalidParameterError, NeuronMapError, ReporterWarning

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.engine import NeuronMap
    from neuronmap.gates import GateReport
    from neuronmap.results import Report

__all__ = ["AUDIT_FILE", "KEY_ENV", "AuditError", "AuditProblem", "AuditTrail", "AuditVerification",
           "canonical_json", "environment_info", "hash_json", "hash_model", "verify"]

AUDIT_FILE = "audit.jsonl"
KEY_ENV = "NEURONMAP_AUDIT_KEY"
_PACKAGES = ("neuronmap", "torch", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "jinja2",
             "transformers", "lightning", "mlflow")


class AuditError(NeuronMapError, RuntimeError):
    """The audit trail cannot be appended to (its last line is unreadable)."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) so equal content hashes equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str, allow_nan=True)


def hash_json(obj: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def hash_model(model: nn.Module) -> str:
    """SHA-256 over a model's ``state_dict``: names in sorted order, dtype, shape and raw bytes.

    Two models hash equally iff every parameter and buffer is bit-identical, whatever the
    insertion order of modules; the device does not matter (tensors are copied to the CPU).
    """
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"{name}|{type(tensor).__name__}|{tensor!r}".encode())
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _git(cwd: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """User, host, Python, platform, git commit/dirty flag (when in a repository) and package versions."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    versions: dict[str, str] = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {"user": user, "host": socket.gethostname(), "platform": platform.platform(),
            "git": _git(Path(cwd) if cwd else Path.cwd()), "versions": versions}


def _report_digest(report: Report) -> dict[str, Any]:
    return {
        "step": report.step, "epoch": report.epoch, "event": report.event,
        "metrics": report.to_dict()["metrics"],
        "status": {n: r.status for n, r in report.results.items()},
    }


class AuditTrail:
    """Append hash-chained JSON lines to ``<run_dir>/audit.jsonl``.

    Args:
        run_dir: The run folder (default: the folder of the monitor's first
            :class:`~neuronmap.reporters.LocalReporter`, resolved by :meth:`attach`).
        key: HMAC key; default the ``NEURONMAP_AUDIT_KEY`` environment variable (unset = no HMAC).
        hash_params: Hash the model's parameters on every engine run (turn off for very large models).
        log_artifact: After each engine run, send ``audit.jsonl`` to the monitor's other reporters.

    Example:
        >>> import tempfile
        >>> trail = AuditTrail(tempfile.mkdtemp())
        >>> entry = trail.append("note", summary={"text": "model frozen for release"})
        >>> entry["seq"], len(entry["hash"])
        (0, 64)
    """

    def __init__(self, run_dir: str | Path | None = None, *, key: str | bytes | None = None,
                 hash_params: bool = True, log_artifact: bool = True) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._key = key.encode() if isinstance(key, str) else key
        self.hash_params = hash_params
        self.log_artifact = log_artifact
        self._monitor: NeuronMap | None = None

    def __repr__(self) -> str:
        return f"AuditTrail(path={str(self.path) if self.run_dir else None!r}, signed={self.key is not None})"

    @property
    def key(self) -> bytes | None:
        if self._key is not None:
            return self._key
        env = os.environ.get(KEY_ENV)
        return env.encode() if env else None

    @property
    def path(self) -> Path:
        if self.run_dir is None:
            raise InvalidParameterError("This AuditTrail has no run folder; pass run_dir or attach() it to a monitor "
                                        "that has a LocalReporter.")
        return self.run_dir / AUDIT_FILE

    # ------------------------------------------------------------------ writing
    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one entry of ``kind`` with ``fields`` plus environment, chain and signature.

        Returns:
            The entry as written (with ``seq``, ``prev_hash``, ``hash`` and maybe ``hmac``).

        Raises:
            AuditError: The file's last line is not a valid entry, so the chain cannot continue.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"kind": kind, "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
        entry.update(environment_info())
        entry.update(fields)
        with self.path.open("a+", encoding="utf-8") as fh:
            _lock(fh)
            fh.seek(0)
            last = _last_entry(fh.read(), self.path)
            entry["seq"] = 0 if last is None else int(last["seq"]) + 1
            entry["prev_hash"] = GENESIS if last is None else last["hash"]
            entry["hash"] = entry_hash(entry)
            if self.key is not None:
                entry["hmac"] = hmac.new(self.key, entry["hash"].encode(), hashlib.sha256).hexdigest()
            fh.seek(0, os.SEEK_END)
            fh.write(canonical_json(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def record_run(self, report: Report, *, model: nn.Module | None = None,
                   config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record one engine run (what :meth:`attach` registers as a listener)."""
        digest = _report_digest(report)
        return self.append(
            "engine_run",
            step=report.step, epoch=report.epoch, event=report.event, run_timestamp=report.timestamp,
            config_hash=hash_json(config) if config is not None else None,
            probe_fingerprint=report.probe_fingerprint,
            model_hash=hash_model(model) if model is not None and self.hash_params else None,
            results_hash=hash_json(digest),
            summary={"metrics": len(digest["metrics"]), "analyses": digest["status"], "failed": dict(report.failed)},
        )

    def record_card(self, text: str, *, template: str, fmt: str, data: Mapping[str, Any] | None = None,
                    probe_fingerprint: str | None = None, output: str | None = None) -> dict[str, Any]:
        """Record a model-card rendering (hash of the rendered text and of the people-supplied data)."""
        return self.append(
            "card", config_hash=hash_json(dict(data or {})), probe_fingerprint=probe_fingerprint, model_hash=None,
            results_hash=hashlib.sha256(text.encode()).hexdigest(),
            summary={"template": template, "format": fmt, "output": output, "chars": len(text)},
        )

    def record_gate(self, report: GateReport) -> dict[str, Any]:
        """Record a gate evaluation (hash of the checks and of the full result)."""
        result = report.to_dict()
        return self.append(
            "gate", config_hash=hash_json([c["check"] for c in result["checks"]]),
            probe_fingerprint=None, model_hash=None, results_hash=hash_json(result),
            summary={"config": report.config_source, "baseline": report.baseline, "exit_code": report.exit_code,
                     **result["summary"]},
        )

    # ------------------------------------------------------------------ engine hook
    def attach(self, monitor: NeuronMap) -> AuditTrail:
        """Record every run of ``monitor`` (via ``monitor.add_listener``); returns ``self``."""
        if self.run_dir is None:
            from neuronmap.reporters.local import LocalReporter

            local = [r for r in monitor.reporters if isinstance(r, LocalReporter)]
            if not local:
                raise InvalidParameterError(
                    "AuditTrail.attach() needs a run folder: pass AuditTrail(run_dir) or give the monitor a "
                    f"LocalReporter; its reporters are {[type(r).__name__ for r in monitor.reporters]}."
                )
            self.run_dir = local[0].run_dir
        self._monitor = monitor
        monitor.add_listener(self)
        return self

    def __call__(self, report: Report, model: nn.Module) -> None:
        try:
            self.record_run(report, model=model, config=self._monitor.config() if self._monitor else None)
        except (OSError, AuditError) as err:
            if self._monitor is not None and self._monitor.strict:
                raise
            warnings.warn(f"NeuronMap could not append to the audit trail {self.path} ({err}); training goes on.",
                          ReporterWarning, stacklevel=3)
            return
        if self.log_artifact and self._monitor is not None:
            self._send_to_trackers()

    def _send_to_trackers(self) -> None:
        if self._monitor is None or self.run_dir is None:
            return
        for reporter in self._monitor.reporters:
            own = getattr(reporter, "run_dir", None)
            if own is not None and Path(own).resolve() == self.run_dir.resolve():
                continue
            try:
                reporter.log_artifact(self.path)
            except Exception as err:  # a tracker outage must not stop training
                warnings.warn(f"Reporter {reporter!r} could not store the audit trail ({err}).",
                              ReporterWarning, stacklevel=4)


def _lock(fh: Any) -> None:
    """Serialise appends from several processes (POSIX advisory lock; released on close)."""
    try:
        import fcntl
    except ImportError:  # Windows: appends from one process only
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _last_entry(text: str, path: Path) -> dict[str, Any] | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        last = json.loads(lines[-1])
        if not isinstance(last, dict) or "hash" not in last or "seq" not in last:
            raise ValueError("missing 'hash' or 'seq'")
    except ValueError as err:
        raise AuditError(
            f"Cannot append to {path}: its last line ({len(lines)}) is not a valid audit entry ({err}). "
            "Run `neuronmap audit verify` on the run folder."
        ) from err
    return last


def add_parser(sub: Any) -> None:
    """Register ``neuronmap audit verify`` on the CLI's subparsers."""
    from neuronmap._compliance_cli import add_audit_parser

    add_audit_parser(sub)
