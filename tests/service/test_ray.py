"""The Ray executor against a real local Ray head (``ray start --head`` on this machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _service import LiveServer, free_port, job_spec

from neuronmap.client import Client
from neuronmap.service.app import ServiceConfig

ray = pytest.importorskip("ray")
RAY_CLI = Path(sys.executable).parent / "ray"


@pytest.fixture(scope="module")
def ray_head():
    if not RAY_CLI.exists():
        pytest.skip("the ray command is not installed beside this Python")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="nm-ray-", dir="/tmp"))  # Ray's socket paths must stay short
    proc = subprocess.Popen(
        [str(RAY_CLI), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=80000000",
         f"--temp-dir={temp}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed:\n{out[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # every process `ray start` left in its session
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(1.0)
        shutil.rmtree(temp, ignore_errors=True)


def test_jobs_run_on_the_ray_cluster(ray_head, world) -> None:
    config = ServiceConfig(runs=world["runs"], tokens=world["tokens"], model_roots=[world["models"]],
                           executor="ray", ray_address=ray_head)
    with LiveServer(config) as live, Client(live.url, token=world["write"], retries=0) as client:
        assert client.health()["executor"] == "ray"
        ok = client.submit_job(job_spec(), run_name="ray-ok")
        bad = client.submit_job(job_spec(layers=["encoder.layr.0"]), run_name="ray-fails")
        assert ok.wait(timeout=180).status == "succeeded", ok.logs()
        assert ok.record["executor"] == "ray"
        assert "neuronmap/activation_stats/encoder.layer.0/dead_fraction" in set(client.run("ray-ok").history["key"])
        assert bad.wait(timeout=180).status == "failed"
        assert "did you mean 'encoder.layer.0'" in bad.record["error"]
        assert client.health()["status"] == "ok"
