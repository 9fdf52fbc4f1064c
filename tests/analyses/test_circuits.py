"""CircuitDiscovery on the key-token BERT, whose circuit is known by construction.

Layer 1's attention output projection is zero, so its heads can be pruned at no cost, and
the only route from position KEY to [CLS] is through a layer-0 head. The result is checked
independently of the search by re-patching with the intervention primitives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _synthetic import (  # noqa: F401  (one_thread: the module-wide single-thread fixture)
    HEADS,
    key_token_bert,
    key_token_pairs,
    one_thread,
)

import neuronmap as nm
from neuronmap.analyses.circuits import CircuitDiscovery
from neuronmap.errors import InvalidParameterError
from neuronmap.interventions import Node, intervene, record, resolve_nodes
from neuronmap.reporters import LocalReporter

MLPS = "bert.encoder.layer.*.output.dense"



@pytest.fixture(scope="module")
def circuit(tmp_path_factory: pytest.TempPathFactory) -> tuple[nm.Report, LocalReporter]:
    reporter = LocalReporter(tmp_path_factory.mktemp("circuits"), run_name="bert")
    discovery = CircuitDiscovery(layers=MLPS, heads=HEADS, keep=0.9, n_resamples=200)
    monitor = nm.NeuronMap(key_token_pairs(16), layers="bert.embeddings", analyses=[discovery],
                           reporters=[reporter], strict=True)
    report = monitor.run(key_token_bert().model, step=4)
    monitor.close()
    return report, reporter


def _kept(report: nm.Report) -> set[str]:
    nodes = report.results["circuit_discovery"].tables["nodes"]
    return set(nodes[nodes["in_circuit"]]["node"])


def _retained(ablated: list[Node]) -> float:
    """Independent check: normalised logit difference on clean prompts with ``ablated``
    patched from the corrupted prompts (mean over pairs, as in the analysis)."""
    model, pairs = key_token_bert().model, key_token_pairs(16)
    ids, labels = pairs.inputs["input_ids"], torch.tensor(pairs.labels)
    clean, corrupted, y = ids[0::2], ids[1::2], labels[0::2]
    rows = torch.arange(len(y))

    def ld(logits: torch.Tensor) -> float:
        return float((logits[rows, y] - logits[rows, 1 - y]).mean())

    with torch.no_grad():
        base_clean, base_corrupted = ld(model(input_ids=clean).logits), ld(model(input_ids=corrupted).logits)
        with record(model, ablated) as seen:
            model(input_ids=corrupted)
        with intervene(model, {n: (lambda a, s=seen[n]: s) for n in ablated}):
            patched = ld(model(input_ids=clean).logits)
    return (patched - base_corrupted) / (base_clean - base_corrupted)


def test_circuit_keeps_a_layer0_head_and_drops_the_dead_layer1_heads(circuit) -> None:
    report, _ = circuit
    kept = _kept(report)
    assert not any(".layer.1.attention" in name for name in kept)
    assert any(".layer.0.attention" in name and "/head_" in name for name in kept)
    m = report.metrics
    assert m["neuronmap/circuit_discovery/model/metric_retained"] >= 0.9
    assert m["neuronmap/circuit_discovery/model/circuit_size"] == len(kept) < 6
    for head in (0, 1):
        assert m[f"neuronmap/circuit_discovery/{HEADS.replace('*', '1')}/head_{head}/in_circuit"] == 0.0
        key = f"neuronmap/circuit_discovery/{HEADS.replace('*', '1')}/head_{head}/ablation_effect"
        assert m[key] == pytest.approx(0.0, abs=1e-6)


def test_circuit_is_sufficient_and_minimal_by_independent_patching(circuit) -> None:
    report, _ = circuit
    model = key_token_bert().model
    nodes = resolve_nodes(model, layers=MLPS, heads=HEADS)
    kept = _kept(report)
    ablated = [n for n in nodes if n.name not in kept]
    retained = _retained(ablated)
    assert retained == pytest.approx(report.metrics["neuronmap/circuit_discovery/model/metric_retained"], abs=1e-5)
    assert retained >= 0.9
    for node in nodes:
        if node.name in kept:
            assert _retained([*ablated, node]) < 0.9, f"{node.name} could have been pruned"


def test_circuit_graph_is_in_the_run_folder(circuit) -> None:
    _, reporter = circuit
    assert (reporter.run_dir / "figures" / "4" / "circuit_discovery" / "circuit.png").stat().st_size > 1000


def test_both_visit_orders_agree_on_this_model() -> None:
    discovery = CircuitDiscovery(layers=MLPS, heads=HEADS, order="effect", n_resamples=100)
    report = nm.NeuronMap(key_token_pairs(8), layers="bert.embeddings", analyses=[discovery], reporters=[],
                          strict=True).run(key_token_bert().model, step=0)
    table = report.results["circuit_discovery"].tables["nodes"]
    assert not table[table["node"].str.contains(r"layer\.1\.attention")]["in_circuit"].any()
    assert np.isfinite(table["ablation_effect"]).all()


def test_circuit_errors_say_what_is_wrong() -> None:
    with pytest.raises(InvalidParameterError, match=r"CircuitDiscovery: keep must be a float in \(0, 1\]; got 1.5"):
        CircuitDiscovery(layers="x", keep=1.5)
    with pytest.raises(InvalidParameterError,
                       match=r"CircuitDiscovery: order must be one of \['effect', 'reverse'\]; got 'random'"):
        CircuitDiscovery(layers="x", order="random")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"CircuitDiscovery: max_passes must be an int in \[1, inf\)"):
        CircuitDiscovery(layers="x", max_passes=0)
    with pytest.raises(InvalidParameterError, match="CircuitDiscovery: layers and/or heads must be given"):
        CircuitDiscovery()
