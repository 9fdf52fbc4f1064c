"""``neuronmap serve --mlflow URI``: MLflow runs browsed beside run folders, against a real ``mlflow server``.

One NeuronMap monitor logs to NeuronMap's MLflowReporter (a real ``mlflow server`` on
127.0.0.1) and to a LocalReporter at once, so the served MLflow run has a local twin with the
same History; the service is started with ``--mlflow`` as users start it.
"""

from __future__ import annotations

import os

import httpx
import pandas as pd
import pytest
from _service import ServeProcess

import neuronmap as nm
from neuronmap.client import Client, ClientError
from neuronmap.reporters import LocalReporter
from neuronmap.reporters.local import read_history
from neuronmap.testing import tiny_mlp, tiny_probe

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def mlflow_world(world, tmp_path_factory, early_mlflow_server):
    from neuronmap.reporters import MLflowReporter

    root = tmp_path_factory.mktemp("mlflow-world")
    tracking = early_mlflow_server.wait()  # started with the session (conftest.py)
    try:
        tracker = MLflowReporter(tracking_uri=tracking.uri, experiment_name="service", run_name="served")
        local = LocalReporter(root / "runs", run_name="twin", render_html=False)
        monitor = nm.NeuronMap(tiny_probe(n=40), layers="net.*", analyses=[nm.ActivationStats()],
                               reporters=[local, tracker])
        for step in (0, 5):
            monitor.run(tiny_mlp(seed=step), step=step)
        monitor.close()
        run_id = tracker.run_id
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        args = ["--runs", str(root / "runs"), "--tokens", str(world["tokens"]), "--mlflow", tracking.uri]
        with ServeProcess(args, env=env, log=root / "serve.log") as live:
            yield {"url": live.url, "run": f"mlflow:{run_id}", "twin": root / "runs" / "twin",
                   "tracking": tracking}
    finally:
        tracking.stop()


@pytest.fixture()
def client(mlflow_world, world):
    with Client(mlflow_world["url"], token=world["read"], retries=0, timeout=60) as c:
        yield c


def test_mlflow_runs_are_listed_beside_local_runs(client, mlflow_world) -> None:
    runs = {r["id"]: r for r in client.runs()}
    assert set(runs) == {"twin", mlflow_world["run"]}
    served = runs[mlflow_world["run"]]
    assert (served["source"], served["status"]) == ("mlflow", "FINISHED")
    assert runs["twin"]["source"] == "local"
    assert client.run(mlflow_world["run"]).summary["id"] == mlflow_world["run"]
    assert [r["id"] for r in client.runs(query=mlflow_world["run"][7:15])] == [mlflow_world["run"]]


def test_an_mlflow_history_is_the_history_neuronmap_logged(client, mlflow_world) -> None:
    served = client.run(mlflow_world["run"]).history
    pd.testing.assert_frame_equal(served, read_history(mlflow_world["twin"]))
    assert "neuronmap/activation_stats/net.0/dead_fraction" in set(served["key"])
    one = client.history(mlflow_world["run"], layer="net.0", metric="dead_fraction")
    assert list(one["step"]) == [0, 5] and set(one["key"]) == {"neuronmap/activation_stats/net.0/dead_fraction"}


def test_compare_an_mlflow_run_with_its_local_twin(client, mlflow_world) -> None:
    result = client.compare("twin", mlflow_world["run"])
    assert result["metrics"] and all(m["delta"] in (0.0, None) for m in result["metrics"])
    assert result["only_a"] == [] and result["only_b"] == []
    assert not result["cka"]["available"] and "activations" in result["cka"]["note"]


def test_mlflow_run_pages_and_unknown_ids(client, mlflow_world, world, server) -> None:
    auth = {"Authorization": f"Bearer {world['read']}"}
    page = httpx.get(f"{mlflow_world['url']}/ui/runs/{mlflow_world['run']}", headers=auth)
    assert page.status_code == 200 and mlflow_world["run"] in page.text
    with pytest.raises(ClientError) as err:
        client.run("mlflow:0123456789abcdef0123456789abcdef").history  # noqa: B018 - the request is the test
    assert err.value.status in (404, 422) and "0123456789abcdef" in str(err.value)
    with pytest.raises(ClientError, match="started without --mlflow") as err:  # the session server has no --mlflow
        Client(server.url, token=world["read"], retries=0).run(mlflow_world["run"]).history  # noqa: B018
    assert err.value.status == 404
