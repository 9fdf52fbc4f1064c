from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronmap as nm
import neuronmap.analyses.projection as projection_module
from neuronmap._imports import RequirementCache
from neuronmap.analyses.projection import Projection
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe


def _planar_probe(n: int = 60) -> nm.ProbeSet:
    """8-D inputs that lie exactly in a 2-D plane, with a label, a group and a numeric column."""
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(n, 2))
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0]
    x = torch.tensor(coords @ basis.T, dtype=torch.float32)
    return nm.ProbeSet(x, labels=(coords[:, 0] > 0).astype(int), groups={"site": ["a", "b", "c"] * (n // 3)},
                       metadata={"score": rng.random(n)})


def test_pca_and_tsne_figures_per_layer_coloured_by_label_and_groups(tmp_path) -> None:
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(_planar_probe(), layers=["0"], analyses=[Projection(methods=["pca", "tsne"])],
                           reporters=[reporter], strict=True)
    result = monitor.run(nn.Sequential(nn.Identity()), step=0).results["projection"]
    # points on a plane: the first two principal components explain all the variance
    assert result.metrics["0/pca_explained_variance"] == pytest.approx(1.0)
    assert sorted(result.figures) == ["pca/0", "tsne/0"]
    assert len(result.figures["pca/0"].axes) == 2  # one panel for the label, one for the group
    for name in ("pca/0.png", "tsne/0.png"):
        assert (reporter.run_dir / "figures" / "0" / "projection" / name).stat().st_size > 0


def test_numeric_columns_get_a_colour_bar_and_small_sets_a_capped_perplexity() -> None:
    monitor = nm.NeuronMap(_planar_probe(n=21), layers=["0"], reporters=[],
                           analyses=[Projection(methods="tsne", color_by="score")])
    result = monitor.run(nn.Sequential(nn.Identity()), step=0).results["projection"]
    assert result.status == "ok"
    assert len(result.figures["tsne/0"].axes) == 2  # the panel and its colour bar


def test_umap_is_skipped_with_the_install_hint_when_missing(monkeypatch) -> None:
    monkeypatch.setattr(projection_module, "UMAP_AVAILABLE", RequirementCache("neuronmap_absent_umap", "viz"))
    monitor = nm.NeuronMap(tiny_probe(n=40), layers=["net.0"], analyses=[Projection(methods=["pca", "umap"])],
                           reporters=[])
    result = monitor.run(tiny_mlp(), step=0).results["projection"]
    assert sorted(result.figures) == ["pca/net.0"]
    assert result.notes == (
        "UMAP figures skipped: No module named 'neuronmap_absent_umap'. "
        'Install it with: pip install "neuronmap[viz]"',
    )


@pytest.mark.slow
@pytest.mark.skipif(not projection_module.UMAP_AVAILABLE, reason="umap-learn is not installed")
def test_umap_figures_when_installed() -> None:
    monitor = nm.NeuronMap(tiny_probe(n=40), layers=["net.0"], analyses=[Projection(methods=["umap"])], reporters=[])
    result = monitor.run(tiny_mlp(), step=0).results["projection"]
    assert sorted(result.figures) == ["umap/net.0"] and not result.notes


def test_subsampling_and_constant_layers_are_noted() -> None:
    model = tiny_mlp()
    with torch.no_grad():
        model.net[0].bias.fill_(-100.0)  # net.1 = ReLU(...) is constant zero
    monitor = nm.NeuronMap(tiny_probe(n=30), layers=["net.0", "net.1"], reporters=[],
                           analyses=[Projection(methods=["pca"], max_examples=20)])
    result = monitor.run(model, step=0).results["projection"]
    assert sorted(result.figures) == ["pca/net.0"]
    assert "A seeded random subset of 20 of 30 examples is shown." in result.notes
    assert "net.1: fewer than 4 examples or constant activations; nothing to project." in result.notes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["pca", "mds"]},
         r"^Projection: methods must be a non-empty subset of \['pca', 'tsne', 'umap'\]; got \['pca', 'mds'\]\.$"),
        ({"methods": []}, r"^Projection: methods must be a non-empty subset"),
        ({"max_examples": 3}, r"^Projection: max_examples must be None or an int in \[10, inf\); got 3\.$"),
        ({"perplexity": 0}, r"^Projection: perplexity must be a float in \(0, inf\); got 0\.$"),
        ({"color_by": 3}, r"^Projection: color_by must be None or a column name or a list of them; got 3\.$"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        Projection(**kwargs)


def test_max_points_is_the_deprecated_name_of_max_examples() -> None:
    with pytest.warns(FutureWarning, match=r"Projection\(max_points=\.\.\.\) is deprecated .* use max_examples="):
        projection = Projection(methods="pca", max_points=20)
    assert projection.max_examples == 20 and "max_points" not in projection.config()
    with pytest.raises(InvalidParameterError, match="pass max_examples= only"):
        Projection(max_points=20, max_examples=30)
    monitor = nm.NeuronMap(tiny_probe(n=30), layers=["net.0"], analyses=[projection], reporters=[])
    assert "A seeded random subset of 20 of 30 examples is shown." in monitor.run(tiny_mlp(), step=0).results[
        "projection"].notes
