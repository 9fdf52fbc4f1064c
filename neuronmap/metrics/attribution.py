"""Input attributions: saliency, input x gradient, integrated gradients and occlusion.

Each function takes a differentiable ``forward_fn`` that maps a batch of continuous inputs
(pixels, tabular features, or token embeddings when the caller substitutes them at the
embedding layer) to model outputs, and returns one attribution per input element, with the
same shape as ``inputs``. ``forward_fn(x, *additional_args)`` receives the rows of every
tensor in ``additional_args`` that belong to the rows of ``x`` (an attention mask, token ids),
so that the functions can regroup rows freely.

Integrated gradients and occlusion evaluate the model on many perturbed copies of every
example; both process them in chunks of ``internal_batch_size`` rows, so their peak memory
depends on that number and not on ``n_steps`` or the number of occlusion windows (Captum
materialises ``n_steps x batch`` inputs unless ``internal_batch_size`` is set: captum issues
#245, #538, #632, #1350). The results agree with Captum 0.7+ (``tests/metrics/test_attribution.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import scipy.special
import torch

from neuronmap.errors import InvalidParameterError

__all__ = [
    "IntegratedGradientsResult",
    "IntegrationMethod",
    "input_x_gradient",
    "integrated_gradients",
    "occlusion",
    "saliency",
]

ForwardFn = Callable[..., torch.Tensor]
Target = int | Sequence[int] | torch.Tensor | None
IntegrationMethod = Literal[
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"
]
_METHODS: tuple[str, ...] = get_args(IntegrationMethod)


@dataclass(frozen=True)
class IntegratedGradientsResult:
    """Integrated-gradients attributions and their completeness check."""

    #: Attributions, the shape of the inputs.
    attributions: torch.Tensor
    #: Per-example completeness delta ``sum_i attr_i - (F(x) - F(x'))`` (Sundararajan et al.
    #: 2017, Prop. 1); its size measures the error of the path-integral approximation.
    delta: torch.Tensor


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive int; got {value!r}.")
    return value


def _targets(target: Target, n: int, device: torch.device) -> torch.Tensor | None:
    if target is None:
        return None
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=device)
    tensor = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if tensor.numel() != n:
        raise InvalidParameterError(
            f"target must be None, an int or one class index per example ({n}); got {tensor.numel()} indices."
        )
    return tensor


def _select(output: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The scalar output per row that is being explained."""
    if output.ndim == 1:
        return output
    flat = output.reshape(output.shape[0], -1)
    if target is None:
        if flat.shape[1] != 1:
            raise InvalidParameterError(
                f"The model returns {flat.shape[1]} outputs per example; pass target= (a class index "
                "or one per example) to choose the output to explain."
            )
        return flat[:, 0]
    if int(target.max()) >= flat.shape[1] or int(target.min()) < 0:
        raise InvalidParameterError(
            f"target indices must lie in [0, {flat.shape[1]}); got values in "
            f"[{int(target.min())}, {int(target.max())}]."
        )
    return flat.gather(1, target[:, None])[:, 0]


