"""Attribution numerics: known answers, Captum agreement, chunking invariance, bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from neuronmap._imports import CAPTUM_AVAILABLE
from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.attribution import (
    input_x_gradient,
    integrated_gradients,
    occlusion,
    saliency,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Input Tensor 0 did not already require gradients:UserWarning"
)
needs_captum = pytest.mark.skipif(not CAPTUM_AVAILABLE, reason=str(CAPTUM_AVAILABLE))
RULES = ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]


@pytest.fixture
def linear() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3).double()
    return model, torch.randn(5, 6, dtype=torch.double)


def _convnet() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 7 * 6, 4),
    ).double()


# ---------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("rule", RULES)
def test_linear_model_integrated_gradients_is_input_times_weight(linear, rule):
    model, x = linear
    target = torch.tensor([0, 1, 2, 0, 1])
    baseline = torch.full((6,), 0.5, dtype=torch.double)
    res = integrated_gradients(
        model, x, target=target, baselines=baseline, n_steps=7, method=rule, internal_batch_size=4
    )
    expected = (x - baseline) * model.weight[target].detach()
    torch.testing.assert_close(res.attributions, expected)
    assert res.delta.abs().max() < 1e-10  # completeness holds exactly for a linear model


def test_linear_model_gradient_methods(linear):
    model, x = linear
    w = model.weight[1].detach()
    torch.testing.assert_close(input_x_gradient(model, x, target=1), x * w)
    torch.testing.assert_close(saliency(model, x, target=1), w.abs().expand_as(x))
    torch.testing.assert_close(saliency(model, x, target=1, absolute=False), w.expand_as(x))


def test_occlusion_of_linear_model_is_input_times_weight(linear):
    model, x = linear
    # Occluding feature j with 0 lowers the logit by exactly x_j w_j.
    torch.testing.assert_close(
        occlusion(model, x, window=(1,), target=2), x * model.weight[2].detach()
    )


class _OnePosition(torch.nn.Module):
    """A sequence model whose score depends on the token at ``position`` only."""

    def __init__(self, position: int, dim: int) -> None:
        super().__init__()
        self.position = position
        self.v = torch.nn.Parameter(torch.randn(dim, dtype=torch.double))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[:, self.position] @ self.v) + x[:, self.position].pow(2).sum(-1)


@pytest.mark.parametrize(
    "method", ["saliency", "input_x_gradient", "integrated_gradients", "occlusion"]
)
def test_output_depending_on_one_position_is_attributed_to_it(method):
    model = _OnePosition(position=2, dim=4)
    x = torch.randn(3, 6, 4, dtype=torch.double)
    if method == "integrated_gradients":
        attr = integrated_gradients(model, x, n_steps=16).attributions
    elif method == "occlusion":
        attr = occlusion(model, x, window=(1, 4))
    else:
        attr = {"saliency": saliency, "input_x_gradient": input_x_gradient}[method](model, x)
    per_token = attr.abs().sum(-1)
    assert (per_token.argmax(dim=1) == 2).all()
    assert per_token[:, [0, 1, 3, 4, 5]].abs().max() == 0


# ---------------------------------------------------------------------------- Captum agreement
@needs_captum
@pytest.mark.parametrize("rule", RULES)
def test_integrated_gradients_agrees_with_captum(rule):
    from captum.attr import IntegratedGradients

    net, x = _convnet(), torch.randn(5, 2, 7, 6, dtype=torch.double)
    target = torch.tensor([0, 1, 2, 3, 0])
    ours = integrated_gradients(
        net, x, target=target, baselines=0.1, n_steps=20, method=rule, internal_batch_size=7
    )
    theirs = IntegratedGradients(net).attribute(
        x, baselines=0.1, target=target, n_steps=20, method=rule
    )
    if rule == "riemann_trapezoid":
        theirs = theirs * 20 / 19  # Captum's trapezoid weights sum to 1 - 1/n (see _path_weights)
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-6, atol=1e-7)


@needs_captum
def test_completeness_delta_agrees_with_captum():
    from captum.attr import IntegratedGradients

    net, x = _convnet(), torch.randn(5, 2, 7, 6, dtype=torch.double)
    ours = integrated_gradients(
        net, x, target=2, n_steps=3, method="riemann_left", internal_batch_size=4
    )
    _, delta = IntegratedGradients(net).attribute(
        x, target=2, n_steps=3, method="riemann_left", return_convergence_delta=True
    )
    assert ours.delta.abs().max() > 1e-4  # a 3-node left sum leaves a visible error
    torch.testing.assert_close(ours.delta, delta, rtol=1e-6, atol=1e-7)


@needs_captum
@pytest.mark.parametrize(
    ("window", "strides", "baseline"),
    [((2, 3, 2), (1, 2, 2), 0.0), ((1, 3, 3), None, 0.3), ((2, 1, 1), (1, 1, 1), -1.0)],
)
def test_occlusion_agrees_with_captum(window, strides, baseline):
    from captum.attr import Occlusion

    net, x = _convnet(), torch.randn(4, 2, 7, 6, dtype=torch.double)
    target = torch.tensor([3, 1, 0, 2])
    ours = occlusion(
        net,
        x,
        window=window,
        strides=strides,
        baselines=baseline,
        target=target,
        internal_batch_size=9,
    )
    theirs = Occlusion(net).attribute(
        x,
        sliding_window_shapes=window,
        strides=strides or window,
        baselines=baseline,
        target=target,
    )
    # Captum returns float32 when the baseline is a Python float.
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-6)


@needs_captum
def test_gradient_methods_agree_with_captum():
    from captum.attr import InputXGradient, Saliency

    net, x = _convnet(), torch.randn(4, 2, 7, 6, dtype=torch.double)
    torch.testing.assert_close(saliency(net, x, target=2), Saliency(net).attribute(x, target=2))
    torch.testing.assert_close(
        input_x_gradient(net, x, target=2), InputXGradient(net).attribute(x, target=2)
    )


def test_additional_args_follow_their_rows():
    """A per-example mask passed on to the model stays aligned with the regrouped rows."""
    w = torch.randn(5, dtype=torch.double)

    def forward(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x * mask) @ w

    x = torch.randn(4, 5, dtype=torch.double)
    mask = (torch.rand(4, 5) > 0.5).double()
    res = integrated_gradients(
        forward, x, additional_args=(mask,), n_steps=3, internal_batch_size=5
    )
    torch.testing.assert_close(res.attributions, x * mask * w)
    torch.testing.assert_close(
        occlusion(forward, x, window=(1,), additional_args=(mask,), internal_batch_size=3),
        x * mask * w,
    )


# ---------------------------------------------------------------------------- memory
def test_internal_batch_size_bounds_rows_and_does_not_change_results():
    net, x = _convnet(), torch.randn(3, 2, 7, 6, dtype=torch.double)
    rows: list[int] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        rows.append(len(inputs))
        return net(inputs)

    reference = integrated_gradients(
        net, x, target=1, n_steps=40, internal_batch_size=1000
    ).attributions
    chunked = integrated_gradients(
        forward, x, target=1, n_steps=40, internal_batch_size=8
    ).attributions
    torch.testing.assert_close(chunked, reference)
    assert max(rows) == 8 and sum(rows) == 40 * 3 + 2 * 3  # path points, then F(x) and F(baseline)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from neuronmap.metrics.attribution import integrated_gradients
    torch.set_num_threads(1)
    w = torch.randn(20_000)
    x = torch.randn(4, 20_000)
    f = lambda v: v @ w
    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    integrated_gradients(f, x, n_steps=16, internal_batch_size=32)
    before = peak_mib()
    # Materialising every path point would take 2000 x 4 x 20k x 4 B = 610 MiB.
    integrated_gradients(f, x, n_steps=2000, internal_batch_size=32)
    print(peak_mib() - before)
    """
)


