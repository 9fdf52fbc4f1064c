"""MLflowReporter against a real ``mlflow server``, read back through ``MlflowClient``."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import neuronmap as nm
from neuronmap._headline import tracker_metrics
from neuronmap.errors import InvalidParameterError
from neuronmap.testing import check_reporter, tiny_mlp, tiny_probe

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    _validate_metric_name,
)

from neuronmap.reporters import MLflowReporter  # noqa: E402
from neuronmap.reporters.mlflow import mlflow_key  # noqa: E402

CARD = "# Model card\n\n| layer | CKA |\n|---|---|\n| net.0 | 0.97 |\n\nÉtat: ✓\n"


def _reporter(server, **kwargs) -> MLflowReporter:
    return MLflowReporter(tracking_uri=server.uri, experiment_name=f"test-{uuid.uuid4().hex[:8]}", **kwargs)


def _figure() -> Figure:
    fig = Figure(figsize=(3, 2), dpi=100)
    fig.add_subplot().plot([0, 1, 2], [1, 0, 1])
    return fig


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------------- keys (no server)
@pytest.mark.parametrize(
    "key",
    ["neuronmap/probing/encoder.layer.5/accuracy", "neuronmap/bias/layer[3]/dp@0.5", "neuronmap//x/../m",
     "neuronmap/a/ü-layer/m", "/leading/slash", "x" * 400],
)
def test_mlflow_key_passes_mlflows_own_validator(key: str) -> None:
    _validate_metric_name(mlflow_key(key))  # raises MlflowException on an invalid name


def test_mlflow_key_keeps_valid_keys_and_long_keys_distinct() -> None:
    assert mlflow_key("neuronmap/probing/encoder.layer.5/accuracy") == "neuronmap/probing/encoder.layer.5/accuracy"
    a, b = mlflow_key("k" * 300 + "a"), mlflow_key("k" * 300 + "b")
    assert a != b
    assert len(a) == len(b) == 250


def test_refusals_are_not_retried_but_outages_are(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INTERNAL_ERROR,
        INVALID_PARAMETER_VALUE,
        TEMPORARILY_UNAVAILABLE,
    )

    rep = MLflowReporter(run_dir=tmp_path)
    assert not rep.is_retryable(MlflowException("Changing param values is not allowed", INVALID_PARAMETER_VALUE))
    assert rep.is_retryable(MlflowException("API request failed: Max retries exceeded", INTERNAL_ERROR))
    assert rep.is_retryable(MlflowException("busy", TEMPORARILY_UNAVAILABLE))
    assert rep.is_retryable(ConnectionError("refused"))


def test_rejects_an_unknown_run_kind() -> None:
    with pytest.raises(InvalidParameterError, match=r"run must be a run id.*got int"):
        MLflowReporter(42)


def test_embedded_sqlite_store_under_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store_template: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(mlflow_store_template, tmp_path / "mlflow.db")  # skips the schema migrations
    rep = MLflowReporter(run_dir=tmp_path)
    assert rep.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    rep.log_metrics({"neuronmap/a/l/m": 0.25}, step=3)
    rep.log_text("model_card", CARD)
    rep.close()
    client = MlflowClient(rep.tracking_uri)
    assert _history(client, rep.run_id, "neuronmap/a/l/m") == [(3, 0.25)]
    assert (tmp_path / "mlflow.db").is_file()
    cards = list((tmp_path / "mlartifacts").rglob("model_card.md"))
    assert [c.read_text(encoding="utf-8") for c in cards] == [CARD]


# ---------------------------------------------------------------------- against the server
@pytest.mark.integration
def test_metrics_figures_tables_card_and_params_read_back(
    mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MlflowClient.load_table searches runs through the fluent API, i.e. the global tracking URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    rep = _reporter(mlflow_server, run_name="readback")
    key, ci, nan_key = ("neuronmap/probing/encoder.layer.5/accuracy",
                        "neuronmap/probing/encoder.layer.5/accuracy_ci_low",
                        "neuronmap/stats/net.0/dead_fraction")
    for step, value in ((0, 0.5), (10, 0.75), (5, 0.625)):  # out of order on purpose
        rep.log_metrics({key: value, ci: value - 0.1, nan_key: math.nan}, step=step)
    table = pd.DataFrame({"cka": [0.97, 0.81], "note": ["ok", "drift"]},
                         index=pd.Index(["net.0", "net.2"], name="layer"))
    rep.log_figure("similarity/cka_heatmap", _figure(), step=10)
    rep.log_table("similarity/cka", table, step=10)
    rep.log_text("model_card", CARD)
    config = {"layers": ["net.0", "net.2"], "schedule": {"every_n_steps": 10}, "long": "v" * 7000}
    rep.log_params(config)
    rep.set_tags({"neuronmap.probe": "tiny"})
    artifact = tmp_path / "gate.json"
    artifact.write_text('{"passed": true}')
    rep.log_artifact(artifact)
    rep.close()

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(rep.run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, rep.run_id, key) == [(0, 0.5), (5, 0.625), (10, 0.75)]
    assert [s for s, _ in _history(client, rep.run_id, ci)] == [0, 5, 10]
    assert all(math.isnan(v) for _, v in _history(client, rep.run_id, nan_key))

    local = Path(client.download_artifacts(rep.run_id, "neuronmap", str(tmp_path / "dl")))
    png = (local / "figures/10/similarity/cka_heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(local / "tables/10/similarity/cka.csv")
    pd.testing.assert_frame_equal(back, table.reset_index())
    loaded = client.load_table(run.info.experiment_id, "neuronmap/tables/10/similarity/cka.json", run_ids=[rep.run_id])
    assert loaded[["layer", "cka", "note"]].to_dict("records") == table.reset_index().to_dict("records")
    assert (local / "texts/model_card.md").read_text(encoding="utf-8") == CARD
    assert json.loads((local / "config.json").read_text())["long"] == "v" * 7000
    assert json.loads((local / "artifacts/gate.json").read_text()) == {"passed": True}

    params = run.data.params
    assert params["schedule.every_n_steps"] == "10"
    assert len(params["long"]) == MAX_PARAM_VAL_LENGTH and params["long"].endswith("...")
    assert run.data.tags["neuronmap.probe"] == "tiny"


@pytest.mark.integration
def test_more_metrics_than_one_batch_all_arrive(mlflow_server) -> None:
    rep = _reporter(mlflow_server)
    n = 2 * MAX_METRICS_PER_BATCH + 7
    rep.log_metrics({f"neuronmap/many/layer.{i}/m": float(i) for i in range(n)}, step=1)
    rep.close()
    metrics = MlflowClient(mlflow_server.uri).get_run(rep.run_id).data.metrics
    assert len(metrics) == n
    assert metrics[f"neuronmap/many/layer.{n - 1}/m"] == n - 1


@pytest.mark.integration
def test_conformance(mlflow_server) -> None:
    check_reporter(_reporter(mlflow_server))


@pytest.mark.integration
def test_a_run_that_raises_ends_failed(mlflow_server) -> None:
    rep = _reporter(mlflow_server)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[rep])
    with pytest.raises(RuntimeError, match="diverged"):
        try:
            report = monitor.run(tiny_mlp(), step=7, epoch=0)
            raise RuntimeError("loss diverged")
        except BaseException:
            monitor.close("FAILED")
            raise
    run = MlflowClient(mlflow_server.uri).get_run(rep.run_id)
    assert run.info.status == "FAILED"
    assert set(tracker_metrics(report)) <= set(run.data.metrics)  # the headline scalars
    assert run.data.params["reduce"] == "mean"


@pytest.mark.integration
def test_logs_into_a_given_run_and_leaves_it_open(mlflow_server) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(f"given-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    rep = MLflowReporter(run_id, tracking_uri=mlflow_server.uri)
    rep.log_metrics({"neuronmap/a/l/m": 1.0}, step=2)
    rep.close("FAILED")  # not ours to end
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.metrics == {"neuronmap/a/l/m": 1.0}


@pytest.mark.integration
def test_logs_into_the_active_fluent_run(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_experiment(f"active-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run() as active:
        rep = MLflowReporter()
        rep.log_metrics({"neuronmap/a/l/m": np.float64(0.5)}, step=1)
        rep.close()
        assert mlflow.active_run() is not None  # the user's run is still theirs
    assert rep.run_id == active.info.run_id
    assert MlflowClient(mlflow_server.uri).get_run(active.info.run_id).data.metrics == {"neuronmap/a/l/m": 0.5}


@pytest.mark.integration
def test_logs_into_a_lightning_mlflow_logger_run(mlflow_server) -> None:
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.MLFlowLogger(experiment_name=f"pl-{uuid.uuid4().hex[:8]}", tracking_uri=mlflow_server.uri)
    logger.log_metrics({"train_loss": 0.3}, step=100)  # the trainer's own metric, at a higher step
    rep = MLflowReporter(logger)
    rep.log_metrics({"neuronmap/a/l/m": 0.9}, step=10)
    rep.close()
    logger.finalize("success")
    metrics = MlflowClient(mlflow_server.uri).get_run(logger.run_id).data.metrics
    assert metrics == {"train_loss": 0.3, "neuronmap/a/l/m": 0.9}