def _rows(args: Sequence[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
    return [a.index_select(0, index) if isinstance(a, torch.Tensor) and a.ndim else a for a in args]


def _chunks(total: int, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, total, size):
        yield torch.arange(start, min(start + size, total))


def _scores(
    forward_fn: ForwardFn,
    x: torch.Tensor,
    target: torch.Tensor | None,
    args: Sequence[torch.Tensor],
) -> torch.Tensor:
    return _select(forward_fn(x, *args), target)


def _gradient(
    forward_fn: ForwardFn,
    x: torch.Tensor,
    target: torch.Tensor | None,
    args: Sequence[torch.Tensor],
) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        # Examples are independent in eval mode, so the gradient of the sum is every row's gradient.
        (grad,) = torch.autograd.grad(_scores(forward_fn, x, target, args).sum(), x)
    return grad


def saliency(
    forward_fn: ForwardFn,
    inputs: torch.Tensor,
    *,
    target: Target = None,
    additional_args: Sequence[torch.Tensor] = (),
    absolute: bool = True,
) -> torch.Tensor:
    """Gradient saliency ``|dF_c / dx|`` (Simonyan, Vedaldi & Zisserman 2014, eq. 2 / Sec. 3.1).

    Args:
        forward_fn: ``forward_fn(x, *additional_args)`` -> outputs ``[n]`` or ``[n, classes]``.
        inputs: ``[n, ...]`` continuous inputs.
        target: Output to explain: a class index, one per example, or ``None`` for scalar outputs.
        additional_args: Per-example tensors passed on to ``forward_fn``.
        absolute: Return the magnitude of the gradient (as Simonyan et al.), else the signed gradient.

    Returns:
        ``[n, ...]`` attributions (the shape of ``inputs``).

    Example:
        >>> w = torch.tensor([1.0, -2.0])
        >>> saliency(lambda x: x @ w, torch.ones(3, 2))[0].tolist()
        [1.0, 2.0]
    """
    grad = _gradient(
        forward_fn, inputs, _targets(target, len(inputs), inputs.device), additional_args
    )
    return grad.abs() if absolute else grad


def input_x_gradient(
    forward_fn: ForwardFn,
    inputs: torch.Tensor,
    *,
    target: Target = None,
    additional_args: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Input times gradient ``x * dF_c / dx`` (Shrikumar et al. 2016, "Not Just a Black Box", Sec. 2).

    For a linear model it equals the exact contribution ``w_i x_i`` of every input.

    Args:
        forward_fn, inputs, target, additional_args: As in :func:`saliency`.

    Returns:
        ``[n, ...]`` attributions.
    """
    grad = _gradient(
        forward_fn, inputs, _targets(target, len(inputs), inputs.device), additional_args
    )
    return inputs.detach() * grad


def _path_weights(method: IntegrationMethod, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes ``alpha`` in [0, 1] and weights summing to 1.

    Nodes follow Captum. The trapezoid weights differ: Captum gives every node ``1/n`` and
    halves the two ends, so its weights sum to ``1 - 1/n`` and a linear model's attributions
    come out ``(n - 1)/n`` too small; here the node spacing ``1/(n - 1)`` is used, the
    composite trapezoid rule (Sotoudeh & Thakur 2019, arXiv:1908.06214, Sec. 4), which is exact
    for linear models.
    """
    if method == "gausslegendre":
        # scipy's Golub-Welsch on the tridiagonal Jacobi matrix: O(n^2), where numpy's
        # leggauss solves a dense O(n^3) eigenproblem (2000 nodes: seconds with numpy, 0.5 s here).
        nodes, weights = scipy.special.roots_legendre(n_steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if n_steps < 2:
        raise InvalidParameterError(f"Riemann rules need n_steps >= 2; got {n_steps}.")
    if method == "riemann_trapezoid":
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n_steps), weights
    weights = np.full(n_steps, 1.0 / n_steps)
    start, stop = {
        "riemann_left": (0.0, 1.0 - 1.0 / n_steps),
        "riemann_right": (1.0 / n_steps, 1.0),
        "riemann_middle": (0.5 / n_steps, 1.0 - 0.5 / n_steps),
    }[method]
    return np.linspace(start, stop, n_steps), weights


def _as_baselines(baselines: torch.Tensor | float | None, inputs: torch.Tensor) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    base = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    try:
        return torch.broadcast_to(base, inputs.shape).contiguous()
    except RuntimeError as err:
        raise InvalidParameterError(
            f"baselines must broadcast to the inputs' shape {tuple(inputs.shape)}; got shape {tuple(base.shape)}."
        ) from err


def integrated_gradients(
    forward_fn: ForwardFn,
    inputs: torch.Tensor,
    *,
    baselines: torch.Tensor | float | None = None,
    target: Target = None,
    additional_args: Sequence[torch.Tensor] = (),
    n_steps: int = 50,
    method: IntegrationMethod = "gausslegendre",
    internal_batch_size: int = 64,
) -> IntegratedGradientsResult:
    """Integrated gradients along the straight path from ``baselines`` to ``inputs``.

    ``IG_i(x) = (x_i - x'_i) * int_0^1 dF(x' + a (x - x')) / dx_i da`` (Sundararajan, Taly & Yan
    2017, "Axiomatic Attribution for Deep Networks", eq. 1), approximated by a quadrature rule
    with ``n_steps`` nodes (their eq. 3 is the Riemann sum; Gauss-Legendre converges faster).
    Completeness (their Prop. 1) says the attributions sum to ``F(x) - F(x')``; the returned
    delta is the approximation's error against it.

    The ``n_steps x n`` interpolated inputs are generated and evaluated ``internal_batch_size``
    rows at a time and their gradients accumulated in place, so memory does not grow with
    ``n_steps``.

    Args:
        forward_fn, inputs, target, additional_args: As in :func:`saliency`.
        baselines: The reference input ``x'`` (default zeros), broadcastable to ``inputs``.
        n_steps: Quadrature nodes.
        method: ``gausslegendre`` or ``riemann_{trapezoid,left,right,middle}``.
        internal_batch_size: Rows per forward/backward pass.

    Returns:
        :class:`IntegratedGradientsResult` with ``attributions`` and per-example ``delta``.

    Raises:
        InvalidParameterError: Unknown method, non-positive sizes, or baselines of the wrong shape.

    Example:
        >>> w = torch.tensor([1.0, -2.0, 3.0])
        >>> res = integrated_gradients(lambda x: x @ w, torch.ones(2, 3), n_steps=4)
        >>> res.attributions[0].tolist(), abs(float(res.delta[0])) < 1e-6
        ([1.0, -2.0, 3.0], True)
    """
    if method not in _METHODS:
        raise InvalidParameterError(
            f"The 'method' parameter must be one of {list(_METHODS)}; got {method!r} instead."
        )
    _check_positive("n_steps", n_steps)
    _check_positive("internal_batch_size", internal_batch_size)
    inputs = inputs.detach()
    n = inputs.shape[0]
    base = _as_baselines(baselines, inputs)
    targets = _targets(target, n, inputs.device)
    alphas_np, weights_np = _path_weights(method, n_steps)
    alphas = torch.as_tensor(alphas_np, dtype=inputs.dtype, device=inputs.device)
    weights = torch.as_tensor(weights_np, dtype=inputs.dtype, device=inputs.device)
    diff = inputs - base
    total = torch.zeros_like(inputs)
    tail = (1,) * (inputs.ndim - 1)
    # Row k is step k // n of example k % n: step-major like Captum, generated chunk by chunk.
    for rows in _chunks(n_steps * n, internal_batch_size):
        rows = rows.to(inputs.device)
        example, step = rows % n, rows // n
        scaled = base.index_select(0, example) + alphas[step].view(-1, *tail) * diff.index_select(
            0, example
        )
        row_targets = None if targets is None else targets.index_select(0, example)
        grad = _gradient(forward_fn, scaled, row_targets, _rows(additional_args, example))
        total.index_add_(0, example, grad * weights[step].view(-1, *tail))
    attributions = total * diff
    with torch.no_grad():
        gap = _batched_scores(
            forward_fn, inputs, targets, additional_args, internal_batch_size
        ) - _batched_scores(forward_fn, base, targets, additional_args, internal_batch_size)
    delta = attributions.reshape(n, -1).sum(dim=1) - gap.to(attributions.dtype)
    return IntegratedGradientsResult(attributions=attributions, delta=delta)


def _batched_scores(
    forward_fn: ForwardFn,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    args: Sequence[torch.Tensor],
    size: int,
) -> torch.Tensor:
    parts = []
    for rows in _chunks(len(x), size):
        rows = rows.to(x.device)
        tgt = None if targets is None else targets.index_select(0, rows)
        parts.append(_scores(forward_fn, x.index_select(0, rows), tgt, _rows(args, rows)))
    return torch.cat(parts)


def _window_slices(
    shape: Sequence[int], window: Sequence[int], strides: Sequence[int]
) -> list[tuple[slice, ...]]:
    """Every window position, clipped at the far edge like Captum's (``ceil((d - w) / s) + 1`` per axis)."""
    starts = [
        range(0, s * math.ceil((d - w) / s) + 1, s)
        for d, w, s in zip(shape, window, strides, strict=True)
    ]
    return [
        tuple(slice(p, p + w) for p, w in zip(pos, window, strict=True))
        for pos in itertools.product(*starts)
    ]


def occlusion(
    forward_fn: ForwardFn,
    inputs: torch.Tensor,
    *,
    window: Sequence[int],
    strides: Sequence[int] | None = None,
    baselines: torch.Tensor | float = 0.0,
    target: Target = None,
    additional_args: Sequence[torch.Tensor] = (),
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Occlusion: the drop in the output when a sliding window is replaced by a baseline.

    Every input element gets the mean, over the windows that cover it, of ``F(x) - F(x with the
    window occluded)`` (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
    Networks", Sec. 4.2; Captum's ``Occlusion`` averages the same way).

    Args:
        forward_fn, inputs, target, additional_args: As in :func:`saliency`.
        window: Window shape over the per-example axes (``(1, d)`` occludes one token of ``[t, d]``
            embeddings; ``(3, 8, 8)`` an 8x8 patch of a ``[3, H, W]`` image).
        strides: Step of the window per axis (default: the window, i.e. no overlap).
        baselines: The replacement value: a scalar or a tensor broadcastable to ``inputs``.
        internal_batch_size: Occluded rows per forward pass.

    Returns:
        ``[n, ...]`` attributions.

    Raises:
        InvalidParameterError: The window or strides do not fit the inputs.
    """
    _check_positive("internal_batch_size", internal_batch_size)
    inputs = inputs.detach()
    shape = tuple(inputs.shape[1:])
    window = tuple(int(w) for w in window)
    strides = window if strides is None else tuple(int(s) for s in strides)
    if len(window) != len(shape) or len(strides) != len(shape):
        raise InvalidParameterError(
            f"window and strides need one entry per input axis {shape}; got window={window}, strides={strides}."
        )
    if any(w < 1 or w > d for w, d in zip(window, shape, strict=True)) or any(
        s < 1 for s in strides
    ):
        raise InvalidParameterError(
            f"Each window size must lie in [1, input size] and each stride be >= 1; got window={window}, "
            f"strides={strides} for inputs of shape {shape}."
        )
    if any(s > w and w < d for s, w, d in zip(strides, window, shape, strict=True)):
        raise InvalidParameterError(
            f"A stride larger than its window leaves input elements that no window covers; got "
            f"window={window}, strides={strides} for inputs of shape {shape}."
        )
    n = inputs.shape[0]
    base = _as_baselines(baselines, inputs)
    targets = _targets(target, n, inputs.device)
    windows = _window_slices(shape, window, strides)
    with torch.no_grad():
        reference = _batched_scores(
            forward_fn, inputs, targets, additional_args, internal_batch_size
        )
        total = torch.zeros_like(inputs)
        counts = torch.zeros(shape, dtype=inputs.dtype, device=inputs.device)
        for region in windows:
            counts[region] += 1
        for rows in _chunks(len(windows) * n, internal_batch_size):
            rows = rows.to(inputs.device)
            example, win = rows % n, rows // n
            mask = torch.zeros((len(rows), *shape), dtype=inputs.dtype, device=inputs.device)
            for j, w in enumerate(win.tolist()):
                mask[(j,) + windows[w]] = 1
            occluded = (
                inputs.index_select(0, example) * (1 - mask) + base.index_select(0, example) * mask
            )
            row_targets = None if targets is None else targets.index_select(0, example)
            drop = reference.index_select(0, example) - _scores(
                forward_fn, occluded, row_targets, _rows(additional_args, example)
            )
            total.index_add_(0, example, drop.view(-1, *(1,) * len(shape)).to(inputs.dtype) * mask)
    return total / counts.clamp(min=1)
