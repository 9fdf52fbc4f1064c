"""Analysis jobs over HTTP: a tiny random-init BERT analysed by the local executor (worker processes)."""

from __future__ import annotations

import pandas as pd
import pytest
from _service import job_spec

from neuronmap.client import ClientError
from neuronmap.runs import read_history


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
    assert "neuronmap/activation_stats/encoder.layer.1/dead_fraction" in set(history["key"])
    assert any(j["id"] == job.id for j in reader.jobs())


@pytest.mark.parametrize(("changes", "message"), [
    ({"colour": 1}, r"Unknown key\(s\) \['colour'\]"),
    ({"trust_remote_code": True}, "'trust_remote_code' cannot be set by a request"),
    ({"out": "/tmp/elsewhere"}, "'out' is set by the server"),
    ({"model": "/etc"}, "outside the server's model roots"),
    ({"model": "../../.."}, "outside the server's model roots"),
    ({"probe": {"npz": "/etc/passwd"}}, r"'probe.npz' path '/etc/passwd' is outside"),
    ({"analyses": ["nope"]}, r"Unknown analysis 'nope'; known analyses: \["),
    ({"analyses": [{"name": "activation_stats", "args": {"bogus": 1}}]}, "bogus"),
    ({"layers": None}, "lacks the required key 'layers'"),
])
def test_bad_specs_are_422_with_a_clear_message(writer, changes, message) -> None:
    with pytest.raises(ClientError, match=message) as err:
        writer.submit_job(job_spec(**changes))
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
    job = writer.submit_job(job_spec(layers=["encoder.layr.0"]), run_name="job-fails").wait(timeout=120)
    assert job.status == "failed"
    assert "did you mean 'encoder.layer.0'" in job.record["error"]
    assert "Traceback" in job.logs()  # the log keeps the detail; the record keeps one line
    assert reader.health()["status"] == "ok"
    assert reader.run("alpha").summary["status"] == "FINISHED"


def test_cancel_a_running_and_a_queued_job(writer) -> None:
    running = writer.submit_job(job_spec(), run_name="job-cancel-running")
    queued = writer.submit_job(job_spec(), run_name="job-cancel-queued")  # one worker: waits its turn
    assert queued.refresh().status == "queued"
    assert queued.cancel().status == "cancelled"
    import time

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
