"""Where analysis jobs run: a local pool of worker processes, or a Ray cluster.

* :class:`LocalExecutor` (default): at most ``workers`` jobs at once on the server's machine,
  each in a child process (``python -m neuronmap.service._job_runner``) so that ``cancel`` stops
  it at once and a crash in an analysis cannot take the server down. Progress and logs stream
  from the child's output.
* :class:`RayExecutor` (``neuronmap serve --executor ray``): each job is a Ray task on the
  cluster at ``RAY_ADDRESS`` (or ``--ray-address``), so a platform team can fan many
  checkpoint/model analyses out over many machines. Workers must see the runs root and the model
  roots at the same paths as the server (a shared volume); their log arrives when the task ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from neuronmap.errors import InvalidParameterError, MissingDependencyError
from neuronmap.service._job_runner import PROGRESS, RESULT

if TYPE_CHECKING:
    from neuronmap.service.jobs import JobManager

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor"]


class Executor(Protocol):
    """What the job manager needs from a backend."""

    name: str

    def submit(self, job_id: str, job_dir: Path, manager: JobManager) -> None:
        """Start (or queue) the job; report through ``manager.update`` / ``append_log``."""

    def cancel(self, job_id: str) -> bool:
        """Stop the job; ``True`` if it is already stopped, ``False`` if it will report later."""

    def shutdown(self) -> None:
        """Stop every job and release resources."""


class LocalExecutor:
    """Jobs in child processes on this machine, ``workers`` at a time.

    After :meth:`warm_up` one child process waits ready (``_job_runner --standby``: the
    analysis stack already imported), so a job starts without seconds of imports; each job
    takes it and a new one is started when the job ends (not before: on a small machine its
    imports would slow the job down).

    Example:
        >>> executor = LocalExecutor(workers=1)
        >>> executor.name
        'local'
        >>> executor.shutdown()
    """

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise InvalidParameterError(
                f"The 'workers' parameter of LocalExecutor must be >= 1. Got {workers} instead.")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neuronmap-job")
        self._futures: dict[str, Future[None]] = {}
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._standby: subprocess.Popen[str] | None = None
        self._warm = False
        self._closed = False

    def warm_up(self) -> None:
        """Keep a job process ready from now on (the job manager calls this when jobs are enabled)."""
        with self._lock:
            self._warm = True
            if self._standby is None and not self._closed:
                self._standby = _spawn()

    def submit(self, job_id: str, job_dir: Path, manager: JobManager) -> None:
        self._futures[job_id] = self._pool.submit(self._run, job_id, job_dir, manager)

    def _start(self, job_dir: Path) -> subprocess.Popen[str]:
        """The standby process given this job (or a fresh one if it is gone); call with the lock held."""
        proc, self._standby = self._standby, None
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(f"{job_dir}\n")
                proc.stdin.close()
                return proc
            except OSError:  # it died while waiting: start one the slow way
                _stop(proc)
        proc = _spawn()
        assert proc.stdin is not None
        proc.stdin.write(f"{job_dir}\n")
        proc.stdin.close()
        return proc

    def _run(self, job_id: str, job_dir: Path, manager: JobManager) -> None:
        with self._lock:
            if job_id in self._cancelled:
                return
            proc = self._start(job_dir)
            self._procs[job_id] = proc
        try:
            self._follow(job_id, proc, manager)
        finally:
            with self._lock:
                if self._warm and self._standby is None and not self._closed:
                    self._standby = _spawn()  # after the job, so that it does not compete with it for CPU

    def _follow(self, job_id: str, proc: subprocess.Popen[str], manager: JobManager) -> None:
        manager.update(job_id, status="running", progress=0.01, message="starting")
        last_error = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                _, fraction, *stage = line.split(" ", 2)
                manager.update(job_id, progress=float(fraction), message=(stage[0].strip() if stage else ""))
            elif line.startswith(RESULT):
                manager.append_log(job_id, line)
            else:
                manager.append_log(job_id, line)
                if line.startswith("error: "):
                    last_error = line[len("error: "):].strip()
        code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
            cancelled = job_id in self._cancelled
        if cancelled:
            manager.update(job_id, status="cancelled", message="cancelled")
        elif code == 0:
            manager.update(job_id, status="succeeded", progress=1.0, message="done")
        else:
            manager.update(job_id, status="failed", message="failed",
                           error=last_error or f"the job process exited with status {code}")

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            self._cancelled.add(job_id)
            proc = self._procs.get(job_id)
        future = self._futures.get(job_id)
        if proc is None:
            if future is not None:
                future.cancel()
            return True  # queued: it will never start
        _stop(proc)
        return False

    def shutdown(self) -> None:
        with self._lock:
            procs = list(self._procs.items())
            self._cancelled.update(self._futures)
            self._closed = True
            standby, self._standby = self._standby, None
        for _, proc in procs:
            _stop(proc)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if standby is not None:
            _stop(standby, grace=2.0)


def _spawn() -> subprocess.Popen[str]:
    """A job process in standby: it imports the analysis stack, then reads its job folder from stdin."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "neuronmap.service._job_runner", "--standby"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,  # its own process group: cancel stops it and whatever it started
    )


