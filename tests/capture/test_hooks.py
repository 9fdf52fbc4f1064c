from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neuronmap import ProbeSet
from neuronmap.capture import ActivationCapture, Activations, capture_activations, reduce_tokens
from neuronmap.errors import ForwardError, InvalidParameterError, MemoryBudgetError
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_probe, tiny_text_probe


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    m = mask.unsqueeze(-1).float()
    return ((hidden * m).sum(1) / m.sum(1)).numpy()


def test_mean_capture_equals_masked_mean_of_output_hidden_states() -> None:
    model, probe = tiny_bert(layers=2), tiny_text_probe(n=20)
    acts = capture_activations(model, probe, layers="encoder.layer.*", reduce="mean", batch_size=6)
    with torch.no_grad():
        hidden = model(**probe.inputs, output_hidden_states=True).hidden_states
    for i in range(2):
        np.testing.assert_allclose(acts[f"encoder.layer.{i}"], _masked_mean(hidden[i + 1], probe.attention_mask),
                                   atol=1e-5)


@pytest.mark.parametrize("reduce", ["first", "last", "max", "none"])
def test_other_reductions_match_their_definition(reduce) -> None:
    model, probe = tiny_bert(layers=1), tiny_text_probe(n=12)
    acts = capture_activations(model, probe, layers="encoder.layer.0", reduce=reduce, batch_size=5)
    with torch.no_grad():
        hidden = model(**probe.inputs, output_hidden_states=True).hidden_states[1]
    mask = probe.attention_mask.bool()
    lengths = mask.sum(1)
    if reduce == "first":
        expected = hidden[:, 0]
    elif reduce == "last":
        expected = hidden[torch.arange(len(hidden)), lengths - 1]
    elif reduce == "max":
        expected = hidden.masked_fill(~mask.unsqueeze(-1), -1e9).amax(1)
    else:
        expected = hidden
    got = acts["encoder.layer.0"]
    if reduce == "none":  # padding positions differ only where the mask is 0
        got = got * mask.unsqueeze(-1).numpy()
        expected = expected * mask.unsqueeze(-1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_conv_maps_are_pooled_over_space() -> None:
    x = torch.randn(2, 3, 4, 4)
    np.testing.assert_allclose(reduce_tokens(x, "mean").numpy(), x.mean(dim=(2, 3)).numpy(), atol=1e-6)
    with pytest.raises(InvalidParameterError, match="reduce='first' needs a sequence output"):
        reduce_tokens(x, "first")


def test_input_capture_and_model_output() -> None:
    model, probe = tiny_mlp(), tiny_probe(n=10)
    acts = capture_activations(model, probe, layers="net.2", capture="input", with_outputs=True)
    with torch.no_grad():
        relu1 = model.net[1](model.net[0](probe.inputs["input"]))
        logits = model(probe.inputs["input"])
    np.testing.assert_allclose(acts["net.2"], relu1.numpy(), atol=1e-6)
    np.testing.assert_allclose(acts.outputs, logits.numpy(), atol=1e-6)


def test_training_mode_restored_and_user_hooks_untouched() -> None:
    model = tiny_mlp().train()
    calls = []
    handle = model.net[0].register_forward_hook(lambda *a: calls.append(1))
    capture_activations(model, tiny_probe(n=8), layers="net.*", batch_size=4)
    assert model.training
    assert len(calls) == 2
    assert len(model.net[0]._forward_hooks) == 1  # only the user's hook is left
    handle.remove()


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.lin(x)
        raise RuntimeError("boom inside forward")


def test_model_that_raises_inside_forward_removes_hooks_and_chains_the_error() -> None:
    model = _Broken()
    with pytest.raises(ForwardError,
                       match=r"_Broken raised RuntimeError on probe batch 0 \(inputs \{'input': \(4, 4\)\}") as info:
        capture_activations(model, ProbeSet(torch.randn(4, 4)), layers="lin")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not model.lin._forward_hooks


class _NoTensor(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[None, str]:
        return None, "x"


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.odd = _NoTensor()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.odd(x)
        return self.lin(x)


def test_module_output_without_tensor_is_a_clear_error() -> None:
    with pytest.raises(InvalidParameterError,
                       match=r"Module 'odd' \(_NoTensor\) output holds no tensor: got tuple\(NoneType, str\)"):
        capture_activations(_Wrapper(), ProbeSet(torch.randn(2, 3)), layers="odd")


def test_unknown_reduce_lists_allowed_values() -> None:
    with pytest.raises(InvalidParameterError,
                       match=r"must be one of \['mean', 'first', 'last', 'max', 'none'\]; got 'avg'"):
        capture_activations(tiny_mlp(), tiny_probe(), layers="net.0", reduce="avg")  # type: ignore[arg-type]


def test_reduce_none_over_budget_reports_the_estimate() -> None:
    with pytest.raises(MemoryBudgetError,
                       match=r"reduce='none' would hold about .* KiB of activations for 32 examples x 2 layers"
                             r".*over max_bytes=1.0 KiB. Use reduce='mean'"):
        capture_activations(tiny_bert(), tiny_text_probe(), layers="encoder.layer.*", reduce="none", max_bytes=1024)


def test_probe_batches_are_moved_to_the_requested_device() -> None:
    probe = tiny_probe(n=6)
    assert all(b["input"].device.type == "cpu" for b in probe.batches(4, device="cpu"))
    acts = capture_activations(tiny_mlp(), probe, layers="net.0", device="cpu")
    assert acts["net.0"].shape == (6, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_probe_runs_on_a_cuda_model() -> None:  # pragma: no cover - GPU only
    acts = capture_activations(tiny_mlp().cuda(), tiny_probe(n=6), layers="net.0")
    assert acts["net.0"].shape == (6, 16)


def test_activation_capture_context_manager_and_npz_round_trip(tmp_path) -> None:
    model = tiny_mlp()
    with ActivationCapture(model, ["net.0", "net.2"]) as cap:
        model(torch.randn(3, 8))
        model(torch.randn(2, 8))
    assert not model.net[0]._forward_hooks
    collected = cap.collect()
    assert collected["net.0"].shape == (5, 16)
    acts = Activations({k: v.numpy() for k, v in collected.items()}, reduce="mean")
    loaded = Activations.load(acts.save(tmp_path / "a.npz"))
    np.testing.assert_array_equal(loaded["net.2"], acts["net.2"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_capture_copies_reduced_tensors_to_host() -> None:  # pragma: no cover - GPU only
    model, probe = tiny_bert().cuda(), tiny_text_probe()
    acts = capture_activations(model, probe, layers="encoder.layer.*")
    cpu = capture_activations(model.cpu(), probe, layers="encoder.layer.*")
    np.testing.assert_allclose(acts["encoder.layer.1"], cpu["encoder.layer.1"], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("reduce", ["mean", "first", "last", "max", "none"])
def test_cuda_capture_equals_cpu_for_every_reduction(reduce: str) -> None:  # pragma: no cover - GPU only
    model, probe = tiny_bert(num_labels=3), tiny_text_probe()
    layers = "bert.encoder.layer.*"
    cpu = capture_activations(model, probe, layers=layers, reduce=reduce, batch_size=3, with_outputs=True)
    gpu = capture_activations(model.cuda(), probe, layers=layers, reduce=reduce, batch_size=3, with_outputs=True)
    assert cpu.outputs is not None and cpu.outputs.shape == (len(probe), 3)
    for name in cpu:
        np.testing.assert_allclose(gpu[name], cpu[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(gpu.outputs, cpu.outputs, atol=1e-4)


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def test_capture_is_a_snapshot_taken_before_later_in_place_ops(device: str) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True)).to(device)
    x = torch.randn(10, 8)
    acts = capture_activations(model, ProbeSet(x), layers=["0"], batch_size=4)
    expected = model[0](x.to(device)).detach().cpu().numpy()  # before the in-place ReLU
    np.testing.assert_allclose(acts["0"], expected, atol=1e-5)
    assert (acts["0"] < 0).any()
