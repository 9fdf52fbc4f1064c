"""Set-up mistakes fail before the first training step, in Lightning, the HF Trainer and a plain loop.

Each case is a mistake a new user makes: a selector that matches nothing, a model whose
forward cannot take the probe batch, an analysis naming a column the probe set lacks. The
preflight reports it when training starts; no optimizer step has run by then. After the
preflight passed, a capture failure skips that run and training goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import neuronmap as nm
from neuronmap.errors import PreflightError, RunSkippedWarning
from neuronmap.testing import tiny_mlp, tiny_probe

sys.path.insert(0, str(Path(__file__).parent))

#: (description, NeuronMap keywords, the message the user must see)
MISTAKES = [
    ("wrong selector", {"layers": ["encoder.*"]}, r"Selector 'encoder\.\*' matched no module"),
    ("missing column", {"analyses": [nm.Probing(target="gender")]},
     r"Probing\(target='gender'\) needs probe-set column 'gender'.*it has \['group', 'label'\]"),
    ("forward cannot take the batch", {"probe": nm.ProbeSet.from_tensors(torch.randn(16, 3))},
     r"raised RuntimeError on probe batch 0 \(inputs \{'input': \(16, 3\)\}"),
]


def _kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"probe": tiny_probe(), "layers": ["net.*"], "analyses": [nm.ActivationStats()], "reporters": [],
            **overrides}


# ---------------------------------------------------------------------- plain loop
@pytest.mark.parametrize(("case", "overrides", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_plain_loop_preflight_names_the_mistake(case: str, overrides: dict[str, Any], message: str) -> None:
    kwargs = _kwargs(overrides)
    monitor = nm.NeuronMap(kwargs.pop("probe"), **kwargs)
    model = tiny_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PreflightError, match=message) as info:
        monitor.preflight(model)
    assert len(info.value.problems) == 1
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not monitor.preflight_passed


def test_preflight_lists_every_problem_at_once() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["encoder.*"], reporters=[],
                           analyses=[nm.Probing(target="gender"), nm.Fairness(sensitive="race")])
    with pytest.raises(PreflightError, match=r"found 3 problem\(s\)") as info:
        monitor.preflight(tiny_mlp())
    assert [p.split(" ")[0] for p in info.value.problems] == ["Probing(target='gender')",
                                                              "Fairness(sensitive='race')", "Selector"]


def test_preflight_passes_and_reports_what_it_found() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[], analyses=[nm.ActivationStats()])
    found = monitor.preflight(tiny_mlp())
    assert found.layers == ("net.0", "net.1", "net.2", "net.3", "net.4")
    assert found.shapes["net.4"] == (32, 2) and found.batch_examples == 32
    assert found.probe_fingerprint == monitor.probe.fingerprint()


def test_preflight_catches_a_memory_budget_that_cannot_hold_the_probe_set() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reduce="none", max_bytes=1024, reporters=[])
    with pytest.raises(PreflightError, match=r"reduce='none' would hold about .* over max_bytes=1024"):
        monitor.preflight(tiny_mlp())


def test_preflight_with_no_memory_budget_passes() -> None:
    # max_bytes=None means "no budget"; the preflight used to compare the estimate with None (TypeError)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reduce="none", max_bytes=None, reporters=[])
    found = monitor.preflight(tiny_mlp())
    assert found.shapes["net.4"] == (32, 2) and monitor.preflight_passed


def test_after_preflight_a_capture_failure_skips_the_run_and_training_goes_on() -> None:
    class Flaky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_mlp().net
            self.broken = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.broken:
                raise RuntimeError("CUDA out of memory (simulated)")
            return self.net(x)

    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    model = Flaky()
    monitor.preflight(model)
    monitor.run(model, step=0)
    model.broken = True
    with pytest.warns(RunSkippedWarning, match=r"could not capture activations at step 1 and skipped"):
        report = monitor.run(model, step=1)
    assert set(report.failed) == {"activation_stats"}
    assert report.failed["activation_stats"].startswith("capture failed: ForwardError")
    model.broken = False
    assert monitor.run(model, step=2).failed == {}
    # strict=True raises instead, and so does a monitor whose set-up no preflight vouched for
    strict = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[], strict=True)
    strict.preflight(model)
    model.broken = True
    with pytest.raises(nm.errors.ForwardError):
        strict.run(model, step=0)
    with pytest.raises(nm.errors.ForwardError):
        nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[]).run(model, step=0)


def test_from_pandas_rejects_list_valued_metadata_at_construction() -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "tags": [["x"], ["y", "z"]]})
    with pytest.raises(nm.errors.ProbeSetError, match="tags"):
        nm.ProbeSet.from_pandas(frame, text_column="text", tokenizer=None)


# ---------------------------------------------------------------------- Lightning
@pytest.mark.integration
@pytest.mark.parametrize(("case", "overrides", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_lightning_fit_fails_before_the_first_step(
    tmp_path: Path, case: str, overrides: dict[str, Any], message: str
) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from _lit import lit_mlp, loader, trainer_kwargs

    from neuronmap.callbacks import NeuronMapCallback

    kwargs = _kwargs(overrides)
    if case == "wrong selector":
        kwargs["layers"] = ["encoder.*"]
    else:  # in Lightning, names are those of the LightningModule: the MLP is `net`
        kwargs["layers"] = ["net.*"]
    callback = NeuronMapCallback(**kwargs)
    model = lit_mlp()
    trainer = L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path))
    with pytest.raises(PreflightError, match=message):
        trainer.fit(model, loader(), loader(16))
    assert model.hooks_seen_in_training == []  # no training step ran
    assert trainer.global_step == 0


@pytest.mark.integration
def test_a_lightning_module_without_forward_is_named_and_module_runs_its_network(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from _lit import loader, trainer_kwargs

    from neuronmap.callbacks import NeuronMapCallback

    class NoForward(L.LightningModule):  # like Lightning's own examples: the network is self.model
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_mlp()
            self.steps = 0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.steps += 1
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = NeuronMapCallback(probe=tiny_probe(), layers=["model.net.*"], reporters=[])
    module = NoForward()
    with pytest.raises(PreflightError, match=r"has no forward\(\); in Lightning, pass NeuronMapCallback\(module="):
        L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path)).fit(module, loader())
    assert module.steps == 0

    callback = NeuronMapCallback(probe=tiny_probe(), layers=["net.*"], module="model", reporters=[],
                                 analyses=[nm.ActivationStats()])
    L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=1)).fit(module, loader())
    assert module.steps == 4 and callback.monitor.history.steps == [4]
    with pytest.raises(nm.errors.InvalidParameterError, match=r"has no such submodule; its children are \['model'\]"):
        L.Trainer(callbacks=[NeuronMapCallback(probe=tiny_probe(), layers=["net.*"], module="net", reporters=[])],
                  **trainer_kwargs(tmp_path)).fit(NoForward(), loader())


# ---------------------------------------------------------------------- HF Trainer
@pytest.mark.integration
@pytest.mark.parametrize("case", ["wrong selector", "missing column", "forward cannot take the batch"])
def test_hf_trainer_fails_before_the_first_step(tmp_path: Path, case: str) -> None:
    pytest.importorskip("transformers")
    from test_huggingface import _trainer

    from neuronmap.callbacks import NeuronMapTrainerCallback
    from neuronmap.testing import tiny_text_probe

    kwargs: dict[str, Any] = {"probe": tiny_text_probe(), "layers": ["bert.encoder.layer.*"],
                              "analyses": [nm.ActivationStats()], "reporters": []}
    if case == "wrong selector":
        kwargs["layers"] = ["encoder.layer.*"]  # the HF model is BertForSequenceClassification: `bert.` first
        message = r"Selector 'encoder\.layer\.\*' matched no module"
    elif case == "missing column":
        kwargs["analyses"] = [nm.Probing(target="topic")]
        message = r"Probing\(target='topic'\) needs probe-set column 'topic'"
    else:
        kwargs["probe"] = nm.ProbeSet.from_tensors({"input_ids": torch.full((8, 4), 10_000)})
        message = r"raised IndexError on probe batch 0"
    callback = NeuronMapTrainerCallback(**kwargs)
    trainer = _trainer(tmp_path, callback)
    with pytest.raises(PreflightError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0
