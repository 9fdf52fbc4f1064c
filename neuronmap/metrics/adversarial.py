"""Gradient attacks in a continuous input space: FGSM, PGD and the minimal flipping radius.

Pure tensor functions, no hooks and no I/O: ``forward`` maps a batch of (continuous) inputs to
one score ``[b]`` (binary, decision ``score > 0``) or logits ``[b, k]``. Each attack is
untargeted against a reference label ``y`` (usually the model's own clean prediction, so the
attack measures how far the *decision* is from changing) and stays inside a ball of radius
``radius`` around the clean input:

* ``norm="linf"``: every coordinate moves by at most ``radius``;
* ``norm="l2"``: each *unit* (the axes ``dims``: the whole example for pixels and features,
  one token's embedding vector for text) moves by at most ``radius`` in L2.

``radius`` broadcasts against ``x`` (``[b, 1]`` for one radius per example, ``[b, t, 1]`` for
one per token), which is how the embedding space gets a ball relative to each token's norm.

FGSM is one signed-gradient step to the boundary of the ball (Goodfellow et al. 2015, eq. 3;
the L2 version steps along the normalised gradient, the "fast gradient method" of Miyato et
al. 2016). PGD iterates projected steps of size ``2.5 * radius / steps`` (Madry et al. 2018,
sec. 2 and app. A) from the FGSM point, keeping each example's first iterate that changes the
decision: starting there makes PGD's flip set contain FGSM's, so PGD is never weaker.

For a linear score ``w.x + b`` FGSM in L-inf changes the score by exactly ``radius * ||w||_1``
towards the other class, so it flips an example iff ``|w.x + b| < radius * ||w||_1`` (the dual
norm bound of Goodfellow et al. 2015, sec. 3); the tests check this closed form.

References:
    Goodfellow, Shlens & Szegedy (2015). Explaining and Harnessing Adversarial Examples. ICLR.
    Miyato, Dai & Goodfellow (2016). Adversarial Training Methods for Semi-Supervised Text
    Classification. ICLR 2017 (perturbations of word embeddings).
    Madry, Makelov, Schmidt, Tsipras & Vladu (2018). Towards Deep Learning Models Resistant
    to Adversarial Attacks. ICLR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from neuronmap.errors import InvalidParameterError

__all__ = ["NORMS", "attack_loss", "decisions", "fgsm", "minimal_flip_radius", "pgd", "random_perturbation"]

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
Forward = Callable[[torch.Tensor], torch.Tensor]


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise InvalidParameterError(f"The 'norm' parameter must be one of {list(NORMS)}; got {norm!r} instead.")


def decisions(scores: torch.Tensor) -> torch.Tensor:
    """Predicted classes: ``score > 0`` for one score per example, else the argmax."""
    return (scores > 0).long() if scores.ndim == 1 else scores.argmax(dim=1)


def attack_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss of ``y``: logistic loss for one score, cross-entropy for logits."""
    if scores.ndim == 1:
        return F.binary_cross_entropy_with_logits(scores.float(), y.float(), reduction="none")
    return F.cross_entropy(scores.float(), y, reduction="none")


