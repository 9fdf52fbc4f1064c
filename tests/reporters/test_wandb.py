"""WandbReporter in offline mode, read back from the run's own transaction log and media files."""

from __future__ import annotations

import json
import math
import struct
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from neuronmap.errors import InvalidParameterError, ReporterWarning
from neuronmap.reporters import CompositeReporter, LocalReporter, TensorBoardReporter
from neuronmap.runs import read_history
from neuronmap.testing import check_reporter

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

from neuronmap.reporters import WandbReporter  # noqa: E402

_BLOCK = 32 * 1024  # the .wandb log is LevelDB-style: 32 KiB blocks of 7-byte-header records


def _records(path: Path) -> Iterator[Any]:
    """Records of a ``run-<id>.wandb`` file (W&B ships no Python reader for it any more)."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", "not a W&B transaction log"
    pos, chunk = 7, b""
    while pos + 7 <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0:  # zero-filled rest of a block
            pos += left
            continue
        chunk += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _run_dir(wandb_dir: Path, timeout: float = 20.0) -> Path:
    """The finished offline run's folder, once its log holds the exit record.

    ``run.finish()`` returns before wandb-core has flushed the ``.wandb`` file.
    """
    (run,) = (wandb_dir / "wandb").glob("offline-run-*")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in _records(next(run.glob("run-*.wandb")))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"W&B did not write the exit record of {run} within {timeout:g} s")
        time.sleep(0.05)
    return run


def _history(run: Path) -> list[dict[str, Any]]:
    rows = []
    for record in _records(next(run.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def _exit_code(run: Path) -> int:
    codes = [r.exit.exit_code for r in _records(next(run.glob("run-*.wandb"))) if r.WhichOneof("record_type") == "exit"]
    return codes[-1]


def _figure() -> Figure:
    fig = Figure(figsize=(3, 2), dpi=100)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_metrics_media_and_card_read_back(wandb_dir: Path) -> None:
    rep = WandbReporter(project="neuronmap-test", dir=wandb_dir)
    key = "neuronmap/probing/encoder.layer.5/accuracy"
    rep.log_metrics({key: 0.5, "neuronmap/stats/net.0/dead": math.nan}, step=0)
    rep.log_metrics({key: 0.75}, step=10)
    rep.log_figure("similarity/cka", _figure(), step=10)
    table = pd.DataFrame({"cka": [0.97, 0.81]}, index=pd.Index(["net.0", "net.2"], name="layer"))
    rep.log_table("similarity/cka", table, step=10)
    rep.log_text("model_card", "# Card\n\n<script>x</script> ✓")
    rep.log_params({"schedule": {"every_n_steps": 10}})
    rep.set_tags({"probe": "tiny"})
    rep.close()

    run = _run_dir(wandb_dir)
    rows = _history(run)
    values = [(r["neuronmap/step"], r[key]) for r in rows if key in r]
    assert values == [(0, 0.5), (10, 0.75)]
    (dead,) = [r["neuronmap/stats/net.0/dead"] for r in rows if "neuronmap/stats/net.0/dead" in r]
    assert math.isnan(dead)
    (image,) = [r for r in rows if "neuronmap/figures/similarity/cka/path" in r]
    assert image["neuronmap/step"] == 10 and image["neuronmap/figures/similarity/cka/_type"] == "image-file"
    png = run / "files" / image["neuronmap/figures/similarity/cka/path"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (table_row,) = [r for r in rows if "neuronmap/tables/similarity/cka/path" in r]
    stored = json.loads((run / "files" / table_row["neuronmap/tables/similarity/cka/path"]).read_text())
    assert stored["columns"] == ["layer", "cka"] and stored["data"] == [["net.0", 0.97], ["net.2", 0.81]]
    (card,) = (run / "files" / "media" / "html").rglob("model_card*.html")
    page = card.read_text()
    assert "<h1>Card</h1>" in page and "&lt;script&gt;" in page and "<script>x" not in page
    assert _exit_code(run) == 0


def test_a_lower_analysis_step_after_a_higher_trainer_step_is_kept(wandb_dir: Path) -> None:
    """wandb #9449: ``log(step=s)`` with ``s`` below the current step is dropped; ours never is."""
    run = wandb.init(project="neuronmap-test", dir=wandb_dir)
    try:
        run.log({"train/loss": 0.3}, step=1000)
        rep = WandbReporter(run)
        rep.log_metrics({"neuronmap/a/l/m": 0.1}, step=10)
        rep.log_metrics({"neuronmap/a/l/m": 0.2}, step=20)
        rep.close("FAILED")  # a borrowed run is not finished by us
        assert wandb.run is run
        run.log({"train/loss": 0.2}, step=1001)
    finally:
        run.finish()
    rows = _history(_run_dir(wandb_dir))
    logged = [(r["neuronmap/step"], r["neuronmap/a/l/m"]) for r in rows if "neuronmap/a/l/m" in r]
    assert logged == [(10, 0.1), (20, 0.2)]
    assert [r["train/loss"] for r in rows if "train/loss" in r] == [0.3, 0.2]


def test_failed_status_finishes_the_run_with_exit_code_1(wandb_dir: Path) -> None:
    rep = WandbReporter(project="neuronmap-test", dir=wandb_dir)
    rep.log_metrics({"neuronmap/a/l/m": 1.0}, step=1)
    rep.close("FAILED")
    assert _exit_code(_run_dir(wandb_dir)) == 1