def _stop(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the job's process group, SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RayExecutor:
    """Jobs as Ray tasks on a cluster.

    Args:
        address: The cluster (``host:port`` of a head started with ``ray start --head``); default
            ``RAY_ADDRESS``. ``"local"`` starts a private single-node cluster.
        num_cpus: CPUs each job reserves on its worker.

    Example:
        >>> RayExecutor.name
        'ray'
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError as err:
            raise MissingDependencyError(
                "The Ray executor needs 'ray'. Install it with: pip install \"neuronmap[service]\""
            ) from err
        address = address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise InvalidParameterError("The Ray executor needs a cluster address: set RAY_ADDRESS or pass "
                                        "--ray-address host:port (a head started with `ray start --head`).")
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        from neuronmap.service._job_runner import run_job

        self._remote = ray.remote(num_cpus=num_cpus, max_retries=0)(run_job)
        self._refs: dict[str, Any] = {}
        self._managers: dict[str, JobManager] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._watch, name="neuronmap-ray-watch", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, job_dir: Path, manager: JobManager) -> None:
        ref = self._remote.remote(str(job_dir.resolve()))
        with self._lock:
            self._refs[job_id] = ref
            self._managers[job_id] = manager
        manager.update(job_id, status="running", progress=0.05, message="submitted to the Ray cluster")
        self._wake.set()

    def _watch(self) -> None:
        ray = self._ray
        while not self._stopping:
            with self._lock:
                pending = {ref: job_id for job_id, ref in self._refs.items()}
            if not pending:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                self._finish(pending[ref], ref)

    def _finish(self, job_id: str, ref: Any) -> None:
        ray = self._ray
        with self._lock:
            self._refs.pop(job_id, None)
            manager = self._managers.pop(job_id)
            cancelled = job_id in self._cancelled
        try:
            result = ray.get(ref)
        except Exception as err:  # Ray wraps the task's error (RayTaskError, TaskCancelledError …)
            if cancelled:
                manager.update(job_id, status="cancelled", message="cancelled")
                return
            cause = getattr(err, "cause", None) or err
            text = str(cause.args[0]) if getattr(cause, "args", None) else str(cause)
            first, _, log = text.partition("\n--- log ---\n")
            manager.append_log(job_id, log or text)
            manager.update(job_id, status="failed", message="failed", error=first.strip()[:500])
            return
        manager.append_log(job_id, result["log"])
        manager.update(job_id, status="succeeded", progress=1.0, message="done")

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            ref = self._refs.get(job_id)
            self._cancelled.add(job_id)
        if ref is None:
            return True
        self._ray.cancel(ref, force=True)
        return False

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        with self._lock:
            refs = list(self._refs.values())
        for ref in refs:
            self._ray.cancel(ref, force=True)
        self._thread.join(timeout=5)


def make_executor(kind: str, *, workers: int = 1, ray_address: str | None = None) -> Executor:
    """``local`` or ``ray``, with a message listing both for anything else."""
    if kind == "local":
        return LocalExecutor(workers=workers)
    if kind == "ray":
        return RayExecutor(ray_address)
    raise InvalidParameterError(f"The executor must be one of ['local', 'ray']; got {kind!r}.")
