"""AttentionAnalysis: known answers on real attention modules, ablation mechanisms, SDPA, reporting."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap._imports import TENSORBOARD_AVAILABLE
from neuronmap.analyses.attention import AttentionAnalysis
from neuronmap.errors import AnalysisError, InvalidParameterError
from neuronmap.probe import ProbeSet
from neuronmap.reporters import LocalReporter, TensorBoardReporter
from neuronmap.testing import tiny_bert, tiny_text_probe

LAYER0 = "bert.encoder.layer.0.attention.self"


class _SelfAttention(nn.Module):
    """Multi-head self-attention returning ``(output, probabilities)``, with an ``out_proj`` child."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, head_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        probs = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(-1)
        weighted = probs if head_mask is None else probs * head_mask[None, :, None, None]
        context = (weighted @ v).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(context), probs


class _Classifier(nn.Module):
    """Two residual attention blocks and a linear head on the mean token."""

    def __init__(self, vocab: int = 30, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([_SelfAttention(dim, heads) for _ in range(2)])
        self.head = nn.Linear(dim, 3)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._classify(input_ids, None)

    def _classify(self, input_ids: torch.Tensor, head_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(input_ids)
        for i, block in enumerate(self.blocks):
            x = x + block(x, head_mask=None if head_mask is None else head_mask[i])[0]
        return self.head(x.mean(1))


class _ClassifierWithHeadMask(_Classifier):
    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._classify(input_ids, head_mask)


class _NoAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 4)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.embed(input_ids).mean(1)


def _custom_probe(n: int = 16) -> ProbeSet:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (n, 6), generator=gen)
    return ProbeSet(
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels=np.arange(n) % 3
    )


def _dead_head_classifier(cls: type[_Classifier] = _Classifier) -> _Classifier:
    torch.manual_seed(3)
    model = cls().eval()
    with torch.no_grad():
        model.blocks[0].out_proj.weight[:, 4:] = 0  # head 1's context never reaches the output
    return model


def _run(model: nn.Module, probe: ProbeSet, analysis: AttentionAnalysis, **kwargs) -> nm.Report:
    monitor = nm.NeuronMap(
        probe,
        layers=[
            next(name for name, _ in model.named_modules() if name)
        ],  # any layer: capture is not used
        analyses=[analysis],
        reporters=[],
        **kwargs,
    )
    return monitor.run(model, step=0)


def test_uniform_head_has_maximal_entropy():
    model = tiny_bert(num_labels=2)
    with torch.no_grad():  # zero queries -> equal scores -> uniform over the real tokens
        model.bert.encoder.layer[0].attention.self.query.weight[:16] = 0
        model.bert.encoder.layer[0].attention.self.query.bias[:16] = 0
        model.bert.encoder.layer[0].attention.self.query.weight[16:] *= 300  # a peaked head 1
    probe = tiny_text_probe(10)
    res = _run(model, probe, AttentionAnalysis(ablation=False), strict=True).results["attention"]
    lengths = probe.attention_mask.sum(1).double()
    heads = res.tables["heads"].set_index(["layer", "head"])
    assert heads.loc[(LAYER0, 0), "entropy"] == pytest.approx(
        float(torch.log(lengths).mean()), abs=1e-5
    )
    assert heads.loc[(LAYER0, 0), "normalized_entropy"] == pytest.approx(1.0, abs=1e-5)
    assert heads.loc[(LAYER0, 1), "normalized_entropy"] < 0.9
    # The uniform head puts 2 of n tokens' worth of mass on [CLS] and [SEP].
    assert heads.loc[(LAYER0, 0), "special_mass"] == pytest.approx(
        float((2 / lengths).mean()), abs=1e-5
    )
    assert res.metrics[f"{LAYER0}/head0_entropy"] == heads.loc[(LAYER0, 0), "entropy"]


