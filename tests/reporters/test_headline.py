"""Tracker key layout: the README's typical set on 6 layers stays a readable number of charts,
while gates still read every statistic (``_p_adj`` per layer) from the same run, locally and
through ``mlflow:ID``; findings reach the run's description and ``neuronmap report mlflow:ID``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import neuronmap as nm
from neuronmap._headline import tracker_metrics
from neuronmap.cli import main
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_bert, tiny_text_probe

pytest.importorskip("transformers")
mlflow = pytest.importorskip("mlflow")

GATES = """gates:
  - metric: neuronmap/probing/bert.encoder.layer.*/accuracy_p_adj
    max: 0.05
    when: last
"""


@pytest.fixture(scope="module")
def typical_run(tmp_path_factory, mlflow_store_template) -> dict:
    """Fairness, Probing, CKA and ActivationStats on a 6-block BERT, two scheduled runs."""
    from neuronmap.reporters import MLflowReporter

    root = tmp_path_factory.mktemp("headline")
    shutil.copy(mlflow_store_template, root / "mlflow.db")  # skips the schema migrations
    local = LocalReporter(root, run_name="typical")
    tracker = MLflowReporter(root=root, experiment_name="typical")
    monitor = nm.NeuronMap(
        tiny_text_probe(48), layers=["bert.encoder.layer.*"],
        analyses=[nm.Fairness(sensitive=["gender"], n_resamples=200), nm.Probing(cv=3), nm.CKA(),
                  nm.ActivationStats()],
        reporters=[local, tracker],
    )
    model = tiny_bert(layers=6, num_labels=2)
    reports = [monitor.run(model, step=step) for step in (0, 5)]
    monitor.close()
    return {"root": root, "local": local, "tracker": tracker, "reports": reports}


def test_typical_set_on_six_layers_logs_at_most_60_scalar_keys(typical_run) -> None:
    report = typical_run["reports"][-1]
    keys = tracker_metrics(report)
    assert len(report.metrics) > 150  # the full record: every CI and p-value
    assert 0 < len(keys) <= 60, len(keys)
    assert not any(k.endswith(("_ci_low", "_ci_high", "_p", "_p_adj")) for k in keys)
    assert "neuronmap/probing/accuracy/bert.encoder.layer.3" in keys  # <analysis>/<metric>/<layer>
    tracker = typical_run["tracker"]
    logged = tracker.client.get_run(tracker.run_id).data.metrics
    assert set(logged) == set(keys)
    assert len(tracker_metrics(report, scalars="all")) == len(report.metrics)  # the opt-in


def test_gate_reads_per_layer_p_adj_locally_and_through_mlflow(typical_run, tmp_path, capsys) -> None:
    config = tmp_path / "gates.yaml"
    config.write_text(GATES)
    tracker = typical_run["tracker"]
    local_dir = typical_run["local"].run_dir
    verdicts = []
    for i, source in enumerate((str(local_dir), f"mlflow:{tracker.run_id}")):
        out = tmp_path / f"gate-{i}.json"
        code = main(["gate", source, "--config", str(config), "--tracking-uri", tracker.tracking_uri,
                     "--json", str(out), "--no-audit"])
        assert code in (0, 1), capsys.readouterr()  # evaluated (passed or failed), not an error
        (check,) = json.loads(out.read_text())["checks"]
        assert check["status"] in ("passed", "failed")
        assert "bert.encoder.layer.0/accuracy_p_adj" in check["message"], check
        verdicts.append((code, check["status"], check["message"]))
    assert verdicts[0] == verdicts[1]  # the same record, whichever way it is read


def test_findings_lead_the_mlflow_run_and_its_report(typical_run, tmp_path) -> None:
    tracker = typical_run["tracker"]
    report = typical_run["reports"][-1]
    tags = tracker.client.get_run(tracker.run_id).data.tags
    assert tags["mlflow.note.content"].startswith("### NeuronMap findings (step 5)")
    assert report.findings and report.findings[0].line() in tags["mlflow.note.content"]
    assert tags["neuronmap.findings"] == str(len(report.findings))
    out = tmp_path / "report.html"
    assert main(["report", f"mlflow:{tracker.run_id}", "--tracking-uri", tracker.tracking_uri,
                 "--out", str(out)]) == 0
    page = out.read_text()
    assert page.index('id="findings"') < page.index("Metrics over training")
    assert report.findings[0].analysis in page
    # one embedded store per project, the local folder and the MLflow run share a name
    assert Path(tracker.store_dir) == typical_run["root"]
    assert tracker.client.get_run(tracker.run_id).info.run_name == "typical"


def test_reading_mlflow_metrics_leaves_no_download_behind(typical_run, tmp_path, monkeypatch) -> None:
    """A long-running reader (neuronmap serve) fetches mlflow:ID often: each metrics download is removed."""
    import tempfile

    from neuronmap.runs.source import load_run

    tracker = typical_run["tracker"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(3):
        run = load_run(f"mlflow:{tracker.run_id}", tracking_uri=tracker.tracking_uri)
        assert run.run_dir is None and "neuronmap/probing/bert.encoder.layer.0/accuracy_p_adj" in run.keys
    assert not list(tmp_path.glob("neuronmap-run-*"))
    kept = load_run(f"mlflow:{tracker.run_id}", tracking_uri=tracker.tracking_uri, materialize=True)
    assert kept.run_dir is not None and (kept.run_dir / "metrics.jsonl").is_file()  # a report reads it later