def test_integrated_gradients_peak_memory_does_not_grow_with_n_steps():
    """Peak RSS of a fresh process: 2000 steps cost no more than 16 beyond the chunk.

    tracemalloc cannot see tensors (PyTorch's CPU allocator bypasses Python's), so the
    process-wide high-water mark ``ru_maxrss`` is measured instead, in a subprocess so that
    other tests' allocations do not mask it.
    """
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    growth_mib = float(out.stdout.strip().splitlines()[-1])
    assert growth_mib < 64, f"peak memory grew by {growth_mib:.0f} MiB with n_steps"


# ---------------------------------------------------------------------------- errors
def test_errors_say_what_is_allowed(linear):
    model, x = linear
    with pytest.raises(
        InvalidParameterError,
        match=r"'method' parameter must be one of .*'gausslegendre'.*got 'simpson'",
    ):
        integrated_gradients(model, x, target=0, method="simpson")
    with pytest.raises(InvalidParameterError, match="returns 3 outputs per example; pass target="):
        saliency(model, x)
    with pytest.raises(InvalidParameterError, match=r"target indices must lie in \[0, 3\)"):
        saliency(model, x, target=3)
    with pytest.raises(InvalidParameterError, match="n_steps must be a positive int; got 0"):
        integrated_gradients(model, x, target=0, n_steps=0)
    with pytest.raises(InvalidParameterError, match=r"one entry per input axis \(6,\)"):
        occlusion(model, x, window=(1, 1), target=0)
    with pytest.raises(InvalidParameterError, match="stride larger than its window"):
        occlusion(model, x, window=(2,), strides=(3,), target=0)
    with pytest.raises(
        InvalidParameterError, match=r"baselines must broadcast to the inputs' shape \(5, 6\)"
    ):
        integrated_gradients(model, x, target=0, baselines=torch.zeros(4))
