"""ConceptExtraction and ConceptAlgebra on activations with planted structure.

An identity layer makes the captured activations exactly the planted data, so the known
answers are those of the generating process: NMF and ICA recover the sources, PCA's
explained variance is numpy's eigenvalue ratio, and ``king - man + woman`` lands on queens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.analyses.concepts import ConceptAlgebra, ConceptExtraction
from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.concepts import (
    analogy_query,
    centroid_direction,
    cosine_similarity_table,
    nearest_examples,
)
from neuronmap.reporters import LocalReporter


def _identity_model(d: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Identity(), nn.Linear(d, 2))


def _run(x: np.ndarray, analysis: nm.Analysis, tmp_path=None, **probe_kwargs) -> nm.Report:
    probe = nm.ProbeSet(torch.as_tensor(x, dtype=torch.float32), **probe_kwargs)
    reporters = [LocalReporter(tmp_path, run_name="concepts")] if tmp_path is not None else []
    return nm.NeuronMap(probe, layers="0", analyses=[analysis], reporters=reporters, strict=True).run(
        _identity_model(x.shape[1]), step=0
    )


def _sources(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sparse non-negative sources mixed by a non-negative matrix with a block structure."""
    rng = np.random.default_rng(seed)
    s = rng.exponential(1.0, (n, 3)) * (rng.random((n, 3)) < 0.4)
    w = 0.05 + np.kron(np.eye(3), np.ones((1, 4))) * rng.uniform(0.8, 1.2, (3, 12))
    return s, s @ w + 0.01 * rng.random((n, 12))


# ----------------------------------------------------------------------------- extraction
def test_nmf_components_recover_planted_sources_and_their_correlates(tmp_path) -> None:
    s, x = _sources()
    group = np.where(s[:, 1] > 0, "on", "off")
    # The label is source 0 itself (continuous: correlated as a number), the group says
    # whether source 1 is active (point-biserial correlation with the recovered source).
    report = _run(x, ConceptExtraction("nmf", n_components=3, top_k=5), tmp_path,
                  labels=s[:, 0], groups={"g": group})
    m = report.metrics
    assert m["neuronmap/concept_extraction/0/explained_variance"] > 0.97
    assert m["neuronmap/concept_extraction/0/label_correlation"] > 0.97
    assert m["neuronmap/concept_extraction/0/label_correlation_p_adj"] < 1e-10
    ceiling = abs(np.corrcoef(s[:, 1], s[:, 1] > 0)[0, 1])  # what a perfect recovery would give
    assert m["neuronmap/concept_extraction/0/g_correlation"] == pytest.approx(ceiling, abs=0.05)
    result = report.results["concept_extraction"]
    corr = result.tables["correlations"]
    best = corr[corr["variable"] == "label"].sort_values("r", key=np.abs).iloc[-1]["component"]
    top = result.tables["top_examples"]
    top_examples = set(top[top["component"] == best]["example"])
    assert len(top_examples & set(np.argsort(-s[:, 0])[:5])) >= 4
    assert (tmp_path / "concepts" / "figures" / "0" / "concept_extraction" / "correlations.png").exists()


def test_pca_explained_variance_is_the_eigenvalue_ratio() -> None:
    _, x = _sources(seed=1)
    report = _run(x, ConceptExtraction("pca", n_components=2))
    eig = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    explained = report.metrics["neuronmap/concept_extraction/0/explained_variance"]
    assert explained == pytest.approx(eig[:2].sum() / eig.sum())


def test_ica_unmixes_independent_sources_better_than_pca() -> None:
    rng = np.random.default_rng(2)
    s = rng.laplace(size=(400, 3))
    x = s @ rng.normal(size=(3, 6))
    kwargs = {"labels": s[:, 0], "groups": {"s1": s[:, 1]}}  # continuous: correlated as numbers
    ica = _run(x, ConceptExtraction("ica", n_components=3), **kwargs).metrics
    pca = _run(x, ConceptExtraction("pca", n_components=3), **kwargs).metrics
    assert ica["neuronmap/concept_extraction/0/label_correlation"] > 0.97
    assert ica["neuronmap/concept_extraction/0/s1_correlation"] > 0.97
    assert ica["neuronmap/concept_extraction/0/explained_variance"] == pytest.approx(1.0, abs=1e-6)
    key = "neuronmap/concept_extraction/0/label_correlation"
    assert pca[key] < ica[key]


def test_extraction_rejects_unknown_methods() -> None:
    with pytest.raises(InvalidParameterError,
                       match=r"^ConceptExtraction: method must be one of \['ica', 'nmf', 'pca'\]; got 'svd'\.$"):
        ConceptExtraction("svd")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError,
                       match=r"^ConceptExtraction: n_components must be an int in \[1, inf\); got 0\.$"):
        ConceptExtraction(n_components=0)
    with pytest.raises(InvalidParameterError, match=r"^ConceptExtraction: p_adjust must be one of .*; got 'bh'\.$"):
        ConceptExtraction(p_adjust="bh")


