"""Capture settings checked before a model runs (neuronmap/capture/checks.py), and corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuronmap as nm
from neuronmap.capture import (
    Activations,
    available_devices,
    capture_activations,
    check_device,
    check_max_bytes,
)
from neuronmap.errors import CorruptFileError, InvalidParameterError
from neuronmap.testing import tiny_mlp, tiny_probe

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")


def _monitor(**kwargs: object) -> nm.NeuronMap:
    return nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[], **kwargs)


@pytest.mark.parametrize(("value", "hint"), [(-1, ""), (0, ""), ("1GB", r" \(sizes are plain byte counts"),
                                             (1.5, ""), (True, "")])
def test_bad_max_bytes_are_rejected_at_construction(value: object, hint: str) -> None:
    with pytest.raises(InvalidParameterError,
                       match=rf"The 'max_bytes' parameter must be a positive int number of bytes or None{hint}.*"
                             rf"Got {value!r} instead"):
        _monitor(max_bytes=value)


def test_good_max_bytes() -> None:
    assert _monitor(max_bytes=2**20).max_bytes == 2**20
    assert _monitor(max_bytes=np.int64(4096)).max_bytes == 4096
    assert check_max_bytes(None) is None


@no_cuda
def test_cuda_on_a_cpu_only_machine_is_a_clear_error_at_construction() -> None:
    message = (r"The 'device' parameter is 'cuda', but torch.cuda.is_available\(\) is False .* "
               r"Available devices: \['cpu'")
    with pytest.raises(InvalidParameterError, match=message):
        _monitor(device="cuda")
    with pytest.raises(InvalidParameterError, match=r"'cuda:1', but torch.cuda.is_available\(\) is False"):
        _monitor(device=torch.device("cuda:1"))
    with pytest.raises(InvalidParameterError, match=r"torch\.cuda\.is_available"):  # the public capture path too
        capture_activations(tiny_mlp(), tiny_probe(n=4), layers="net.*", device="cuda")


def test_unknown_or_wrong_type_devices() -> None:
    with pytest.raises(InvalidParameterError, match=r"must be one of \['cpu'.*Got 'gpu0' instead"):
        check_device("gpu0")
    with pytest.raises(InvalidParameterError, match=r"Got int 3 instead"):
        check_device(3)
    with pytest.raises(InvalidParameterError, match="cannot be 'meta'"):
        check_device("meta")


def test_available_devices_run() -> None:
    assert check_device(None) is None
    for name in available_devices():
        assert check_device(name) == torch.device(name)
    report = _monitor(device="cpu").run(tiny_mlp(), step=0)
    assert report.results["activation_stats"].status == "ok"


def test_activations_load_of_corrupt_files(tmp_path) -> None:
    good = tmp_path / "acts.npz"
    capture_activations(tiny_mlp(), tiny_probe(n=16), layers="net.*").save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a zip signature, then noise
    text = tmp_path / "text.npz"
    text.write_text("layer,value\nnet.0,1\n")
    for path in (truncated, garbage, text):
        with pytest.raises(CorruptFileError, match=rf"Cannot read activations from '.*{path.name}': it is truncated"):
            Activations.load(path)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(CorruptFileError, match="holds no activations"):
        Activations.load(other)
    with pytest.raises(FileNotFoundError, match="No activations file"):
        Activations.load(tmp_path / "missing.npz")
    assert Activations.load(good).layers[:2] == ["net.0", "net.1"]
