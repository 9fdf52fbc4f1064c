"""The analyses of issue 18 inside a real Lightning Trainer: on schedule, logged, figures in report.html."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")

import lightning.pytorch as L
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "callbacks"))
from _lit import lit_mlp, loader, trainer_kwargs

import neuronmap as nm
from neuronmap.callbacks import NeuronMapCallback
from neuronmap.reporters import LocalReporter

pytestmark = pytest.mark.integration


def _probe() -> nm.ProbeSet:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(48, 8, generator=gen)
    half = np.arange(48) % 24
    return nm.ProbeSet(x, labels=(x[:, 0] + x[:, 1] > 0).long().numpy(), name="iv", metadata={
        "score": (x[:, 0] + x[:, 1]).numpy(), "latitude": (60 * x[:, 0].clamp(-1.4, 1.4)).numpy(),
        "longitude": (120 * x[:, 1].clamp(-1.4, 1.4)).numpy(), "region": np.where(x[:, 2] > 0, "north", "south"),
        "language": np.where(np.arange(48) < 24, "en", "de"), "pair_id": half})  # fmt: skip


def test_new_analyses_run_in_a_lightning_trainer_and_their_figures_reach_report_html(tmp_path: Path):
    stats = {"n_permutations": 49, "n_resamples": 50}
    analyses = [
        nm.AdversarialRobustness([0.1, 0.5], pgd_steps=3, bisection_steps=3, n_resamples=50),
        nm.RegressionProbing("score", **stats),
        nm.WorldModelProbe("space", **stats),
        nm.CrossLingualAlignment(**stats),
    ]
    reporter = LocalReporter(tmp_path / "runs", run_name="iv")
    callback = NeuronMapCallback(probe=_probe(), layers=["net.*"], analyses=analyses, reporters=[reporter],
                                 schedule=nm.Schedule(on=("validation_end",)))  # fmt: skip
    runs: list[tuple[int, dict[str, str]]] = []
    callback.monitor.add_listener(lambda report, model: runs.append(
        (report.step, {k: v.status for k, v in report.results.items()})))
    L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path)).fit(lit_mlp(), loader(), loader(16))
    assert [s for s, _ in runs] == [4, 8]
    assert all(status == {"adversarial": "ok", "regression_probing": "ok", "world_model": "ok", "crosslingual": "ok"}
               for _, status in runs)  # fmt: skip
    lines = [json.loads(line) for line in (reporter.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [4, 8]
    keys = set(lines[-1]["metrics"]) if "metrics" in lines[-1] else set(lines[-1])
    flat = " ".join(keys)
    for key in ("adversarial/input/pgd_linf_flip_rate_eps0.5", "regression_probing/net.0/r2",
                "world_model/net.0/error_km", "crosslingual/net.0/de_retrieval"):  # fmt: skip
        assert key in flat
    html = (reporter.run_dir / "report.html").read_text(encoding="utf-8")
    for figure in ("adversarial/flip_rate", "adversarial/representation_shift", "regression_probing/r2",
                   "world_model/map", "crosslingual/alignment"):  # fmt: skip
        assert (reporter.run_dir / "figures" / "8" / f"{figure}.png").is_file()
        assert figure in html
    assert html.count("data:image/png;base64,") >= 5
