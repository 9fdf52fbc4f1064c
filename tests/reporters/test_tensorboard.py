"""TensorBoardReporter, read back with TensorBoard's own ``EventAccumulator``."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from neuronmap.errors import InvalidParameterError
from neuronmap.testing import check_reporter

pytest.importorskip("tensorboard")
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from neuronmap.reporters import TensorBoardReporter
from neuronmap.reporters.tensorboard import markdown_table

CARD = "# Model card\n\n| layer | CKA |\n|---|---|\n| net.0 | 0.97 |\n"


def _events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _text(acc: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    # SummaryWriter.add_text stores a string tensor under "<tag>/text_summary"
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode())
            for e in acc.Tensors(f"{tag}/text_summary")]


def test_scalars_figures_tables_and_text_read_back(tmp_path: Path) -> None:
    rep = TensorBoardReporter(tmp_path / "tb")
    key = "neuronmap/probing/encoder.layer.5/accuracy"
    for step, value in ((0, 0.5), (10, 0.75)):
        rep.log_metrics({key: value, "neuronmap/stats/net.0/dead": math.nan}, step=step)
    figure = Figure(figsize=(3, 2), dpi=100)
    figure.add_subplot().plot([0, 1], [1, 0])
    rep.log_figure("similarity/cka", figure, step=10)
    table = pd.DataFrame({"cka": [0.97, 0.8123456]}, index=pd.Index(["net.0", "net.2"], name="layer"))
    rep.log_table("similarity/cka", table, step=10)
    rep.log_text("model_card", CARD)
    rep.log_params({"layers": ["net.0"], "schedule": {"every_n_steps": 10}})
    rep.close("FAILED")

    acc = _events(tmp_path / "tb")
    assert [(e.step, e.value) for e in acc.Scalars(key)] == [(0, 0.5), (10, 0.75)]
    assert all(math.isnan(e.value) for e in acc.Scalars("neuronmap/stats/net.0/dead"))
    (image,) = acc.Images("neuronmap/figures/similarity/cka")
    assert (image.step, image.width, image.height) == (10, 300, 200)
    assert Image.open(io.BytesIO(image.encoded_image_string)).size == (300, 200)
    assert _text(acc, "neuronmap/tables/similarity/cka") == [
        (10, "| layer | cka |\n|---|---|\n| net.0 | 0.97 |\n| net.2 | 0.8123 |")
    ]
    assert _text(acc, "neuronmap/texts/model_card") == [(0, CARD)]
    assert '"every_n_steps": 10' in _text(acc, "neuronmap/config")[0][1]
    assert _text(acc, "neuronmap/status")[0][1] == "FAILED"


def test_figure_is_left_open_for_the_caller(tmp_path: Path) -> None:
    rep = TensorBoardReporter(tmp_path)
    figure = Figure()
    figure.add_subplot().plot([1, 2])
    rep.log_figure("a/f", figure, step=0)
    figure.savefig(io.BytesIO(), format="png")
    assert len(figure.axes) == 1
    rep.close()


def test_borrowed_writer_is_flushed_not_closed(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    rep = TensorBoardReporter(writer)
    rep.log_metrics({"neuronmap/a/l/m": 1.0}, step=1)
    rep.close()
    writer.add_scalar("user/loss", 0.5, 2)  # the owner can still write
    writer.close()
    acc = _events(tmp_path)
    assert set(acc.Tags()["scalars"]) == {"neuronmap/a/l/m", "user/loss"}


def test_a_borrowed_writer_its_owner_closed_is_reopened_and_closed_again(tmp_path: Path) -> None:
    # HF's TensorBoardCallback closes its writer in on_train_end, before NeuronMap's final run
    writer = SummaryWriter(str(tmp_path))
    rep = TensorBoardReporter(writer)
    rep.log_metrics({"neuronmap/a/l/m": 1.0}, step=1)
    writer.close()
    rep.log_metrics({"neuronmap/a/l/m": 2.0}, step=2)
    rep.close()
    assert writer.file_writer is None  # the event file the late writes opened is closed, not leaked
    acc = _events(tmp_path)
    # two event files, both opened within the same second: TensorBoard may read either first
    assert sorted((e.step, e.value) for e in acc.Scalars("neuronmap/a/l/m")) == [(1, 1.0), (2, 2.0)]
    assert _text(acc, "neuronmap/status") == [(0, "FINISHED")]


def test_artifacts_are_copied_next_to_the_events(tmp_path: Path) -> None:
    rep = TensorBoardReporter(tmp_path / "tb")
    src = tmp_path / "gate.json"
    src.write_text("{}")
    rep.log_artifact(src)
    rep.close()
    assert (tmp_path / "tb" / "neuronmap-artifacts" / "gate.json").read_text() == "{}"
    with pytest.raises(InvalidParameterError, match="does not exist"):
        rep.log_artifact(tmp_path / "missing.txt")


def test_markdown_table_escapes_pipes_and_cuts_long_tables() -> None:
    frame = pd.DataFrame({"a|b": ["x|y", "z"], "v": [math.nan, 1.0]})
    assert markdown_table(frame) == "| a\\|b | v |\n|---|---|\n| x\\|y | NaN |\n| z | 1 |"
    long = markdown_table(pd.DataFrame({"i": range(5)}), max_rows=2)
    assert long.splitlines()[-1] == "_3 more rows not shown._"


def test_rejects_what_is_not_a_writer(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"writer must be a SummaryWriter.*got int"):
        TensorBoardReporter(3)
    with pytest.raises(InvalidParameterError, match=r"status must be one of \['FINISHED', 'FAILED', 'KILLED'\]"):
        TensorBoardReporter(tmp_path).close("DONE")  # type: ignore[arg-type]


def test_conformance(tmp_path: Path) -> None:
    check_reporter(TensorBoardReporter(tmp_path))


def test_writes_through_a_lightning_tensorboard_logger(tmp_path: Path) -> None:
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.TensorBoardLogger(str(tmp_path), name="pl", version=0)
    logger.log_metrics({"train_loss": 0.5}, step=100)
    rep = TensorBoardReporter(logger)
    rep.log_metrics({"neuronmap/a/l/m": 0.25}, step=10)
    rep.close()
    logger.finalize("success")
    acc = _events(Path(logger.log_dir))
    assert [(e.step, e.value) for e in acc.Scalars("neuronmap/a/l/m")] == [(10, 0.25)]
    assert [e.step for e in acc.Scalars("train_loss")] == [100]
