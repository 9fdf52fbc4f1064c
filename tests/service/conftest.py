"""A served world, built once per session: two runs, job inputs, read and write tokens, one live server.

Slow parts are shared or overlapped: the run folders and job inputs are made once, one uvicorn
server serves every test that does not need its own configuration, and the Ray head (when
test_ray.py is collected) boots in the background from the session's start, while the runs
are built; so does the MLflow server when test_mlflow.py is collected.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _service.py, shared with the other service tests

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from _service import RAY_CLI, LiveServer, RayHead, make_models, make_runs

from neuronmap.client import Client
from neuronmap.service.app import ServiceConfig
from neuronmap.service.tokens import TokenStore


@pytest.fixture(scope="session", autouse=True)
def early_ray_head(request) -> Any:
    """A ``ray start --head`` launched at once (it takes seconds) if the Ray test will run."""
    wanted = any(item.path.name == "test_ray.py" for item in request.session.items)
    if not wanted or not RAY_CLI.exists():
        yield None
        return
    head = RayHead()
    try:
        yield head
    finally:
        head.stop()


class _Background:
    """Start a server's blocking ``start()`` on a thread; ``wait()`` returns it or raises its error."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="early-start", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.start()
        except BaseException as err:
            self.error = err

    def wait(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.server


@pytest.fixture(scope="session", autouse=True)
def early_mlflow_server(request, tmp_path_factory) -> Any:
    """A real ``mlflow server`` (tests/_servers.py) starting at once if test_mlflow.py will run."""
    wanted = any(item.path.name == "test_mlflow.py" for item in request.session.items)
    if not wanted or importlib.util.find_spec("mlflow") is None:
        yield None
        return
    from _servers import MLflowServer

    starting = _Background(MLflowServer(tmp_path_factory.mktemp("mlflow-server")))
    try:
        yield starting
    finally:
        starting.thread.join()
        starting.server.stop()


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("service")
    runs, models = root / "runs", root / "models"
    make_runs(runs)
    make_models(models)
    store = TokenStore(root / "tokens.json")
    return {"root": root, "runs": runs, "models": models, "tokens": root / "tokens.json",
            "read": store.create("read", name="reader"), "write": store.create("write", name="writer")}


@pytest.fixture(scope="session")
def server(world) -> Any:
    config = ServiceConfig(runs=world["runs"], tokens=world["tokens"], model_roots=[world["models"]], workers=1)
    with LiveServer(config) as live:
        yield live


@pytest.fixture()
def reader(server, world) -> Any:
    with Client(server.url, token=world["read"], retries=0, timeout=30) as client:
        yield client


@pytest.fixture()
def writer(server, world) -> Any:
    with Client(server.url, token=world["write"], retries=0, timeout=30) as client:
        yield client


@pytest.fixture()
def models(world) -> Path:
    return world["models"]
