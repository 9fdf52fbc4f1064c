"""Real tracker servers for tests: ``mlflow server`` on 127.0.0.1 at a free port.

Used by the reporter tests (tests/reporters/conftest.py) and the browser tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MLflowServer:
    """An ``mlflow server`` process on a sqlite store; stopped (or killed) by its pid.

    Args:
        root: Folder for ``mlflow.db``, ``artifacts/`` and ``server.log``.
        template: An empty, migrated ``mlflow.db`` to start from.
        port: Port to listen on (default: a free one). Restarts reuse it.
    """

    def __init__(self, root: Path, *, template: Path | None = None, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        if template is not None and not (root / "mlflow.db").exists():
            shutil.copy(template, root / "mlflow.db")

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until ``/health`` answers."""
        mlflow_cli = Path(sys.executable).parent / "mlflow"
        env = {
            **os.environ,
            # the job runner (a huey consumer) doubles the start-up time and is not needed here
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(mlflow_cli), "server", "--backend-store-uri", self.store_uri,
             "--artifacts-destination", str(self.root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
            start_new_session=True,  # its own process group: the uvicorn child goes down with it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout:g} s:\n{self.log_tail()}")

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, nothing answers."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); it then answers the requests that queued up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server abruptly (an outage)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server gracefully."""
        self._signal(signal.SIGTERM)

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
