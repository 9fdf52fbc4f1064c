"""NeuronMapCallback(executor="background") in a real Lightning fit: the same history, gate
outcomes and audit trail as the synchronous callback, in step order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("lightning")
import lightning.pytorch as L

sys.path.insert(0, str(Path(__file__).parent))  # the helpers shared with _ddp_script.py
from _lit import lit_mlp, loader, trainer_kwargs

import neuronmap as nm
from neuronmap.callbacks import NeuronMapCallback
from neuronmap.testing import tiny_probe

pytestmark = pytest.mark.integration


def test_a_background_fit_reports_what_a_synchronous_fit_reports(tmp_path: Path) -> None:
    schedule = nm.Schedule(every_n_steps=2, on=("step", "validation_end", "train_end"))
    gates = [{"name": "finite", "metric": "neuronmap/activation_stats/*/nonfinite_fraction", "max": 0.0}]
    seen: dict[str, list[tuple[str | None, int]]] = {}
    history: dict[str, pd.DataFrame] = {}
    trails: dict[str, list[int]] = {}
    for executor in ("sync", "background"):
        callback = NeuronMapCallback(probe=tiny_probe(), layers=["net.*"], schedule=schedule, gates=gates,
                                     analyses=[nm.ActivationStats(), nm.CKA()], executor=executor)
        runs: list[tuple[str | None, int]] = []
        callback.monitor.add_listener(lambda report, model, runs=runs: runs.append((report.event, report.step)))
        trainer = L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path / executor, max_epochs=1))
        trainer.fit(lit_mlp(), loader(), loader(16))
        assert trainer.global_step == 4  # training ran to its end
        seen[executor], history[executor] = runs, callback.monitor.history.frame
        (run_dir,) = (tmp_path / executor / "neuronmap-runs").iterdir()
        entries = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
        trails[executor] = [e["step"] for e in entries if e.get("kind", e.get("event")) == "engine_run"]
    assert seen["background"] == seen["sync"] and [s for _, s in seen["sync"]] == [2, 4]
    # every report reached the history, with the gates' outcomes, as in the synchronous fit
    pd.testing.assert_frame_equal(history["background"], history["sync"], check_exact=False, rtol=1e-12, atol=1e-12)
    assert history["sync"]["key"].str.startswith("neuronmap/gates/finite").any()
    assert trails["background"] == trails["sync"] == [2, 4]
