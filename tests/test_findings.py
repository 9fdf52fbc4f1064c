"""How findings state their numbers: an interval and the uncorrected p that agrees with it, beside
the corrected p, each named, with a note wherever a corrected p is shown (issue 21, point 4)."""

from __future__ import annotations

import math

import numpy as np

import neuronmap as nm
from neuronmap.findings import STATS_NOTE, Finding, describe, stats_of, summary_text
from neuronmap.probe import ProbeSet
from neuronmap.reporters import LocalReporter
from neuronmap.results import AnalysisResult


def test_describe_names_each_number() -> None:
    assert describe(0.25, (0.0417, 0.4), 0.999, p=0.083) == "0.25, CI [0.0417, 0.4], p 0.083, p_adj 0.999"
    assert describe(0.5, None, None) == "0.5"
    assert describe(0.5, (0.1, 0.9), None) == "0.5, CI [0.1, 0.9]"
    # a raw p without a corrected one is not shown (findings are about corrected significance)
    assert describe(0.5, None, None, p=0.01) == "0.5"


def test_stats_of_reads_the_raw_p_and_drops_nan() -> None:
    metrics = {"race/dpd": 0.25, "race/dpd_ci_low": 0.04, "race/dpd_ci_high": 0.4, "race/dpd_p": 0.083,
               "race/dpd_p_adj": 0.999, "sex/dpd": 0.1, "sex/dpd_p_adj": math.nan}
    assert stats_of(metrics, "race", "dpd") == {"ci": (0.04, 0.4), "p_adj": 0.999, "p": 0.083}
    assert stats_of(metrics, "sex", "dpd") == {"ci": None, "p_adj": None, "p": None}


def test_summary_text_carries_the_note_only_when_a_corrected_p_is_shown() -> None:
    corrected = Finding("fairness", "race", "dpd", 0.25, "threshold", "dpd = 0.25", ci=(0.04, 0.4), p_adj=0.999, p=0.08)
    plain = Finding("cka", "layer.1", "drift_previous", 0.7, "info", "moved most")
    assert STATS_NOTE in summary_text([corrected, plain])
    assert STATS_NOTE not in summary_text([plain])
    assert Finding.from_dict(corrected.to_dict()) == corrected


def test_fairness_finding_shows_raw_and_corrected_p_with_the_note(tmp_path) -> None:
    """A disparity whose per-test CI excludes 0 while the corrected p is large reads as such, not as a contradiction."""
    import torch

    from neuronmap.testing import tiny_mlp

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=gen)
    race = np.repeat(["a", "b", "c", "d"], 40)
    probe = ProbeSet(x, labels=(x[:, 0] > 0).long().numpy(), groups={"race": race}, name="four-groups")
    local = LocalReporter(tmp_path, run_name="honest")
    monitor = nm.NeuronMap(probe, layers=["net.0"], analyses=[nm.Fairness("race", n_resamples=200)],
                           reporters=[local])
    model = tiny_mlp()
    report = monitor.run(model, step=0)
    monitor.close()
    shown = [f for f in report.findings if f.p_adj is not None]
    assert shown, report.summary()
    for f in shown:
        result: AnalysisResult = report.results["fairness"]
        raw = result.metrics[f"{f.layer}/{f.metric}_p"]
        assert f.p == raw and f"p {describe(raw, None, None)}" in f.text and "p_adj" in f.text
    assert STATS_NOTE in report.summary()
    page = (local.run_dir / "report.html").read_text()
    assert 'class="stats-note"' in page
    from neuronmap.cli import main

    for fmt in ("md", "html"):
        out = tmp_path / f"card.{fmt}"
        assert main(["card", str(local.run_dir), "--format", fmt, "--out", str(out)]) == 0
        assert STATS_NOTE in out.read_text()