def test_ablating_the_task_head_changes_the_logit_and_the_dead_head_does_not():
    model, probe = _dead_head_classifier(), _custom_probe()
    res = _run(model, probe, AttentionAnalysis(measure="logit"), strict=True).results["attention"]
    table = res.tables["heads"].set_index(["layer", "head"]).loc["blocks.0"]
    assert table.loc[1, "importance"] == 0 and table.loc[1, "importance_p"] == 1.0
    assert table.loc[1, "importance_ci_low"] == table.loc[1, "importance_ci_high"] == 0
    # Known answer: ablating head 0 equals deleting its columns of the output projection.
    surgery = copy.deepcopy(model)
    with torch.no_grad():
        surgery.blocks[0].out_proj.weight[:, :4] = 0
        base = model(probe.inputs["input_ids"])
        pred = base.argmax(1, keepdim=True)
        drop = (base.gather(1, pred) - surgery(probe.inputs["input_ids"]).gather(1, pred)).mean()
    assert abs(table.loc[0, "importance"]) > 1e-3
    assert table.loc[0, "importance"] == pytest.approx(float(drop), rel=1e-5)
    assert "projection_input" in res.notes[-1]


@pytest.mark.parametrize("layers", [None, "blocks.1"])
def test_head_mask_and_projection_hook_agree(layers):
    """Same weights, two mechanisms; with a layer filter head_mask must still index block 1."""
    probe = _custom_probe()
    hooked = _run(_dead_head_classifier(), probe, AttentionAnalysis(layers=layers))
    masked = _run(
        _dead_head_classifier(_ClassifierWithHeadMask), probe, AttentionAnalysis(layers=layers)
    )
    hooked_heads = hooked.results["attention"].tables["heads"]
    masked_heads = masked.results["attention"].tables["heads"]
    assert "head_mask" in masked.results["attention"].notes[-1]
    assert "projection_input" in hooked.results["attention"].notes[-1]
    assert set(masked_heads["layer"]) == ({"blocks.1"} if layers else {"blocks.0", "blocks.1"})
    assert masked_heads["importance"].abs().max() > 1e-4
    pd.testing.assert_series_equal(
        hooked_heads["importance"], masked_heads["importance"], rtol=1e-5
    )


def test_bert_head_ablation_matches_weight_surgery():
    model, probe = tiny_bert(num_labels=2), tiny_text_probe(10)
    res = _run(
        model, probe, AttentionAnalysis(measure="logit", layers=LAYER0), strict=True
    ).results["attention"]
    assert list(res.tables["heads"]["layer"].unique()) == [LAYER0]
    assert "module_output" in res.notes[-1]
    surgery = copy.deepcopy(model)
    with torch.no_grad():
        surgery.bert.encoder.layer[0].attention.output.dense.weight[:, 16:] = (
            0  # head 1 of 2, width 32
        )
        base, cut = model(**probe.inputs).logits, surgery(**probe.inputs).logits
    pred = base.argmax(1, keepdim=True)
    expected = float((base.gather(1, pred) - cut.gather(1, pred)).mean())
    assert res.tables["heads"].loc[1, "importance"] == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_sdpa_model_is_switched_to_eager_for_the_run_or_gets_a_clear_error():
    probe = tiny_text_probe(8)
    eager = _run(tiny_bert(num_labels=2), probe, AttentionAnalysis(ablation=False)).results[
        "attention"
    ]
    sdpa_model = tiny_bert(num_labels=2, attn_implementation="sdpa")
    switched = _run(sdpa_model, probe, AttentionAnalysis(ablation=False)).results["attention"]
    assert "attn_implementation='sdpa'" in switched.notes[0]
    assert sdpa_model.config._attn_implementation == "sdpa"  # restored
    assert switched.metrics[f"{LAYER0}/entropy"] == pytest.approx(
        eager.metrics[f"{LAYER0}/entropy"], rel=1e-5
    )
    with pytest.raises(
        AnalysisError, match=r'returned no attention probabilities.*attn_implementation="eager"'
    ):
        _run(
            sdpa_model, probe, AttentionAnalysis(ablation=False, switch_to_eager=False), strict=True
        )


