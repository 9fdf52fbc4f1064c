"""Analysis jobs over HTTP, run by the local executor (worker processes).

Jobs run on saved activations, so the job process imports torch and NeuronMap but not
transformers: what these tests check is the service's part (queueing, progress, logs, failure,
cancel, results as a run folder). Loading a model folder is ``neuronmap analyze``'s own code
(``run_config``, which the job process calls), tested with a tiny BERT in tests/test_analyze.py;
the job spec's ``model`` path is checked here (confined to the model roots, 422 otherwise).
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from _service import job_spec, model_job_spec

from neuronmap.client import ClientError
from neuronmap.reporters.local import read_history


def test_a_job_runs_and_its_results_are_an_ordinary_run(writer, reader, world) -> None:
    job = writer.submit_job(job_spec(), run_name="job-ok")
    assert job.status == "queued" and job.record["run"] == "job-ok"
    job.wait(timeout=120)
    assert job.status == "succeeded", job.logs()
    assert job.record["progress"] == 1.0 and job.record["started"] and job.record["ended"]
    assert "NEURONMAP-RESULT" in job.logs()
    assert reader.run("job-ok").summary["status"] == "FINISHED"
    history = reader.run("job-ok").history
    pd.testing.assert_frame_equal(history, read_history(world["runs"] / "job-ok"))
    assert "neuronmap/activation_stats/net.2/dead_fraction" in set(history["key"])
    assert any(j["id"] == job.id for j in reader.jobs())


@pytest.mark.parametrize(("spec", "message"), [
    (job_spec(colour=1), r"Unknown key\(s\) \['colour'\]"),
    (model_job_spec(trust_remote_code=True), "'trust_remote_code' cannot be set by a request"),
    (job_spec(out="/tmp/elsewhere"), "'out' is set by the server"),
    (model_job_spec(model="/etc"), "outside the server's model roots"),
    (model_job_spec(model="../../.."), "outside the server's model roots"),
    (job_spec(activations="/etc/passwd"), r"'activations' path '/etc/passwd' is outside"),
    (job_spec(probe={"npz": "/etc/passwd"}), r"'probe.npz' path '/etc/passwd' is outside"),
    (job_spec(analyses=["nope"]), r"Unknown analysis 'nope'; known analyses: \["),
    (job_spec(analyses=[{"name": "activation_stats", "args": {"bogus": 1}}]), "bogus"),
    (model_job_spec(layers=None), "lacks the required key 'layers'"),
    ({**job_spec(), "model": "tiny-bert"}, "exactly one of 'model' or 'activations'"),
])
def test_bad_specs_are_422_with_a_clear_message(writer, spec, message) -> None:
    with pytest.raises(ClientError, match=message) as err:
        writer.submit_job(spec)
    assert err.value.status == 422


def test_bad_yaml_and_existing_run_names_are_refused(writer) -> None:
    with pytest.raises(ClientError, match="not valid YAML") as err:
        writer.submit_job("model: [unclosed\n")
    assert err.value.status == 422
    with pytest.raises(ClientError, match="A run named 'alpha' already exists") as err:
        writer.submit_job(job_spec(), run_name="alpha")
    assert err.value.status == 409
    with pytest.raises(ClientError, match="No run named") as err:
        writer.submit_job(job_spec(), run_name="../escape")
    assert err.value.status == 404


def test_a_failing_job_is_recorded_and_the_server_stays_healthy(writer, reader) -> None:
    # activations of 60 examples against a probe set of 24: the run starts, then fails
    job = writer.submit_job(job_spec(probe={"npz": "probe.npz"}), run_name="job-fails").wait(timeout=120)
    assert job.status == "failed"
    assert "ProbeSetError" in job.record["error"] and "hold 60 examples but the probe set has 24" in job.record["error"]
    assert "Traceback" in job.logs()  # the log keeps the detail; the record keeps one line
    assert reader.health()["status"] == "ok"
    assert reader.run("alpha").summary["status"] == "FINISHED"


def test_cancel_a_running_and_a_queued_job(writer) -> None:
    slow = job_spec(analyses=[{"name": "probing", "args": {"cv": 3, "n_permutations": 100000}}])
    running = writer.submit_job(slow, run_name="job-cancel-running")
    queued = writer.submit_job(job_spec(), run_name="job-cancel-queued")  # one worker: waits its turn
    assert queued.refresh().status == "queued"
    assert queued.cancel().status == "cancelled"
    deadline = time.monotonic() + 60
    while running.refresh().status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.status == "running"
    running.cancel()
    assert running.wait(timeout=30).status == "cancelled"
    assert queued.wait(timeout=5).status == "cancelled"
    assert running.cancel().status == "cancelled"  # cancelling a finished job changes nothing
    with pytest.raises(ClientError, match="No job with id 'nope'") as err:
        writer.job("nope")
    assert err.value.status == 404


def test_a_job_process_waits_ready_and_stops_with_the_executor(server) -> None:
    from neuronmap.service.executors import LocalExecutor

    standby = server.state.jobs.executor._standby  # the session server has model roots: jobs are enabled
    assert standby is not None and standby.poll() is None
    executor = LocalExecutor(workers=1)
    executor.warm_up()
    process = executor._standby
    assert process is not None and process.poll() is None
    executor.shutdown()
    assert process.poll() is not None and executor._standby is None
