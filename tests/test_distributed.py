"""Sharding, gathering and wrapper handling of neuronmap.distributed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.distributed import (
    World,
    current_world,
    hook_layers,
    is_sharded,
    shard_indices,
    unwrap_model,
)
from neuronmap.errors import InvalidParameterError, LayerNotFoundError
from neuronmap.testing import tiny_mlp, tiny_probe

SCRIPT = Path(__file__).with_name("_distributed_script.py")


@pytest.mark.parametrize("n", [1, 2, 7, 37, 64])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_are_equal_sized_and_cover_every_example_once_in_order(n: int, size: int) -> None:
    shards = [shard_indices(n, World(rank, size)) for rank in range(size)]
    assert len({len(s) for s in shards}) == 1  # same batches on every rank
    assert len(shards[0]) == -(-n // size)
    real = np.concatenate([s[: max(0, min(len(s), n - r * len(s)))] for r, s in enumerate(shards)])
    np.testing.assert_array_equal(real, np.arange(n))
    assert all(0 <= i < n for s in shards for i in s)


def test_no_process_group_means_single_process() -> None:
    assert current_world() is None
    with pytest.raises(InvalidParameterError,
                       match=r"'distributed' parameter must be one of \['auto', 'off'\]; got 'yes'"):
        nm.NeuronMap(tiny_probe(), layers="net.*", distributed="yes")  # type: ignore[arg-type]


def _metrics(model: nn.Module) -> dict[str, float]:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    return monitor.run(model, step=0).metrics


def test_compiled_model_is_hooked_through_its_original_module() -> None:
    model = tiny_mlp()
    expected = _metrics(model)
    compiled = torch.compile(model, backend="eager")
    compiled(torch.randn(2, 8))  # compile before the hooks exist: they must still fire
    assert unwrap_model(compiled) is model
    assert _metrics(compiled) == expected


def test_compiled_submodule_runs_eagerly_so_its_hooks_fire() -> None:
    model = tiny_mlp()
    expected = _metrics(model)
    model.net = torch.compile(model.net, backend="eager")  # type: ignore[assignment]
    model(torch.randn(2, 8))
    assert hook_layers(model, "net.*") == {f"net.{i}": f"net._orig_mod.{i}" for i in range(5)}
    assert _metrics(model) == expected


def test_wrapper_names_are_hidden_and_errors_name_clean_layers() -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = tiny_mlp()
    model.net[2] = checkpoint_wrapper(model.net[2])
    assert hook_layers(model, ["net.2"]) == {"net.2": "net.2._checkpoint_wrapped_module"}
    with pytest.raises(LayerNotFoundError, match=r"Layer 'net.7' not found in TinyMLP; did you mean 'net.4'") as err:
        hook_layers(model, ["net.7"])
    assert "_checkpoint_wrapped_module" not in str(err.value)


def test_data_parallel_is_unwrapped_and_plain_models_are_not_sharded() -> None:
    model = tiny_mlp()
    assert unwrap_model(nn.DataParallel(model)) is model
    assert not is_sharded(model)
    assert _metrics(nn.DataParallel(model)) == _metrics(model)


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.integration
def test_two_gloo_ranks_give_the_single_process_metrics_for_ddp_and_fsdp(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), _free_port()], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = json.loads(out.read_text())
    rank1 = json.loads(Path(str(out) + ".rank1").read_text())

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from _distributed_script import N_PROBE, OrderChecksum
    finally:
        sys.path.pop(0)
    reference = nm.NeuronMap(
        tiny_probe(n=N_PROBE), layers=["net.*"], analyses=[nm.ActivationStats(), OrderChecksum()], reporters=[]
    ).run(tiny_mlp(seed=3), step=5).metrics
    assert reference["neuronmap/order_checksum/net.0/rows"] == N_PROBE
    for kind in ("ddp", "fsdp1", "fsdp2"):
        got = rank0[kind]["metrics"]
        assert set(got) == set(reference), kind
        for key, value in reference.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), (kind, key)
    # Rank 1 reports nothing; under FSDP it ran the analyses too (their forward passes need it).
    assert rank1["ddp"]["analyses"] == []
    assert rank1["fsdp1"]["analyses"] == rank1["fsdp2"]["analyses"] == ["activation_stats", "order_checksum"]