@pytest.mark.skipif(not TENSORBOARD_AVAILABLE, reason=str(TENSORBOARD_AVAILABLE))
def test_end_to_end_figures_in_the_run_folder_and_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    local = LocalReporter(tmp_path, run_name="attn")
    board = TensorBoardReporter(tmp_path / "tb", scalars="all")  # per-head detail is opt-in for trackers
    monitor = nm.NeuronMap(
        tiny_text_probe(8),
        layers=["bert.embeddings"],
        analyses=[AttentionAnalysis()],
        reporters=[local, board],
        strict=True,
    )
    report = monitor.run(tiny_bert(num_labels=2), step=3)
    monitor.close()
    names = ("entropy", "special_mass", "mean_distance", "importance")
    for name in names:
        assert (local.run_dir / "figures" / "3" / "attention" / f"{name}.png").stat().st_size > 0
    table = pd.read_csv(local.run_dir / "tables" / "3" / "attention" / "heads.csv")
    assert len(table) == 4 and {"importance_p_adj", "mean_distance"} <= set(table.columns)
    key = f"neuronmap/attention/{LAYER0}/head0_importance_p_adj"
    assert key in report.metrics
    assert key in set(pd.read_csv(local.run_dir / "history.csv")["key"])
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {f"neuronmap/figures/attention/{n}" for n in names} <= set(events.Tags()["images"])
    assert events.Images("neuronmap/figures/attention/importance")[0].step == 3
    # trackers chart one section per metric, a line per layer
    assert f"neuronmap/attention/head0_importance_p_adj/{LAYER0}" in events.Tags()["scalars"]


def test_errors() -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"AttentionAnalysis: measure must be one of \['auto', 'logit', 'loss'\]; got 'accuracy'\.",
    ):
        AttentionAnalysis(measure="accuracy")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"AttentionAnalysis: alpha must be a float in \(0, 1\); got 5\."):
        AttentionAnalysis(alpha=5)
    probe = ProbeSet(_custom_probe().inputs)  # no labels
    with pytest.raises(AnalysisError, match="measure='loss'\\) needs integer probe labels"):
        _run(_dead_head_classifier(), probe, AttentionAnalysis(measure="loss"), strict=True)
    with pytest.raises(
        AnalysisError, match=r"selectors \['encoder.\*'\] match none of the attention modules"
    ):
        _run(_dead_head_classifier(), probe, AttentionAnalysis(layers="encoder.*"), strict=True)
    with pytest.raises(AnalysisError, match="No attention probabilities found in _NoAttention"):
        _run(_NoAttention(), probe, AttentionAnalysis(), strict=True)


def test_ablation_examples_measures_importance_on_a_seeded_subsample():
    # Issue 17: head importance on `ablation_examples` seeded random examples equals the full
    # ablation run on exactly those examples; the descriptive statistics still use every example.
    model, probe = tiny_bert(num_labels=2), tiny_text_probe(12)
    sub = _run(model, probe, AttentionAnalysis(ablation_examples=5), strict=True).results["attention"]
    sample = np.sort(np.random.default_rng(0).choice(12, size=5, replace=False))
    full = _run(model, probe.subset(sample), AttentionAnalysis(ablation_examples=None), strict=True)
    heads = full.results["attention"].tables["heads"]
    np.testing.assert_allclose(sub.tables["heads"]["importance"], heads["importance"], rtol=1e-6, atol=1e-9)
    everything = _run(model, probe, AttentionAnalysis(ablation=False), strict=True).results["attention"]
    pd.testing.assert_series_equal(sub.tables["heads"]["entropy"], everything.tables["heads"]["entropy"])
    assert any("5 of 12 probe examples" in note for note in sub.notes)
    with pytest.raises(InvalidParameterError,
                       match=r"AttentionAnalysis: ablation_examples must be None or an int in \[2, inf\); got 1\."):
        AttentionAnalysis(ablation_examples=1)


def test_confidence_sets_the_ci_level_and_alpha_the_findings_threshold() -> None:
    model, probe = _dead_head_classifier(), _custom_probe()
    wide = _run(model, probe, AttentionAnalysis(measure="logit", n_resamples=200, n_permutations=19), strict=True)
    narrow = _run(model, probe, AttentionAnalysis(measure="logit", n_resamples=200, n_permutations=19, confidence=0.5),
                  strict=True).metrics
    key = "neuronmap/attention/blocks.0/head0_importance"
    assert narrow[key] == wide.metrics[key]
    width = {"wide": wide.metrics[key + "_ci_high"] - wide.metrics[key + "_ci_low"],
             "narrow": narrow[key + "_ci_high"] - narrow[key + "_ci_low"]}
    assert width["narrow"] < width["wide"]
    result = wide.results["attention"]
    assert not [f for f in AttentionAnalysis(alpha=1e-6).findings(result) if f.metric.endswith("_importance")]
    assert [f for f in AttentionAnalysis(alpha=0.999).findings(result) if f.metric.endswith("_importance")]
