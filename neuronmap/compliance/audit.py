"""A tamper-evident audit trail: one hash-chained JSON line per engine run, card and gate.

Each line of ``<run_dir>/audit.jsonl`` records who ran what where (UTC time, user, host, git
commit and dirty flag, package versions), on which inputs (config hash, probe-set fingerprint,
model parameter hash) and with which outcome (results hash and a short summary), plus the
previous line's hash. The line's own ``hash`` is SHA-256 over its canonical JSON, so changing,
removing, adding or moving any line breaks the chain (the construction of Haber & Stornetta
1991, "How to time-stamp a digital document"). With ``NEURONMAP_AUDIT_KEY`` set, every line also
carries an HMAC-SHA256 (RFC 2104) of its hash, so that a forger who rewrites the whole file
cannot re-sign it without the key; with a signing key (``signing_key=`` or
``NEURONMAP_AUDIT_SIGNING_KEY``, see :mod:`neuronmap.compliance._audit_sign`) every line also carries the
signer's Ed25519 signature and public key.

The numbers themselves live in other files, so each engine run also records a ``manifest`` of
the evidence files it wrote (metrics, reports, tables, figures, config.json, run.json; see
:mod:`neuronmap.compliance._audit_evidence`), and closing the monitor appends a ``run_end`` entry with
every file that changed since. :func:`verify` recomputes those digests and names each file
that no longer matches.

What the chain alone cannot show: removing the *last* lines (compare the head hash with one kept
elsewhere: ``verify(path, head=...)``, ``neuronmap audit verify RUN --head HASH``), and a forger
who appends a fresh, re-hashed entry recording edited files (needs a signature check with a
trusted key, or the head hash anchored elsewhere, to be caught).

Example:
    >>> import tempfile
    >>> import neuronmap as nm
    >>> from neuronmap.reporters import LocalReporter
    >>> from neuronmap.testing import tiny_mlp, tiny_probe
    >>> rep = LocalReporter(tempfile.mkdtemp(), run_name="audited", render_html=False)
    >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[rep])
    >>> trail = AuditTrail(rep.run_dir).attach(monitor)
    >>> _ = monitor.run(tiny_mlp(), step=0)
    >>> monitor.close()  # the reporters finish writing; the trail records the run's end
    >>> verify(trail.path).verified
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

from neuronmap.compliance._audit_evidence import (
    changed_digests,
    evidence_files,
    recorded_digests,
    step_files,
)
from neuronmap.compliance._audit_verify import (
    GENESIS,
    AuditProblem,
    AuditVerification,
    entry_hash,
    verify,
)
from neuronmap.errors import InvalidParameterError, NeuronMapError, ReporterWarning

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.compliance.gates import GateReport
    from neuronmap.engine import NeuronMap
    from neuronmap.results import Report

__all__ = ["AUDIT_FILE", "KEY_ENV", "AuditError", "AuditProblem", "AuditTrail", "AuditVerification",
           "canonical_json", "environment_info", "hash_json", "hash_model", "model_name", "verify"]

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


def model_name(model: Any) -> str | None:
    """The model's own name: a Hugging Face ``config._name_or_path`` (also inside a Lightning
    module), else ``name_or_path``, else the class name; ``None`` for no model."""
    if model is None or type(model).__name__.startswith("_"):  # the engine's stand-in for "no model"
        return None
    modules = model.modules() if hasattr(model, "modules") else [model]
    for module in modules:
        config = getattr(module, "config", None)
        name = getattr(config, "_name_or_path", None) or getattr(module, "name_or_path", None)
        if isinstance(name, str) and name.strip():
            return name.strip()
    return type(model).__name__


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
        signing_key: Ed25519 private key (key object or PEM path); default the path in
            ``NEURONMAP_AUDIT_SIGNING_KEY`` (unset = no signature). Needs ``neuronmap[audit]``.
        hash_params: Hash the model's parameters on every engine run (turn off for very large models).
        log_artifact: After each engine run, send ``audit.jsonl`` to the monitor's other reporters.
        manifests: Record digests of the run folder's evidence files in each entry (what
            :func:`verify` checks the files against).

    Example:
        >>> import tempfile
        >>> trail = AuditTrail(tempfile.mkdtemp())
        >>> entry = trail.append("note", summary={"text": "model frozen for release"})
        >>> entry["seq"], len(entry["hash"])
        (0, 64)
    """

    def __init__(self, run_dir: str | Path | None = None, *, key: str | bytes | None = None,
                 signing_key: Any = None, hash_params: bool = True, log_artifact: bool = True,
                 manifests: bool = True) -> None:
        from neuronmap.compliance._audit_sign import load_private_key

        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._key = key.encode() if isinstance(key, str) else key
        self._signing_key = load_private_key(signing_key)
        self.hash_params = hash_params
        self.log_artifact = log_artifact
        self.manifests = manifests
        self._monitor: NeuronMap | None = None
        self._last_step: int | None = None
        self._capture_hashes: dict[int, str] = {}  # step -> model hash taken at capture (background mode)
        self._ended = False

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
    def append(self, kind: str, *, files: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        """Append one entry of ``kind`` with ``fields`` plus environment, chain and signature.

        Args:
            kind: ``engine_run``, ``run_end``, ``card``, ``gate``, ``sign_off`` or your own.
            files: Run-folder paths whose digests go into the entry's ``manifest`` when they
                changed since the trail last recorded them.
            **fields: Anything JSON-able.

        Returns:
            The entry as written (with ``seq``, ``prev_hash``, ``hash`` and maybe ``hmac``,
            ``signer`` and ``signature``).

        Raises:
            AuditError: The file's last line is not a valid entry, so the chain cannot continue.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        entry: dict[str, Any] = {"kind": kind, "timestamp": now}
        entry.update(environment_info())
        entry.update(fields)
        with self.path.open("a+", encoding="utf-8") as fh:
            _lock(fh)
            fh.seek(0)
            text = fh.read()
            last = _last_entry(text, self.path)
            if files and self.manifests:
                # Digests are compared with what the file already records, read under the lock, so
                # every writer of this trail (monitor, card and gate commands) shares one state.
                recorded = {k: v for k, (v, _) in recorded_digests(_entries(text)).items()}
                entry["manifest"] = changed_digests(self.path.parent, files, recorded)
            entry["seq"] = 0 if last is None else int(last["seq"]) + 1
            entry["prev_hash"] = GENESIS if last is None else last["hash"]
            if self._signing_key is not None:
                from neuronmap.compliance._audit_sign import signer_info

                entry["signer"] = signer_info(self._signing_key)
            entry["hash"] = entry_hash(entry)
            if self.key is not None:
                entry["hmac"] = hmac.new(self.key, entry["hash"].encode(), hashlib.sha256).hexdigest()
            if self._signing_key is not None:
                from neuronmap.compliance._audit_sign import sign_hash

                entry["signature"] = sign_hash(self._signing_key, entry["hash"])
            fh.seek(0, os.SEEK_END)
            fh.write(canonical_json(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def record_run(self, report: Report, *, model: nn.Module | None = None,
                   config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record one engine run (what :meth:`attach` registers as a listener)."""
        digest = _report_digest(report)
        # Reporters write on background threads (neuronmap.reporters.publisher), so this run's
        # files may not all exist yet: the previous run's step is recorded again (its files are
        # complete by now), and run_end records whatever changed since, the final state.
        files = step_files(self.path.parent, report.step)
        if self._last_step is not None and self._last_step != report.step:
            files = sorted(set(files) | set(step_files(self.path.parent, self._last_step)))
        self._last_step = report.step
        self._ended = False
        return self.append(
            "engine_run", files=files,
            step=report.step, epoch=report.epoch, event=report.event, run_timestamp=report.timestamp,
            config_hash=hash_json(config) if config is not None else None,
            probe_fingerprint=report.probe_fingerprint,
            model_hash=self._capture_hashes.pop(report.step, None) or (
                hash_model(model) if model is not None and self.hash_params else None),
            model_name=model_name(model),
            results_hash=hash_json(digest),
            summary={"metrics": len(digest["metrics"]), "analyses": digest["status"], "failed": dict(report.failed)},
        )

    def record_card(self, text: str, *, template: str, fmt: str, data: Mapping[str, Any] | None = None,
                    probe_fingerprint: str | None = None, output: str | None = None) -> dict[str, Any]:
        """Record a model-card rendering (hash of the rendered text and of the people-supplied data).

        A card written inside the run folder (``texts/``) is added to the manifest, so that a
        re-rendered card is recorded instead of reported as an edited file.
        """
        inside = None
        if output is not None:
            try:
                inside = [Path(output).resolve().relative_to(self.path.parent.resolve()).as_posix()]
            except ValueError:
                inside = None
        return self.append(
            "card", files=inside, config_hash=hash_json(dict(data or {})), probe_fingerprint=probe_fingerprint,
            model_hash=None,
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

    def record_end(self, status: str = "FINISHED") -> dict[str, Any]:
        """Record the end of the run: status, and every evidence file changed since it was recorded
        (``run.json`` with its end time, ``history.csv``, cards under ``texts/``)."""
        return self.append("run_end", files=evidence_files(self.path.parent), status=str(status),
                           config_hash=None, probe_fingerprint=None, model_hash=None, results_hash=None,
                           summary={"status": str(status)})

    def record_sign_off(self, *, by: str, role: str | None = None, card_digest: str, statement: str | None = None,
                        template: str | None = None) -> dict[str, Any]:
        """Record that a responsible person signed off the card with digest ``card_digest``.

        The entry is chained after every evaluation it covers, so its position proves that it
        post-dates them; a strict Annex IV render accepts it only while the card's digest is
        unchanged (:func:`neuronmap.cards.card_digest`) and no evaluation came later.
        """
        return self.append("sign_off", by=by, role=role, card_digest=card_digest, statement=statement,
                           template=template, config_hash=None, probe_fingerprint=None, model_hash=None,
                           results_hash=card_digest, summary={"by": by, "role": role})

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

    def on_capture(self, model: nn.Module, step: int) -> None:
        """Hash the model when a background run captures it (the report completes steps later)."""
        if self.hash_params:
            self._capture_hashes[step] = hash_model(model)

    def __call__(self, report: Report, model: nn.Module) -> None:
        if self._monitor is not None:
            # the trail hashes the run's files, which the publisher writes on its own threads:
            # wait for the local run folder (a disk write), never for a tracker
            self._monitor.publisher.flush(only_local=True)
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

    def on_close(self, status: str = "FINISHED") -> None:
        """Called by :meth:`NeuronMap.close` after the reporters closed: append ``run_end`` (once
        per run: closing twice records nothing new)."""
        if self._ended:
            return
        self._ended = True
        try:
            self.record_end(status)
        except (OSError, AuditError) as err:
            warnings.warn(f"NeuronMap could not record the end of the run in {self.path} ({err}).",
                          ReporterWarning, stacklevel=3)

    def _send_to_trackers(self) -> None:
        if self._monitor is None or self.run_dir is None:
            return
        run_dir = self.run_dir.resolve()

        def holds_the_trail(reporter: Any) -> bool:
            own = getattr(reporter, "run_dir", None)
            return own is not None and Path(own).resolve() == run_dir

        # queued like every result: spooled when a tracker is down, never blocking training
        self._monitor.publisher.log_artifact(self.path, skip=holds_the_trail)


def _lock(fh: Any) -> None:
    """Serialise appends from several processes (POSIX advisory lock; released on close)."""
    try:
        import fcntl
    except ImportError:  # Windows: appends from one process only
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _entries(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


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
