"""Adversarial robustness: how far the model's decisions are from flipping, and where attacks take hold.

:class:`AdversarialRobustness` attacks the probe set with FGSM and PGD
(:mod:`neuronmap.metrics.adversarial`) in the model's continuous input space: pixels or
features as they are, token models at the word embeddings (Miyato et al. 2016), each token's
perturbation bounded relative to that token's embedding norm so that one ``epsilon`` means the
same for every vocabulary entry. The attack is untargeted against the model's own clean
decision, so the flip rate needs no labels and tracks the decision boundary over training.

Per attack, norm and ``epsilon``:

* **flip rate** (fraction of decisions changed) with a Wilson score interval (Wilson 1927),
  against a random perturbation of the same size (a random corner of the L-inf ball, a random
  L2 direction): McNemar's test of attack vs random on the same examples, corrected across
  all (attack, norm, epsilon) cells; a significant result says the model is fragile in the
  gradient's direction, not merely noise-sensitive;
* **loss increase** (mean of attacked minus clean loss of the clean decision) with a bootstrap CI.

Per norm, the **minimal flipping epsilon** of each example by bisection with FGSM (its mean
over the examples that flip below ``max_epsilon``, with a bootstrap CI, and the fraction that
do not). Per captured layer and ``epsilon``, the **representation shift** of the strongest
attack: relative L2 distance ``||a' - a|| / ||a||`` (bootstrap CI) and linear CKA
(Kornblith et al. 2019) between clean and attacked activations, which shows at which depth the
perturbation takes hold. With ``text_perturbations`` and a ``tokenizer``, the flip rate under
character and synonym swaps (:mod:`neuronmap.data.perturb`) as a discrete-input figure.

References:
    Goodfellow, Shlens & Szegedy (2015). Explaining and Harnessing Adversarial Examples. ICLR.
    Madry, Makelov, Schmidt, Tsipras & Vladu (2018). Towards Deep Learning Models Resistant to
    Adversarial Attacks. ICLR.
    Miyato, Dai & Goodfellow (2017). Adversarial Training Methods for Semi-Supervised Text
    Classification. ICLR.
    Wilson (1927). Probable inference, the law of succession, and statistical inference. JASA 22.
    Kornblith, Norouzi, Lee & Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from neuronmap._progress import progress
from neuronmap.analyses._input_space import InputSpace
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Type
from neuronmap.capture.forward import forward, probe_batches
from neuronmap.capture.forward import output_logits as output_scores
from neuronmap.capture.hooks import ActivationCapture, model_device
from neuronmap.data.perturb import PERTURBATIONS, perturb_texts
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.metrics.adversarial import (
    NORMS,
    attack_loss,
    decisions,
    fgsm,
    minimal_flip_radius,
    pgd,
)
from neuronmap.metrics.adversarial import random_perturbation as _random
from neuronmap.metrics.similarity import linear_cka
from neuronmap.probe import ProbeSet
from neuronmap.stats import adjust_pvalues, bootstrap_ci, mcnemar

__all__ = ["AdversarialRobustness", "wilson_interval"]

Attack = Literal["fgsm", "pgd"]
_ATTACKS = ("fgsm", "pgd")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval of a proportion (good coverage at 0 and 1, unlike the bootstrap)."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def _eps_name(eps: float) -> str:
    return f"eps{eps:g}"


@dataclass
class _Batch:
    x: torch.Tensor
    extras: tuple[torch.Tensor, ...]
    mask: torch.Tensor | None
    scale: dict[str, torch.Tensor]  # norm -> radius of epsilon = 1
    dims: tuple[int, ...] | None
    y: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    loss: torch.Tensor = field(default_factory=lambda: torch.empty(0))


@register_analysis
class AdversarialRobustness(Analysis):
    """FGSM/PGD flip rates over epsilon, minimal flipping epsilon and per-layer representation shift.

    Args:
        epsilons: Ball radii. Continuous inputs: in the input's own units (``relative=False``)
            or as a fraction of each example's norm. Token models: a fraction of each token's
            embedding norm (L2 ball ``eps * ||e_t||``; L-inf box ``eps * ||e_t|| / sqrt(d)``,
            the RMS entry, so both balls have the same corner length).
        attacks: Any of ``"fgsm"``, ``"pgd"``.
        norms: ``"linf"``, ``"l2"`` or both.
        pgd_steps: PGD iterations (step ``2.5 * eps / pgd_steps``, Madry et al. 2018).
        relative: Scale radii by the input's norm; default ``True`` for token embeddings and
            ``False`` for pixels/features.
        max_epsilon: Upper end of the minimal-epsilon bisection (default ``4 * max(epsilons)``).
        bisection_steps: Bisection steps (resolution ``max_epsilon / 2**steps``); 0 disables it.
        representation_shift: Also measure the shift of the captured layers.
        text_perturbations: Any of ``"char_swap"``, ``"synonym_swap"`` (needs ``tokenizer``).
        tokenizer: The probe set's tokenizer, to encode perturbed texts.
        max_length: Truncation used for the probe set.
        max_examples: Attack only the first examples (bounds the cost).
        n_resamples: Bootstrap resamples (``n_bootstrap`` before issue 16; the old name warns).
        confidence: Interval coverage.
        p_adjust: Correction across (attack, norm, epsilon) cells. alpha: Significance level.
        layers, name: As for every analysis.

    Metrics: on the input layer (``input`` or the word-embedding module),
    ``<attack>_<norm>_flip_rate_eps<e>`` (CI, McNemar ``_p``/``_p_adj`` vs random),
    ``random_<norm>_flip_rate_eps<e>``, ``<attack>_<norm>_loss_increase_eps<e>`` (CI),
    ``min_flip_eps_<norm>`` (CI), ``unflippable_<norm>``; per captured layer
    ``rel_shift_eps<e>`` (CI) and ``cka_eps<e>``; on ``text``, ``<perturbation>_flip_rate`` (CI).

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> adv = AdversarialRobustness(epsilons=[0.1, 0.5], n_resamples=99)
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[adv], reporters=[])
        >>> m = monitor.run(tiny_mlp(), step=0).metrics
        >>> key = "neuronmap/adversarial/input/{}_linf_flip_rate_eps0.5"
        >>> m[key.format("pgd")] >= m[key.format("fgsm")]
        True
    """

    needs_model = True  # attacks differentiate through the live model
    name = "adversarial"
    _renamed_parameters: ClassVar[dict[str, str]] = {"n_bootstrap": "n_resamples"}
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        # list contents are checked in __init__ (a constraint sees the list as a whole)
        "epsilons": [Type(list, tuple, np.ndarray, label="a non-empty list of positive, finite numbers")],
        "attacks": [Type(list, tuple, label=f"a non-empty list of values from {list(_ATTACKS)}")],
        "norms": [Type(str, list, tuple, label=f"one of {list(NORMS)} or a non-empty list of them")],
        "pgd_steps": [Interval(int, 1, None)],
        "relative": [None, bool],
        "max_epsilon": [None, Interval(float, 0, None, closed="neither")],
        "bisection_steps": [Interval(int, 0, None)],
        "representation_shift": [bool],
        "text_perturbations": [Type(list, tuple, label=f"a list of values from {list(PERTURBATIONS)}")],
        "tokenizer": ["no_validation"],  # any callable tokenizer; required with text_perturbations (checked below)
        "max_length": [Interval(int, 1, None)],
        "max_examples": [None, Interval(int, 2, None)],
    }

    def __init__(
        self,
        epsilons: Sequence[float] = (0.01, 0.03, 0.1),
        *,
        attacks: Sequence[Attack] = ("fgsm", "pgd"),
        norms: str | Sequence[str] = "linf",
        pgd_steps: int = 5,
        relative: bool | None = None,
        max_epsilon: float | None = None,
        bisection_steps: int = 5,
        representation_shift: bool = True,
        text_perturbations: Sequence[str] = (),
        tokenizer: Any = None,
        max_length: int = 128,
        max_examples: int | None = 32,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(layers=layers, name=name)
        valid = all(isinstance(e, numbers.Real) and not isinstance(e, bool) for e in epsilons)
        eps = [float(e) for e in epsilons] if valid else []
        if not eps or any(not math.isfinite(e) or e <= 0 for e in eps):
            raise InvalidParameterError(f"AdversarialRobustness: epsilons must be a non-empty list of positive, finite "
                                        f"numbers; got {list(epsilons)!r}.")
        norms_ = [norms] if isinstance(norms, str) else list(norms)
        for label, values, allowed in (("attacks", list(attacks), _ATTACKS), ("norms", norms_, NORMS),
                                       ("text_perturbations", list(text_perturbations), PERTURBATIONS)):
            bad = [v for v in values if v not in allowed]
            if bad or (label != "text_perturbations" and not values):
                which = "values" if label == "text_perturbations" else "a non-empty list of values"
                raise InvalidParameterError(
                    f"AdversarialRobustness: {label} must be {which} from {list(allowed)}; got {values!r}."
                )
        if text_perturbations and (tokenizer is None or not callable(tokenizer)):
            raise InvalidParameterError(
                f"AdversarialRobustness: tokenizer must be the probe set's tokenizer (a callable) to encode "
                f"text_perturbations={list(text_perturbations)}; got {tokenizer!r}."
            )
        self.epsilons = sorted(eps)
        self.attacks = [a for a in _ATTACKS if a in attacks]
        self.norms = norms_
        self.pgd_steps = pgd_steps
        self.relative = relative
        self.max_epsilon = float(max_epsilon) if max_epsilon is not None else 4 * max(eps)
        self.bisection_steps = bisection_steps
        self.representation_shift = representation_shift
        self.text_perturbations = list(text_perturbations)
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.max_examples = max_examples
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.p_adjust = p_adjust
        self.alpha = alpha

    def config(self) -> dict[str, Any]:
        return {**super().config(), "tokenizer": None if self._tokenizer is None else type(self._tokenizer).__name__}

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        probe = ctx.probe if self.max_examples is None or len(ctx.probe) <= self.max_examples else ctx.probe.subset(
            slice(0, self.max_examples))
        model = ctx.model
        model.eval()
        space = InputSpace(model, probe)
        relative = space.kind == "embeddings" if self.relative is None else self.relative
        batches = [self._prepare(space, b, relative) for b in space.batches(ctx.batch_size, ctx.device)]
        seed = ctx.random_state
        rng = torch.Generator().manual_seed(seed)
        clean_pred = torch.cat([b.y for b in batches]).cpu().numpy()
        rows: list[dict[str, Any]] = []
        strongest: dict[float, list[torch.Tensor]] = {}
        cells = [(norm, eps) for norm in self.norms for eps in self.epsilons]
        for norm, eps in progress(cells, desc="adversarial: attacks", unit="cell"):
            random_flips = self._flips(space, batches, lambda b, e=eps, n=norm: _random(
                b.x, e * b.scale[n], norm=n, dims=b.dims, mask=b.mask, generator=rng))[0]
            for attack in self.attacks:
                flips, loss_gain, adv = self._flips(space, batches, lambda b, e=eps, n=norm, a=attack: self._attack(
                    space, b, a, n, e))
                rows.append(self._row(attack, norm, eps, flips, loss_gain, random_flips, seed))
                if norm == self.norms[0]:
                    strongest[eps] = adv  # PGD comes after FGSM, so the strongest is kept
        table = pd.DataFrame(rows)
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(float), method=self.p_adjust, alpha=self.alpha)
        table["significant"] = table["p_adj"] < self.alpha
        tables: dict[str, pd.DataFrame] = {"attacks": table}
        min_eps = self._min_eps(space, batches, seed) if self.bisection_steps else pd.DataFrame()
        if not min_eps.empty:
            tables["min_flip_eps"] = min_eps
        shift = self._shift(ctx, space, batches, strongest, seed) if self.representation_shift else pd.DataFrame()
        if not shift.empty:
            tables["representation_shift"] = shift
        notes = [f"{len(clean_pred)} examples attacked in the {space.kind} space at {space.layer!r} "
                 f"({'relative' if relative else 'absolute'} radii)."]
        text = self._text(ctx, probe, seed, notes) if self.text_perturbations else pd.DataFrame()
        if not text.empty:
            tables["text_perturbations"] = text
        figures = {"flip_rate": _flip_figure(table, min_eps, self.confidence)}
        if not shift.empty:
            figures["representation_shift"] = _shift_figure(shift)
        if not text.empty:
            figures["text_flip_rate"] = _text_figure(text, self.confidence)
        return AnalysisResult(self.name, metrics=_metrics(space.layer, table, min_eps, shift, text),
                              tables=tables, figures=figures, notes=tuple(notes))

    # ------------------------------------------------------------------ attacks
    def _prepare(self, space: InputSpace, batch: Any, relative: bool) -> _Batch:
        x = batch.inputs
        if space.kind == "embeddings":
            mask = batch.mask.unsqueeze(-1).to(x.dtype)
            norms = x.norm(dim=-1, keepdim=True)
            scale = {"l2": norms, "linf": norms / math.sqrt(x.shape[-1])} if relative else {
                "l2": torch.ones_like(norms), "linf": torch.ones_like(norms)}
            prepared = _Batch(x, batch.extras, mask, scale, (-1,))
        else:
            shape = (len(x),) + (1,) * (x.ndim - 1)
            if relative:
                l2 = x.flatten(1).norm(dim=1).view(shape)
                scale = {"l2": l2, "linf": l2 / math.sqrt(x[0].numel())}
            else:
                scale = {"l2": x.new_ones(shape), "linf": x.new_ones(shape)}
            prepared = _Batch(x, batch.extras, None, scale, None)
        with torch.no_grad():
            scores = self._scores(space, prepared, x)
        prepared.y = decisions(scores)
        prepared.loss = attack_loss(scores, prepared.y)
        return prepared

    @staticmethod
    def _scores(space: InputSpace, b: _Batch, x: torch.Tensor) -> torch.Tensor:
        scores = space.logits(x, *b.extras)
        return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def _attack(self, space: InputSpace, b: _Batch, attack: str, norm: str, eps: Any) -> torch.Tensor:
        def forward(v: torch.Tensor) -> torch.Tensor:
            return self._scores(space, b, v)

        radius = eps * b.scale[norm] if not isinstance(eps, torch.Tensor) else eps.view(
            -1, *([1] * (b.x.ndim - 1))).to(b.x) * b.scale[norm]
        if attack == "fgsm":
            return fgsm(forward, b.x, b.y, radius, norm=norm, dims=b.dims, mask=b.mask)  # type: ignore[arg-type]
        return pgd(forward, b.x, b.y, radius, norm=norm, steps=self.pgd_steps, dims=b.dims, mask=b.mask)  # type: ignore[arg-type]

    def _flips(
        self, space: InputSpace, batches: list[_Batch], make: Any
    ) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
        flips, gains, advs = [], [], []
        for b in batches:
            adv = make(b)
            with torch.no_grad():
                scores = self._scores(space, b, adv)
            flips.append((decisions(scores) != b.y).cpu().numpy())
            gains.append((attack_loss(scores, b.y) - b.loss).cpu().numpy())
            advs.append(adv)
        return np.concatenate(flips), np.concatenate(gains).astype(np.float64), advs

    def _row(self, attack: str, norm: str, eps: float, flips: np.ndarray, gain: np.ndarray,
             random_flips: np.ndarray, seed: int) -> dict[str, Any]:  # fmt: skip
        n, k = len(flips), int(flips.sum())
        low, high = wilson_interval(k, n, self.confidence)
        loss = bootstrap_ci(np.mean, gain, n_resamples=self.n_resamples, confidence=self.confidence, random_state=seed)
        test = mcnemar(flips, random_flips)
        return {"attack": attack, "norm": norm, "epsilon": eps, "n": n, "flip_rate": k / n,
                "flip_rate_ci_low": low, "flip_rate_ci_high": high, "random_flip_rate": float(random_flips.mean()),
                "p": test.pvalue, "loss_increase": loss.estimate, "loss_increase_ci_low": loss.low,
                "loss_increase_ci_high": loss.high}  # fmt: skip

    def _min_eps(self, space: InputSpace, batches: list[_Batch], seed: int) -> pd.DataFrame:
        rows = []
        for norm in self.norms:
            radii = []
            for b in batches:
                def forward(v: torch.Tensor, b: _Batch = b) -> torch.Tensor:
                    return self._scores(space, b, v)

                def attack(r: torch.Tensor, b: _Batch = b, n: str = norm) -> torch.Tensor:
                    return self._attack(space, b, "fgsm", n, r)

                radii.append(minimal_flip_radius(attack, forward, b.y, high=self.max_epsilon,
                                                 steps=self.bisection_steps).numpy())  # fmt: skip
            r = np.concatenate(radii)
            finite = r[np.isfinite(r)]
            row: dict[str, Any] = {"norm": norm, "attack": "fgsm", "n": len(r), "flippable": len(finite),
                                   "unflippable_fraction": 1 - len(finite) / len(r), "max_epsilon": self.max_epsilon,
                                   "median": float(np.median(finite)) if len(finite) else math.nan}  # fmt: skip
            if len(finite) >= 2:
                ci = bootstrap_ci(np.mean, finite, n_resamples=self.n_resamples, confidence=self.confidence,
                                  random_state=seed)  # fmt: skip
                row |= {"mean": ci.estimate, "mean_ci_low": ci.low, "mean_ci_high": ci.high}
            else:
                row |= {"mean": float(finite.mean()) if len(finite) else math.nan, "mean_ci_low": math.nan,
                        "mean_ci_high": math.nan}  # fmt: skip
            rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ representation shift
    def _shift(self, ctx: AnalysisContext, space: InputSpace, batches: list[_Batch],
               strongest: dict[float, list[torch.Tensor]], seed: int) -> pd.DataFrame:  # fmt: skip
        names = [n for n, _ in self.layer_items(ctx)]
        if not names:
            return pd.DataFrame()
        reduce = ctx.activations.reduce if ctx.activations.reduce != "none" else "mean"
        clean = self._capture(space, batches, [b.x for b in batches], names, reduce)
        rows = []
        for eps, advs in strongest.items():
            attacked = self._capture(space, batches, advs, names, reduce)
            for layer in names:
                a, a2 = clean[layer].reshape(len(clean[layer]), -1), attacked[layer].reshape(len(clean[layer]), -1)
                rel = np.linalg.norm(a2 - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
                ci = bootstrap_ci(np.mean, rel, n_resamples=self.n_resamples, confidence=self.confidence,
                                  random_state=seed)  # fmt: skip
                cka = linear_cka(a, a2) if np.ptp(a, axis=0).any() else math.nan
                rows.append({"layer": layer, "epsilon": eps, "attack": self.attacks[-1], "norm": self.norms[0],
                             "rel_shift": ci.estimate, "rel_shift_ci_low": ci.low, "rel_shift_ci_high": ci.high,
                             "cka": cka})  # fmt: skip
        return pd.DataFrame(rows)

    @staticmethod
    def _capture(space: InputSpace, batches: list[_Batch], inputs: list[torch.Tensor], names: list[str],
                 reduce: Any) -> dict[str, np.ndarray]:  # fmt: skip
        with ActivationCapture(space.model, names, reduce=reduce) as cap, torch.no_grad():
            for b, x in zip(batches, inputs, strict=True):
                cap.attention_mask = None if b.mask is None else b.mask[..., 0]
                space.call(x, *b.extras)
            return {k: v.double().numpy() for k, v in cap.collect().items()}

    # ------------------------------------------------------------------ text perturbations
    def _text(self, ctx: AnalysisContext, probe: ProbeSet, seed: int, notes: list[str]) -> pd.DataFrame:
        if probe.texts is None:
            raise ProbeSetError(
                f"text_perturbations need the texts in a 'text' column, which probe set {probe.name!r} lacks; it has "
                f"{list(probe.frame.columns)}. Build it with ProbeSet.from_texts or from_pandas."
            )
        texts = probe.texts
        original = self._predict(ctx, texts)
        rows = []
        for kind in self.text_perturbations:
            perturbed = perturb_texts(texts, kind, seed=seed)  # type: ignore[arg-type]
            changed = np.array([a != b for a, b in zip(texts, perturbed, strict=True)])
            if not changed.any():
                notes.append(f"{kind}: no probe text was changed; flip rate not defined.")
                continue
            flips = self._predict(ctx, [perturbed[i] for i in np.flatnonzero(changed)]) != original[changed]
            low, high = wilson_interval(int(flips.sum()), len(flips), self.confidence)
            example = perturbed[int(np.flatnonzero(changed)[0])]
            rows.append({"perturbation": kind, "n": int(changed.sum()), "flip_rate": float(flips.mean()),
                         "flip_rate_ci_low": low, "flip_rate_ci_high": high, "example": example})  # fmt: skip
        return pd.DataFrame(rows)

    def _predict(self, ctx: AnalysisContext, texts: list[str]) -> np.ndarray:
        probe = ProbeSet.from_texts(texts, self._tokenizer, max_length=self.max_length)
        device = ctx.device or model_device(ctx.model)
        out = []
        for batch in probe_batches(probe, ctx.batch_size, device, no_grad=True):
            scores = output_scores(forward(ctx.model, batch, positional=probe.positional))
            if scores is None:
                raise InvalidParameterError(f"{type(ctx.model).__name__} returned no tensor on the perturbed texts.")
            scores = scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores
            out.append(decisions(scores).cpu())
        return torch.cat(out).numpy()


def _metrics(layer: str, table: pd.DataFrame, min_eps: pd.DataFrame, shift: pd.DataFrame,
             text: pd.DataFrame) -> MetricSet:  # fmt: skip
    m = MetricSet()
    for r in table.to_dict(orient="records"):
        key, e = f"{r['attack']}_{r['norm']}", _eps_name(r["epsilon"])
        m.add(layer, f"{key}_flip_rate_{e}", r["flip_rate"], ci=(r["flip_rate_ci_low"], r["flip_rate_ci_high"]),
              p=r["p"], p_adj=r["p_adj"])
        m.add(layer, f"random_{r['norm']}_flip_rate_{e}", r["random_flip_rate"])
        m.add(layer, f"{key}_loss_increase_{e}", r["loss_increase"],
              ci=(r["loss_increase_ci_low"], r["loss_increase_ci_high"]))
    for r in min_eps.to_dict(orient="records"):
        if math.isfinite(r["mean"]):
            ci = (r["mean_ci_low"], r["mean_ci_high"]) if math.isfinite(r["mean_ci_low"]) else None
            m.add(layer, f"min_flip_eps_{r['norm']}", r["mean"], ci=ci)
        m.add(layer, f"unflippable_{r['norm']}", r["unflippable_fraction"])
    for r in shift.to_dict(orient="records"):
        e = _eps_name(r["epsilon"])
        m.add(r["layer"], f"rel_shift_{e}", r["rel_shift"], ci=(r["rel_shift_ci_low"], r["rel_shift_ci_high"]))
        m.add(r["layer"], f"cka_{e}", r["cka"])
    for r in text.to_dict(orient="records"):
        m.add("text", f"{r['perturbation']}_flip_rate", r["flip_rate"],
              ci=(r["flip_rate_ci_low"], r["flip_rate_ci_high"]))
    return m


def _flip_figure(table: pd.DataFrame, min_eps: pd.DataFrame, confidence: float) -> Figure:
    norms = list(dict.fromkeys(table["norm"]))
    fig = Figure(figsize=(4.2 * len(norms), 3.2))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    colors = {"fgsm": "#1f5fa8", "pgd": "#b3261e"}
    for ax, norm in zip(axes, norms, strict=True):
        part = table[table["norm"] == norm]
        for attack, rows in part.groupby("attack", sort=False):
            ax.plot(rows["epsilon"], rows["flip_rate"], marker="o", color=colors[str(attack)],
                    label=str(attack).upper())
            ax.fill_between(rows["epsilon"], rows["flip_rate_ci_low"], rows["flip_rate_ci_high"],
                            color=colors[str(attack)], alpha=0.2)
        first = part[part["attack"] == part["attack"].iloc[0]]
        ax.plot(first["epsilon"], first["random_flip_rate"], marker="s", ls=":", color="#555", label="random")
        mins = min_eps[min_eps["norm"] == norm] if not min_eps.empty else min_eps
        if not mins.empty and math.isfinite(mins["median"].iloc[0]):
            ax.axvline(mins["median"].iloc[0], color="#e8a317", ls="--", lw=1, label="median minimal eps (FGSM)")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epsilon")
        ax.set_ylabel("flip rate")
        ax.set_title(f"{norm}: flip rate ({confidence:.0%} Wilson CI)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _shift_figure(shift: pd.DataFrame) -> Figure:
    layers = list(dict.fromkeys(shift["layer"]))
    fig = Figure(figsize=(max(6.0, 0.6 * len(layers) + 4), 3.2))
    ax_rel, ax_cka = fig.subplots(1, 2)
    x = np.arange(len(layers))
    for eps, rows in shift.groupby("epsilon"):
        rows = rows.set_index("layer").loc[layers]
        ax_rel.plot(x, rows["rel_shift"], marker="o", label=f"eps={eps:g}")
        ax_rel.fill_between(x, rows["rel_shift_ci_low"], rows["rel_shift_ci_high"], alpha=0.2)
        ax_cka.plot(x, rows["cka"], marker="o", label=f"eps={eps:g}")
    for ax, label in ((ax_rel, "||a' - a|| / ||a||"), (ax_cka, "linear CKA(clean, attacked)")):
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
    ax_rel.set_title(f"Representation shift ({shift['attack'].iloc[0].upper()}, {shift['norm'].iloc[0]})", fontsize=9)
    fig.tight_layout()
    return fig


def _text_figure(text: pd.DataFrame, confidence: float) -> Figure:
    fig = Figure(figsize=(4.0, 3.0))
    ax = fig.subplots()
    x = np.arange(len(text))
    err = np.clip(np.vstack([text["flip_rate"] - text["flip_rate_ci_low"],
                             text["flip_rate_ci_high"] - text["flip_rate"]]), 0, None)
    ax.bar(x, text["flip_rate"], yerr=err, color="#1f5fa8", capsize=4)
    ax.set_xticks(x, text["perturbation"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("flip rate")
    ax.set_title(f"Text perturbations ({confidence:.0%} Wilson CI)", fontsize=9)
    fig.tight_layout()
    return fig
