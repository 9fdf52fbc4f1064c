"""Fixtures for the reporter tests: a real ``mlflow server`` and a private W&B folder.

The MLflow server is the one users run (``<venv>/bin/mlflow server``), on 127.0.0.1 at a
free port, with a sqlite store and an artifact folder in a temp dir. It starts once per
session (it takes several seconds); the outage test starts its own so it can kill it.
Creating a sqlite store runs MLflow's schema migrations (seconds of CPU), so one empty,
migrated store is made per session and copied wherever a fresh store is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _servers import MLflowServer


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite tracking store with MLflow's schema, made once per session."""
    pytest.importorskip("mlflow")
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    store.engine.dispose()
    return root / "mlflow.db"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Iterator[MLflowServer]:
    """One MLflow tracking server for the whole test session."""
    server = MLflowServer(tmp_path_factory.mktemp("mlflow-server"), template=mlflow_store_template)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_mlflow_server(tmp_path: Path, mlflow_store_template: Path) -> Iterator[Callable[[], MLflowServer]]:
    """A factory of private servers (for tests that kill them); each is stopped at teardown."""
    servers: list[MLflowServer] = []

    def make() -> MLflowServer:
        servers.append(MLflowServer(tmp_path / f"server-{len(servers)}", template=mlflow_store_template))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()
