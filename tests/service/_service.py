"""A real ``neuronmap serve`` app on uvicorn at a free 127.0.0.1 port, plus the runs it serves."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import neuronmap as nm
from neuronmap.capture import capture_activations
from neuronmap.compliance.audit import AuditTrail
from neuronmap.reporters import LocalReporter
from neuronmap.service.app import ServiceConfig, create_app
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_probe, tiny_text_probe


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


def make_runs(root: Path) -> None:
    """Two runs of a tiny MLP (steps 0 and 10) with stored activations; ``alpha`` has an audit trail."""
    probe = tiny_probe(n=60)
    for name, seed in (("alpha", 0), ("beta", 1)):
        reporter = LocalReporter(root, run_name=name, render_html=False)
        monitor = nm.NeuronMap(probe, layers="net.*",
                               analyses=[nm.ActivationStats(), nm.Probing(cv=3, n_permutations=99, n_bootstrap=99)],
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
    """A random-init tiny BERT (save_pretrained) and a saved text probe set."""
    tiny_bert(layers=2).save_pretrained(root / "tiny-bert")
    tiny_text_probe(n=24).save(root / "probe.npz")


def job_spec(**changes: object) -> dict[str, object]:
    spec: dict[str, object] = {"model": "tiny-bert", "probe": {"npz": "probe.npz"}, "layers": ["encoder.layer.*"],
                               "analyses": ["activation_stats"], "batch_size": 8}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}