def test_conformance(wandb_dir: Path) -> None:
    check_reporter(WandbReporter(project="neuronmap-test", dir=wandb_dir))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidParameterError, match=r"mode must be one of \['online', 'offline'.*got 'cloud'"):
        WandbReporter(mode="cloud")
    with pytest.raises(InvalidParameterError, match=r"run must be a wandb Run or a Lightning WandbLogger.*got str"):
        WandbReporter("my-run")


@pytest.mark.integration
def test_failing_init_leaves_the_other_reporters_working(wandb_dir: Path, tmp_path: Path) -> None:
    # A real failure: online mode against a W&B server that is not there.
    broken = WandbReporter(
        project="neuronmap-test", mode="online", dir=wandb_dir,
        init_kwargs={"settings": wandb.Settings(base_url="http://127.0.0.1:9", api_key="0" * 40, init_timeout=1)},
    )
    local, tensorboard = LocalReporter(tmp_path, "run"), TensorBoardReporter(tmp_path / "tb")
    both = CompositeReporter([local, broken, tensorboard], retry_after=30.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(3):
            both.log_metrics({"neuronmap/a/l/m": float(step)}, step=step)
        both.log_figure("a/f", _figure(), step=2)
        both.flush()
    outage = [w for w in record if issubclass(w.category, ReporterWarning)]
    assert len(outage) == 1 and "'wandb' failed" in str(outage[0].message)
    assert list(read_history(local.run_dir)["step"]) == [0, 1, 2]
    assert (local.run_dir / "figures/2/a/f.png").is_file()
    assert both.reporters[1].pending == 4  # spooled, to be replayed when W&B answers
    with pytest.warns(ReporterWarning, match="still unreachable at close"):
        both.close()
    assert wandb.run is None


def test_logs_into_a_lightning_wandb_logger_run(wandb_dir: Path) -> None:
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.WandbLogger(project="neuronmap-test", save_dir=str(wandb_dir), offline=True)
    logger.log_metrics({"train_loss": 0.3}, step=100)
    rep = WandbReporter(logger)
    rep.log_metrics({"neuronmap/a/l/m": 0.9}, step=10)
    rep.close()
    logger.log_metrics({"train_loss": 0.2}, step=101)
    logger.experiment.finish()
    rows = _history(_run_dir(wandb_dir))
    assert [(r["neuronmap/step"], r["neuronmap/a/l/m"]) for r in rows if "neuronmap/a/l/m" in r] == [(10, 0.9)]
    assert [(r["trainer/global_step"], r["train_loss"]) for r in rows if "train_loss" in r] == [(100, 0.3), (101, 0.2)]


def test_log_report_line_series_summary_and_files_read_back(wandb_dir: Path) -> None:
    """log_report: headline scalars, one line-series chart per metric (a line per layer), the
    findings in the run summary, figures and the full record under files/neuronmap."""
    import neuronmap as nm
    from neuronmap.testing import tiny_mlp, tiny_probe

    rep = WandbReporter(project="neuronmap-test", dir=wandb_dir)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.1", "net.3"], analyses=[nm.ActivationStats()], reporters=[])
    model = tiny_mlp()
    for step in (0, 10):
        report = monitor.run(model, step=step)
        rep.log_report(report)
        with torch.no_grad():
            model.net[0].weight.mul_(1.5)  # the next step's activations differ
    rep.close()

    run = _run_dir(wandb_dir)
    rows = _history(run)
    std = [(r["neuronmap/step"], r["neuronmap/activation_stats/std/net.1"]) for r in rows
           if "neuronmap/activation_stats/std/net.1" in r]
    assert [s for s, _ in std] == [0, 10] and std[1][1] > std[0][1]
    assert not any(k.endswith("_ci_low") or k.endswith("_p") for r in rows for k in r)  # headline only
    charts = [r for r in rows if any(k.startswith("neuronmap/charts/activation_stats/std") for k in r)]
    assert len(charts) == 2  # redrawn at each report; the last holds every step
    prefix = "neuronmap/charts/activation_stats/std"
    path_key = next(k for k in charts[-1] if k.startswith(prefix) and k.endswith("/path"))
    table = json.loads((run / "files" / charts[-1][path_key]).read_text())
    assert set(table["columns"]) == {"step", "lineKey", "lineVal"}
    col = {c: i for i, c in enumerate(table["columns"])}
    by_layer: dict[str, list[tuple[int, float]]] = {}
    for row in table["data"]:
        by_layer.setdefault(row[col["lineKey"]], []).append((row[col["step"]], row[col["lineVal"]]))
    assert sorted(by_layer) == ["net.1", "net.3"]
    assert by_layer["net.1"] == [(0, pytest.approx(std[0][1])), (10, pytest.approx(std[1][1]))]
    summary: dict[str, Any] = {}
    for record in _records(next(run.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    from neuronmap.findings import findings_of, summary_text

    assert summary["neuronmap/findings_count"] == len(findings_of(report))
    assert summary["neuronmap/findings"] == summary_text(findings_of(report))
    assert any(k.startswith("neuronmap/figures/activation_stats/") for r in rows for k in r)
    mirror = run / "files" / "neuronmap"
    lines = [json.loads(line) for line in (mirror / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 10]
    assert lines[-1]["metrics"]["neuronmap/activation_stats/net.1/std"] == pytest.approx(std[1][1])  # history layout
    assert (mirror / "report.html").exists() and sorted(p.name for p in (mirror / "reports").iterdir())
