"""The Ray executor against a real local Ray head (``ray start --head`` on 127.0.0.1).

The head is started by the session's ``early_ray_head`` fixture (conftest.py), so that it boots
while the run folders are built; it has one CPU, no dashboard and no extra worker nodes. The
server is ``neuronmap serve --executor ray`` in its own process, given the cluster through
``RAY_ADDRESS`` as in a deployment, so no Ray state lives in the test process.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from _service import RAY_LOOPBACK_ENV, ServeProcess, job_spec, listening_addresses

from neuronmap.client import Client
from neuronmap.reporters.local import read_history

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_head(early_ray_head):
    if early_ray_head is None:
        pytest.skip("the ray command is not installed beside this Python")
    try:
        address = early_ray_head.address()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield early_ray_head, address
    early_ray_head.stop()  # not at the session's end: the rest of the suite gets the CPU back


def test_jobs_run_on_the_ray_cluster(ray_head, world, tmp_path) -> None:
    _, address = ray_head
    runs = tmp_path / "runs"
    env = {**os.environ, **RAY_LOOPBACK_ENV, "RAY_ADDRESS": address}
    args = ["--runs", str(runs), "--tokens", str(world["tokens"]), "--model-root", str(world["models"]),
            "--executor", "ray"]
    with ServeProcess(args, env=env, log=tmp_path / "serve.log") as live, \
            Client(live.url, token=world["write"], retries=0) as client:
        assert client.health()["executor"] == "ray"
        ok = client.submit_job(job_spec(), run_name="ray-ok")
        bad = client.submit_job(job_spec(probe={"npz": "probe.npz"}), run_name="ray-fails")
        assert ok.wait(timeout=180).status == "succeeded", ok.logs()
        assert ok.record["executor"] == "ray"
        history = client.run("ray-ok").history
        pd.testing.assert_frame_equal(history, read_history(runs / "ray-ok"))
        assert "neuronmap/activation_stats/net.0/dead_fraction" in set(history["key"])
        assert bad.wait(timeout=180).status == "failed"
        assert "hold 60 examples but the probe set has 24" in bad.record["error"]
        assert "Traceback" in bad.logs()
        assert client.health()["status"] == "ok"


def test_the_ray_head_listens_on_the_loopback_only(ray_head) -> None:
    # after the jobs: the worker that ran them (and its gRPC server) is still up
    head, address = ray_head
    addresses = listening_addresses(head.pids())
    assert address in addresses  # the GCS
    assert len(addresses) >= 3, addresses  # GCS, raylet, object manager, agents, workers
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