def _unit_norm(t: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    return t.norm(dim=tuple(dims), keepdim=True)


def _norm_dims(x: torch.Tensor, dims: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(range(1, x.ndim)) if dims is None else tuple(dims)


def _gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = attack_loss(forward(x), y).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _step(grad: torch.Tensor, size: torch.Tensor, norm: str, dims: tuple[int, ...]) -> torch.Tensor:
    if norm == "linf":
        return size * grad.sign()
    return size * grad / _unit_norm(grad, dims).clamp_min(1e-12)


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str, dims: tuple[int, ...]) -> torch.Tensor:
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    scale = (radius / _unit_norm(delta, dims).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def fgsm(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: torch.Tensor | float,
    *,
    norm: Norm = "linf",
    dims: Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One fast-gradient step to the edge of the ball (Goodfellow et al. 2015, eq. 3).

    Args:
        forward: Inputs -> scores ``[b]`` or logits ``[b, k]``.
        x: Clean inputs ``[b, ...]``.
        y: Reference labels ``[b]`` whose loss the attack increases.
        radius: Ball radius, a float or a tensor broadcasting against ``x``.
        norm: ``"linf"`` or ``"l2"``.
        dims: Axes of one L2 unit (default: every non-batch axis).
        mask: 0/1 tensor broadcasting against ``x``; positions with 0 are not perturbed (padding).

    Returns:
        The attacked inputs, detached.

    Example:
        >>> w = torch.tensor([1.0, -2.0])
        >>> x = torch.tensor([[0.5, 0.0]])
        >>> fgsm(lambda v: v @ w, x, torch.tensor([1]), 0.2)
        tensor([[0.3000, 0.2000]])
    """
    _check_norm(norm)
    dims_ = _norm_dims(x, dims)
    grad = _gradient(forward, x, y)
    if mask is not None:
        grad = grad * mask
    size = torch.as_tensor(radius, dtype=x.dtype, device=x.device)
    return (x + _step(grad, size, norm, dims_)).detach()


def pgd(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: torch.Tensor | float,
    *,
    norm: Norm = "linf",
    steps: int = 10,
    step_size: float = 2.5,
    dims: Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent from the FGSM point (Madry et al. 2018).

    Args:
        forward, x, y, radius, norm, dims, mask: As in :func:`fgsm`.
        steps: Gradient steps after the FGSM start.
        step_size: Step length as a multiple of ``radius / steps`` (Madry et al. use 2.5, so
            the iterates can reach any point of the ball and move along its edge).

    Returns:
        Per example, the first iterate whose decision differs from ``y``, or the last iterate.
    """
    _check_norm(norm)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidParameterError(f"The 'steps' parameter of pgd must be a positive int; got {steps!r}.")
    dims_ = _norm_dims(x, dims)
    size = torch.as_tensor(radius, dtype=x.dtype, device=x.device)
    current = fgsm(forward, x, y, radius, norm=norm, dims=dims, mask=mask)
    best = current.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        with torch.no_grad():
            flipped = decisions(forward(current)) != y
        new = flipped & ~done
        best[new] = current[new]
        done |= flipped
        if bool(done.all()):
            return best
        grad = _gradient(forward, current, y)
        if mask is not None:
            grad = grad * mask
        delta = current - x + _step(grad, size * (step_size / steps), norm, dims_)
        current = (x + _project(delta, size, norm, dims_)).detach()
    with torch.no_grad():
        flipped = decisions(forward(current)) != y
    new = flipped & ~done
    best[new] = current[new]
    best[~(done | flipped)] = current[~(done | flipped)]
    return best.detach()


def random_perturbation(
    x: torch.Tensor,
    radius: torch.Tensor | float,
    *,
    norm: Norm = "linf",
    dims: Sequence[int] | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random point on the edge of the ball: the baseline an attack must beat.

    L-inf: a random corner (each coordinate ``+-radius``); L2: a uniformly random direction.
    """
    _check_norm(norm)
    dims_ = _norm_dims(x, dims)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if mask is not None:
        noise = noise * mask
    size = torch.as_tensor(radius, dtype=x.dtype, device=x.device)
    return (x + _step(noise, size, norm, dims_)).detach()


def minimal_flip_radius(
    attack: Callable[[torch.Tensor], torch.Tensor],
    forward: Forward,
    y: torch.Tensor,
    *,
    high: float,
    steps: int = 10,
) -> torch.Tensor:
    """Smallest radius (in units of the ball's scale) at which ``attack`` flips each example.

    Bisection on ``[0, high]`` per example: ``attack(r)`` takes radii ``[b]`` (broadcast by the
    caller) and returns attacked inputs. Exact up to ``high / 2**steps`` when the attack flips
    monotonically in the radius, as FGSM does on a linear model.

    Returns:
        ``[b]`` radii; ``inf`` where even ``high`` does not flip the decision.
    """
    low_r = torch.zeros(len(y), dtype=torch.float64)
    high_r = torch.full((len(y),), float(high), dtype=torch.float64)
    with torch.no_grad():
        flips_at_high = (decisions(forward(attack(high_r))) != y).cpu()
    for _ in range(steps):
        mid = (low_r + high_r) / 2
        with torch.no_grad():
            flipped = (decisions(forward(attack(mid))) != y).cpu()
        high_r = torch.where(flipped, mid, high_r)
        low_r = torch.where(flipped, low_r, mid)
    return torch.where(flips_at_high, high_r, torch.full_like(high_r, float("inf")))