def test_correction_is_the_deprecated_name_of_p_adjust() -> None:
    s, x = _sources(seed=1)
    with pytest.warns(FutureWarning, match=r"ConceptExtraction\(correction=\.\.\.\) is deprecated .* use p_adjust="):
        old = ConceptExtraction("pca", n_components=2, correction="bonferroni")
    assert old.p_adjust == "bonferroni" and "correction" not in old.config()
    new = ConceptExtraction("pca", n_components=2, p_adjust="bonferroni")
    assert _run(x, old, labels=s[:, 0]).metrics == _run(x, new, labels=s[:, 0]).metrics


# ----------------------------------------------------------------------------- algebra
def _royal_data(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(16, 3)))[0].T * 2.0  # royal, male, female: orthogonal
    royal, male, female = basis
    parts = {"king": royal + male, "queen": royal + female, "man": male, "woman": female, "other": 0 * male}
    x = np.vstack([v + 0.3 * rng.normal(size=(20, 16)) for v in parts.values()])
    group = np.repeat(list(parts), 20)
    return x, {name: group == name for name in parts}


def test_analogy_king_minus_man_plus_woman_finds_queens(tmp_path) -> None:
    x, tags = _royal_data()
    algebra = ConceptAlgebra(["king", "man", "woman", "queen"], expressions=[("king", "man", "woman", "queen")])
    report = _run(x, algebra, tmp_path, metadata=tags)
    assert report.metrics["neuronmap/concept_algebra/0/analogy_king_minus_man_plus_woman_hit_rate"] == 1.0
    sim = report.results["concept_algebra"].tables["similarity"].set_index(["concept_a", "concept_b"])["cosine"]
    assert sim[("king", "queen")] > sim[("king", "woman")]
    assert sim[("king", "man")] > sim[("man", "woman")]
    assert sim[("king", "king")] == pytest.approx(1.0)
    analogies = report.results["concept_algebra"].tables["analogies"]
    assert not set(analogies["example"]) & set(np.flatnonzero(tags["king"] | tags["man"] | tags["woman"]))
    assert (tmp_path / "concepts" / "figures" / "0" / "concept_algebra" / "similarity.png").exists()


def test_concept_given_as_a_probe_set_equals_the_tagged_one() -> None:
    x, tags = _royal_data(seed=1)
    queens = nm.ProbeSet(torch.as_tensor(x[tags["queen"]], dtype=torch.float32))
    tagged = _run(x, ConceptAlgebra(["king", "queen"], direction="cav"), metadata=tags)
    separate = _run(x, ConceptAlgebra({"king": "king", "queen": queens}, direction="centroid"), metadata=tags)
    by_tag = _run(x, ConceptAlgebra(["king", "queen"], direction="centroid"), metadata=tags)

    def cos(report: nm.Report) -> float:
        table = report.results["concept_algebra"].tables["similarity"]
        return float(table.query("concept_a == 'king' and concept_b == 'queen'")["cosine"].iloc[0])

    assert cos(separate) == pytest.approx(cos(by_tag), abs=1e-6)
    assert -1.0 <= cos(tagged) <= 1.0


def test_algebra_functions_follow_their_definitions() -> None:
    a, b, c = np.array([1.0, 1, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0, 1])
    np.testing.assert_allclose(analogy_query(a, b, c), [1, 0, 1])
    acts = np.array([[1.0, 0, 1], [1.0, 0, 0], [0.0, 1, 0], [2.0, 0, 2]])
    idx, cos = nearest_examples(acts, [1, 0, 1], k=2, exclude=[3])
    assert list(idx) == [0, 1] and cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(1 / np.sqrt(2))
    d = centroid_direction(np.array([[2.0, 0], [4.0, 0]]), np.array([[0.0, 0], [0.0, 2]]))
    np.testing.assert_allclose(d, np.array([3.0, -1.0]) / np.sqrt(10))
    table = cosine_similarity_table({"x": [1.0, 0], "y": [1.0, 1.0], "z": [0.0, 0.0]})
    assert isinstance(table, pd.DataFrame)
    assert table.loc["x", "y"] == pytest.approx(1 / np.sqrt(2)) and table.loc["x", "z"] == 0.0


def test_algebra_rejects_expressions_over_unknown_concepts() -> None:
    with pytest.raises(InvalidParameterError, match=r"^ConceptAlgebra: expressions must be .*unknown: \['queen'\]"):
        ConceptAlgebra(["king", "man", "woman"], expressions=[("king", "man", "queen")])
    with pytest.raises(InvalidParameterError,
                       match=r"^ConceptAlgebra: direction must be one of \['cav', 'centroid'\]; got 'mean'\.$"):
        ConceptAlgebra(["a"], direction="mean")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"^ConceptAlgebra: concepts must be a non-empty list .*; got \[\]"):
        ConceptAlgebra([])
