"""A real ``neuronmap serve`` app on uvicorn at a free 127.0.0.1 port, the runs it serves, a Ray head."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import neuronmap as nm
from neuronmap.audit import AuditTrail
from neuronmap.capture import capture_activations
from neuronmap.reporters import LocalReporter
from neuronmap.service.app import ServiceConfig, create_app
from neuronmap.testing import tiny_mlp, tiny_probe, tiny_text_probe

RAY_CLI = Path(sys.executable).parent / "ray"
#: Ray's switch for a single-machine "cluster" on the loopback: with it off, ``ray start`` keeps
#: ``--node-ip-address 127.0.0.1`` (otherwise replaced by the machine's routable address) and
#: every Ray server listens on 127.0.0.1 only. Named for Windows/macOS, honoured on Linux too.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving :func:`create_app` in a thread; ``with LiveServer(cfg) as s: s.url``."""

    def __init__(self, config: ServiceConfig) -> None:
        import uvicorn

        self.port = free_port()
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.neuronmap

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServeProcess:
    """``neuronmap serve`` as users start it (the installed command, in its own process group)."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "neuronmap"), "serve", "--host", "127.0.0.1", "--port",
                 str(self.port), "--log-level", "warning", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServeProcess:
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"neuronmap serve did not answer:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class RayHead:
    """``ray start --head`` on 127.0.0.1 with one CPU and no dashboard, started in the background.

    ``address()`` waits for it; ``stop()`` ends every process of its session (``ray start``
    detaches its daemons, so they are found by session id, never by name).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="nm-ray-", dir="/tmp"))  # Ray's socket paths must stay short
        self.proc = subprocess.Popen(
            [str(RAY_CLI), "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
             "--object-store-memory=80000000", f"--temp-dir={self.temp}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, **RAY_LOOPBACK_ENV},
        )
        self.log = ""

    def address(self, timeout: float = 120.0) -> str:
        if self.proc.returncode is None:
            self.log, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"ray start failed ({self.proc.returncode}):\n{self.log[-2000:]}")
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """Every live process of the head's session (gcs_server, raylet, agents, workers)."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == self.proc.pid and fields[0] != "Z":
                    out.append(int(entry.name))
        return out

    def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 1.5  # Ray's daemons linger on SIGTERM; the temp folder goes anyway
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)


def listening_addresses(pids: list[int]) -> set[str]:
    """``host:port`` of every TCP socket these processes listen on (read from /proc, Linux)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = cols[1].split(":")
            raw = bytes.fromhex(host_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            host = socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)
            found.add(f"{host.removeprefix('::ffff:')}:{int(port_hex, 16)}")
    return found


def make_runs(root: Path) -> None:
    """Two runs of a tiny MLP (steps 0 and 10) with stored activations; ``alpha`` has an audit trail.

    Built once per session (the ``world`` fixture); the statistics are sized for speed (19
    permutations, 49 bootstrap resamples): the tests read what the runs hold, not their power.
    """
    probe = tiny_probe(n=60)
    for name, seed in (("alpha", 0), ("beta", 1)):
        reporter = LocalReporter(root, run_name=name, render_html=False)
        monitor = nm.NeuronMap(probe, layers="net.*",
                               analyses=[nm.ActivationStats(), nm.Probing(cv=3, n_permutations=19, n_resamples=49)],
                               reporters=[reporter])
        if name == "alpha":
            AuditTrail(reporter.run_dir).attach(monitor)
        model = None
        for step in (0, 10):
            model = tiny_mlp(seed=seed + step)
            monitor.run(model, step=step)
        monitor.close()
        capture_activations(model, probe, layers="net.*", progress=False).save(
            reporter.run_dir / "activations" / "10.npz")


def make_models(root: Path) -> None:
    """What jobs may read: saved activations of a tiny MLP with their probe set, and a probe set of
    another size (a job that pairs them fails once it runs)."""
    probe = tiny_probe(n=60)
    probe.save(root / "mlp-probe.npz")
    capture_activations(tiny_mlp(seed=3), probe, layers="net.*", progress=False).save(root / "mlp-acts.npz")
    tiny_text_probe(n=24).save(root / "probe.npz")


def job_spec(**changes: object) -> dict[str, object]:
    """A job on saved activations (the job process imports torch and NeuronMap, not transformers)."""
    spec: dict[str, object] = {"activations": "mlp-acts.npz", "probe": {"npz": "mlp-probe.npz"},
                               "analyses": ["activation_stats"]}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def model_job_spec(**changes: object) -> dict[str, object]:
    """A job spec naming a model folder (validation tests only: no model is loaded)."""
    spec: dict[str, object] = {"model": "tiny-bert", "probe": {"npz": "probe.npz"}, "layers": ["encoder.layer.*"],
                               "analyses": ["activation_stats"], "batch_size": 8}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}
