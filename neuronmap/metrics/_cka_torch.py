"""The HSIC products of :mod:`neuronmap.metrics._cka`, computed with torch on any device.

:func:`neuronmap.metrics.similarity.cka_matrix` with ``device="cuda"`` runs here: the same
two exact forms (feature space, or blocks of the sample-space Gram matrices) and the same
float64 arithmetic as the numpy path, so both give the same matrix to rounding. Only the
``L x L`` products and the ``L x n`` squared row norms return to the CPU; everything after
that (debiasing, normalisation, NaN handling) is the numpy code shared with the CPU path.

On a GPU the activations of a monitored run (``[n, d]`` per layer, already reduced) cross
the bus once, and every GEMM runs on the device: at the probe-set sizes NeuronMap uses this
turns seconds of CPU BLAS into milliseconds (``benchmarks/cka.py --device cuda``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics import _cka

if TYPE_CHECKING:
    import torch


def resolve_device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device`, or a clear error for an unusable one."""
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidParameterError(
            f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}."
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"device={device!r} was requested but torch sees no CUDA device; "
            "pass device=None to compute on the CPU with numpy."
        )
    if resolved.type == "mps":
        raise InvalidParameterError(
            "device='mps' cannot compute CKA: MPS has no float64, which CKA needs for exact "
            "products; pass device=None (numpy on the CPU) instead."
        )
    return resolved


def centered(arrays: Sequence[Any], names: Sequence[str], device: torch.device) -> list[torch.Tensor]:
    """Column-centred float64 ``[n, d]`` tensors on ``device``, checked for NaN and infinity.

    The finiteness check rides on the column means (a NaN or infinity makes its column mean
    non-finite) and is read back once for all layers: a check per layer would stall the GPU
    once per layer (H100, 12 layers of 4096 x 768: 2.0 ms of an 8.3 ms ``cka_matrix``).
    """
    import torch

    xs, finite = [], []
    for x, name in zip(arrays, names, strict=True):
        tensor = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        if tensor.ndim == 0:
            raise InvalidParameterError(
                f"{name} must be an array of shape [n_examples, n_features]; got a scalar."
            )
        tensor = tensor.to(device=device, non_blocking=True)
        tensor = tensor[:, None] if tensor.ndim == 1 else tensor.reshape(tensor.shape[0], -1)
        tensor = tensor.to(torch.float64, copy=True)  # centred in place below: never the caller's array
        mean = tensor.mean(dim=0, keepdim=True)
        finite.append(torch.isfinite(mean).all())
        xs.append(tensor.sub_(mean))
    if not bool(torch.stack(finite).all()):
        for x, name, ok in zip(arrays, names, finite, strict=True):
            if not bool(ok):  # the numpy path's check and message, on the input (centring spread the NaN)
                _cka.as_float64_matrix(x, name)
    return xs


def _products_features(xs: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]]) -> NDArray[np.float64]:
    import torch

    out = torch.full((len(xs), len(xs)), float("nan"), dtype=torch.float64, device=xs[0].device)
    for i, j in pairs:
        cross = xs[i].T @ xs[j]
        out[i, j] = out[j, i] = torch.sum(cross * cross)
    return out.cpu().numpy()


# Gram blocks held at once on a GPU. A GPU needs larger products than a CPU core to run at
# full speed, but one block for everything throws away the symmetry (only blocks r <= c are
# formed). H100, 12 layers of 4096 x 768, time against torch's x @ x.T: 96 MiB blocks
# (1024 x 1024) 1.33x, one 2 GiB block 1.5x.
_GPU_BLOCK_BYTES = 96 * 2**20


def block_size(n: int, n_layers: int, device: torch.device) -> int:
    """Side of the square Gram blocks: 96 MiB of them on a GPU (a quarter of its free memory at
    most), :data:`neuronmap.metrics._cka._BLOCK_BYTES` elsewhere."""
    import torch

    budget = _cka._BLOCK_BYTES
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = max(budget, min(_GPU_BLOCK_BYTES, free // 4))
    return _cka.block_size(n, n_layers, budget)


def _products_gram(xs: Sequence[torch.Tensor]) -> NDArray[np.float64]:
    """As :func:`neuronmap.metrics._cka.products_gram`, with the blocks on the device."""
    import torch

    n_layers, n = len(xs), xs[0].shape[0]
    device = xs[0].device
    block = block_size(n, n_layers, device)
    flat = torch.empty(n_layers * block * block, dtype=torch.float64, device=device)
    out = torch.zeros((n_layers, n_layers), dtype=torch.float64, device=device)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        for c0 in range(r0, n, block):
            c1 = min(c0 + block, n)
            grams = flat[: n_layers * (r1 - r0) * (c1 - c0)].view(n_layers, r1 - r0, c1 - c0)
            for k, x in enumerate(xs):
                torch.matmul(x[r0:r1], x[c0:c1].T, out=grams[k])
            stacked = grams.view(n_layers, -1)
            out += (1.0 if r0 == c0 else 2.0) * (stacked @ stacked.T)
    return out.cpu().numpy()


def hsic_products(
    xs: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int]],
    *,
    debiased: bool,
    form: _cka.Form,
) -> NDArray[np.float64]:
    """:func:`neuronmap.metrics._cka.hsic_products` for centred tensors on one device."""
    n = xs[0].shape[0]
    all_pairs = sorted(set(pairs) | {(k, k) for k in range(len(xs))})
    use_gram = form == "gram" or (
        form == "auto" and _cka.prefer_gram(n, [x.shape[1] for x in xs], all_pairs)
    )
    products = _products_gram(xs) if use_gram else _products_features(xs, all_pairs)
    if debiased:
        import torch

        q = torch.stack([torch.einsum("ij,ij->i", x, x) for x in xs]).cpu().numpy()
        products = _cka.debias(products, q)
    return products
