"""Block replay and stacked forwards: the causal analyses' speed-ups change no result.

Each analysis runs twice on the key-token BERT, once as it ships and once with replay off
(no block skipped) and one patched run per forward; every table must agree to float rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _synthetic import (  # noqa: F401  (one_thread: the module-wide single-thread fixture)
    BLOCKS,
    HEADS,
    KEY,
    key_token_bert,
    key_token_pairs,
    one_thread,
)

import neuronmap as nm
from neuronmap.analyses import _replay, causal_tracing, circuits, patching
from neuronmap.analyses._replay import BlockReplay, per_copy, tile
from neuronmap.capture.interventions import Node, intervene
from neuronmap.testing import tiny_mlp


def _tables(analysis: nm.Analysis) -> dict[str, pd.DataFrame]:
    monitor = nm.NeuronMap(key_token_pairs(12), layers="bert.embeddings", analyses=[analysis], reporters=[],
                           strict=True)
    return monitor.run(key_token_bert().model, step=0).results[analysis.name].tables


def _assert_same(fast: dict[str, pd.DataFrame], slow: dict[str, pd.DataFrame]) -> None:
    assert fast.keys() == slow.keys()
    for key in fast:
        a, b = fast[key], slow[key]
        assert list(a.columns) == list(b.columns)
        numeric = a.select_dtypes("number").columns
        np.testing.assert_allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), atol=1e-5, rtol=1e-5)
        pd.testing.assert_frame_equal(a.drop(columns=numeric), b.drop(columns=numeric))


@pytest.mark.parametrize("make", [
    lambda: patching.ActivationPatching(layers=BLOCKS, heads=HEADS, per_position=True, n_resamples=50),
    lambda: circuits.CircuitDiscovery(layers=BLOCKS[1:], heads=HEADS, n_resamples=50),
    lambda: causal_tracing.CausalTracing(layers=BLOCKS, corrupt=[KEY], noise=6.0, n_samples=3, max_examples=6,
                                         n_resamples=50),
], ids=["patching", "circuits", "causal_tracing"])
def test_replay_and_stacking_change_no_result(make, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _tables(make())
    monkeypatch.setattr(BlockReplay, "skipped", lambda self, nodes: [])
    for module in (patching, circuits, causal_tracing):
        monkeypatch.setattr(module, "_STACK", 0)  # one patched run per forward
    _assert_same(fast, _tables(make()))


def test_replay_skips_exactly_the_blocks_before_the_edit() -> None:
    model = key_token_bert().model
    batch = {"input_ids": key_token_pairs(4).inputs["input_ids"]}
    head = Node("bert.encoder.layer.1.attention.output.dense", 1, 2)
    replay = BlockReplay(model, [head, Node("bert.encoder.layer.0")])
    with torch.no_grad(), replay.recording():
        model(**batch)
    assert replay.skipped([head]) == ["bert.embeddings", "bert.encoder.layer.0",
                                      "bert.encoder.layer.1.attention.self"]
    assert replay.skipped([Node("bert.encoder.layer.0")]) == ["bert.embeddings", "bert.encoder.layer.0"]


def test_a_module_called_twice_is_never_replayed() -> None:
    model = tiny_mlp()
    shared = torch.nn.Sequential(model.net[0], model.net[1], model.net[0].__class__(16, 16), model.net[1])
    replay = BlockReplay(shared, [Node("2")])
    with replay.recording():
        shared(torch.randn(3, 8))
    assert replay.skipped([Node("2")]) == ["0", "2"]  # "1" and "3" are one ReLU, called twice


def test_stacked_edits_equal_separate_runs() -> None:
    model, x = tiny_mlp(), torch.randn(5, 8)
    edits = [{Node("net.1"): torch.zeros_like}, {}, {Node("net.1"): lambda a: 2 * a}]
    with torch.no_grad():
        separate = []
        for edit in edits:
            with intervene(model, edit):
                separate.append(model(x))
        with intervene(model, per_copy(edits, len(x))):
            stacked = model(tile(x, len(edits)))
    torch.testing.assert_close(stacked, torch.cat(separate))
    assert _replay.tile({"a": x, "b": (x, None)}, 2)["b"][0].shape == (10, 8)
