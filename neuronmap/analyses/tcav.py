"""TCAV: does a human concept drive a class prediction, layer by layer, and is it significant?

Kim et al. (2018): a concept activation vector (CAV) is the normal of a linear boundary
between activations of concept examples and of random counterexamples; the TCAV score is
the fraction of class-``k`` examples whose class logit rises along it. A score means
something only if it differs from the scores of *random* concepts, so the analysis trains
``n_runs`` CAVs per concept against different random counterexample sets, does the same
for ``n_random`` random concepts, and tests the concept against the random distribution
with a two-sided t-test; p-values are corrected over concepts x layers (the significance
test Captum users ask for in pytorch/captum#984).

The default test (``test="random_sets"``) compares the concept's mean score with the mean
scores of the random concepts (Crawford & Howell 1998), which keeps the false-positive
rate at ``alpha``. Kim et al.'s run-by-run t-test (``test="runs"``) treats the runs of one
concept as independent although they share its examples, and rejects random concepts
too often (see ``docs/mechanistic.md``).

Memory stays bounded (pytorch/captum#930): activations are reduced over tokens on the
device and gradients are taken per batch, so only ``n x d`` numbers per layer are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.stats
import torch
from matplotlib.figure import Figure
from torch import nn

from neuronmap.analyses._concept_sets import (
    ConceptsArg,
    ConceptSetAnalysis,
    capture_reduced,
    concept_activations,
    concept_specs,
    probe_members,
)
from neuronmap.analyses.base import (
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options
from neuronmap.capture.forward import forward, logits_of, probe_batches
from neuronmap.capture.interventions import Node, answer_logits, intervene
from neuronmap.capture.layers import resolve_layers
from neuronmap.capture.reduce import reduce_tokens
from neuronmap.errors import InvalidParameterError, NeuronMapWarning
from neuronmap.metrics.concepts import (
    CAV,
    CAV_CLASSIFIERS,
    Classifier,
    cosine_similarity_table,
    tcav_random_set_test,
    tcav_score,
    tcav_ttest,
    train_cav,
)
from neuronmap.probe import ProbeSet
from neuronmap.stats import ConfidenceInterval, adjust_pvalues, bootstrap_ci

__all__ = ["TCAV"]

TCAVReduction = Literal["mean", "first", "last", "max"]
TCAVTest = Literal["random_sets", "runs"]
_REDUCTIONS = ("mean", "first", "last", "max")
_EXAMPLES = ("target", "all")
_TESTS = ("random_sets", "runs")


@register_analysis
class TCAV(ConceptSetAnalysis):
    """Testing with Concept Activation Vectors, with a significance test per concept and layer.

    Args:
        concepts: Concept names mapped to their examples: a probe-set tag column
            (``"striped"``), ``"column=value"``, a list of probe indices, or a separate
            :class:`~neuronmap.ProbeSet`; a plain list of column names also works.
        target: Class index ``k`` whose logit is differentiated (for a language model, the
            token id predicted at the last real position).
        layers: Layer selectors (default: every layer the monitor captures).
        random_examples: Probe set of random counterexamples; default: the probe examples
            not tagged with any concept.
        n_runs: CAVs per concept, each against a different random counterexample set.
        n_random: Random concepts (random probe subsets of the concept's size) forming the
            null distribution; each is scored over ``n_runs`` counterexample sets too.
        test: ``"random_sets"`` (calibrated, default) or ``"runs"`` (Kim et al.'s Welch
            t-test of run scores against random-vs-random run scores; not calibrated, it
            rejected 15 % of random concepts at alpha = 0.05, and warns when chosen).
        examples: Which probe examples the score is computed on: ``"target"`` (label ==
            ``target``, as in the paper) or ``"all"``.
        reduce: How token activations are reduced to one vector (``mean``, ``first``,
            ``last``, ``max``); default: the monitor's reduction, else ``mean``.
        classifier: Linear classifier for the CAVs (``logistic``, ``sgd``, ``svm``).
        p_adjust: Multiple-comparison correction over concepts x layers (any method of
            :func:`neuronmap.stats.adjust_pvalues`; formerly ``correction``, which still works
            and warns).
        alpha: Significance level for the ``significant`` column and the figure's stars.
        confidence: Level of the CI of the mean TCAV score (``ci_low`` / ``ci_high``).
        interval: CI of the mean TCAV score over runs: ``"t"`` (default), Student's t interval
            over the runs, which are independent given the concept examples (their
            counterexample sets are drawn afresh), or ``"bootstrap"`` (BCa over runs). With 5 runs
            the BCa interval covered the expected score over counterexample draws in only 0.89
            of simulated random concepts at a nominal 0.95 (a bootstrap of 5 values is too narrow).
        n_resamples: Bootstrap resamples for ``interval="bootstrap"``.

    Example:
        >>> import numpy as np, torch
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp
        >>> x = torch.randn(80, 8)
        >>> probe = nm.ProbeSet(x, labels=(x[:, 0] > 0).long(), metadata={"pos": (x[:, 0] > 1).numpy()})
        >>> tcav = TCAV({"pos": "pos"}, target=1, layers="net.1", n_runs=4)
        >>> report = nm.NeuronMap(probe, layers="net.1", analyses=[tcav], reporters=[]).run(tiny_mlp(), step=0)
        >>> 0.0 <= report.metrics["neuronmap/tcav/net.1/tcav_pos"] <= 1.0
        True
    """

    needs_model = True  # takes gradients through the model
    name = "tcav"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [Interval(int, 0, None)],  # a class index; its range is known at the first run
        "random_examples": [None, ProbeSet],
        "n_runs": [Interval(int, 2, None)],  # a t interval needs two runs
        "n_random": [Interval(int, 2, None)],  # the null needs a spread
        "test": [Options(_TESTS)],
        "examples": [Options(_EXAMPLES)],
        "reduce": [None, Options(_REDUCTIONS)],
        "classifier": [Options(CAV_CLASSIFIERS)],
        "interval": [Options(("t", "bootstrap"))],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"correction": "p_adjust"}

    def __init__(
        self,
        concepts: ConceptsArg,
        *,
        target: int,
        layers: str | list[str] | None = None,
        random_examples: ProbeSet | None = None,
        n_runs: int = 10,
        n_random: int = 10,
        test: TCAVTest = "random_sets",
        examples: Literal["target", "all"] = "target",
        reduce: TCAVReduction | None = None,
        classifier: Classifier = "logistic",
        p_adjust: str = "holm",
        alpha: float = 0.05,
        confidence: float = 0.95,
        n_resamples: int = 1000,
        interval: Literal["t", "bootstrap"] = "t",
    ) -> None:
        super().__init__(layers=layers)
        self._specs = concept_specs(concepts, "TCAV")
        self.concepts = concepts
        if test == "runs":
            warnings.warn(
                "TCAV(test='runs') is Kim et al.'s run-by-run t-test, kept to reproduce published "
                "numbers: its runs share the concept's examples, and it rejected random concepts in "
                "about 15 % of simulations at alpha = 0.05 (docs/statistics-and-similarity.md). "
                "test='random_sets' (the default) is calibrated.",
                NeuronMapWarning, stacklevel=2,
            )  # fmt: skip
        self.target = int(target)
        self._random_examples = random_examples
        self.n_runs = n_runs
        self.n_random = n_random
        self.test = test
        self.examples = examples
        self.reduce = reduce
        self.classifier = classifier
        self.p_adjust = p_adjust
        self.alpha = alpha
        self.confidence = confidence
        self.n_resamples = n_resamples
        self.interval = interval

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        model, probe = ctx.model, ctx.probe
        layers = resolve_layers(model, self.layers or ctx.activations.layers)
        reduce = self.reduce or (ctx.activations.reduce if ctx.activations.reduce in _REDUCTIONS else "mean")
        notes: list[str] = []
        eval_mask = np.ones(len(probe), dtype=bool)
        if self.examples == "target":
            if probe.has_labels:
                eval_mask = np.asarray([_same_class(v, self.target) for v in probe.labels])  # type: ignore[union-attr]
            else:
                notes.append("The probe set has no labels; TCAV scores use every example.")
        if not eval_mask.any():
            return AnalysisResult(self.name, status="skipped", notes=(f"No probe example has label {self.target}.",))

        acts, grads = _activations_and_gradients(
            model, probe, layers, reduce=reduce, target=self.target, eval_mask=eval_mask,
            batch_size=ctx.batch_size, device=ctx.device,
        )

        def capture(concept_probe: ProbeSet) -> dict[str, np.ndarray]:
            return capture_reduced(model, concept_probe, layers, reduce=reduce, batch_size=ctx.batch_size,
                                   device=ctx.device)

        concept_acts = {
            name: concept_activations(spec, name, probe=probe, probe_acts=acts, capture=capture)
            for name, spec in self._specs.items()
        }
        if self._random_examples is not None:
            pool = capture(self._random_examples)
        else:
            tagged = [probe_members(probe, s, n) for n, s in self._specs.items()]
            keep = np.ones(len(probe), dtype=bool)
            for idx in tagged:
                if idx is not None:
                    keep[idx] = False
            pool = {layer: a[keep] for layer, a in acts.items()}

        rows, cav_rows = self._test_all(layers, concept_acts, pool, grads, ctx.random_state, notes)
        table = pd.DataFrame(rows)
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(dtype=float), method=self.p_adjust, alpha=self.alpha)
        table["significant"] = table["p_adj"] < self.alpha
        metrics = MetricSet()
        for row in table.itertuples():
            metrics.add(row.layer, f"tcav_{row.concept}", row.tcav, ci=(row.ci_low, row.ci_high), p=row.p,
                        p_adj=row.p_adj)
            metrics.add(row.layer, f"cav_accuracy_{row.concept}", row.cav_accuracy)
        return AnalysisResult(
            self.name,
            metrics=metrics,
            tables={"scores": table, **({"cav_similarity": pd.DataFrame(cav_rows)} if cav_rows else {})},
            figures={"scores": _figure(table, self.alpha)},
            notes=tuple(notes),
        )

    def _test_all(
        self,
        layers: Sequence[str],
        concept_acts: dict[str, dict[str, np.ndarray]],
        pool: dict[str, np.ndarray],
        grads: dict[str, np.ndarray],
        seed: int,
        notes: list[str],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rng = np.random.default_rng(seed)
        n_pool = len(next(iter(pool.values())))
        # The same random draws serve every layer, as Kim et al. reuse their random image sets.
        draws = _Draws(rng, n_pool, self.n_runs, self.n_random)
        sizes = {c: min(len(next(iter(a.values()))), n_pool // 2) for c, a in concept_acts.items()}
        rows: list[dict[str, Any]] = []
        cav_rows: list[dict[str, Any]] = []
        for layer in layers:
            nulls: dict[int, np.ndarray] = {}
            directions: dict[str, np.ndarray] = {}
            for concept, acts in concept_acts.items():
                m = sizes[concept]
                if m < 4:
                    notes.append(f"Concept {concept!r}: {m} usable examples (random pool {n_pool}); "
                                 "at least 4 are needed.")
                    rows.append(_empty_row(layer, concept))
                    continue
                if m not in nulls:
                    nulls[m] = np.array([
                        [self._score(grads[layer], pool[layer][q], pool[layer][r], seed + i) for i, r in enumerate(rs)]
                        for q, rs in draws.random_sets(m)
                    ])
                n_concept = len(next(iter(acts.values())))
                cavs = [self._cav(acts[layer][pick], pool[layer][r], seed + i)
                        for i, (pick, r) in enumerate(draws.concept_runs(concept, n_concept, m))]
                scores = np.array([tcav_score(grads[layer], c.direction) for c in cavs])
                directions[concept] = np.mean([c.direction for c in cavs], axis=0)
                null_means = nulls[m].mean(axis=1)
                if self.test == "random_sets":
                    t, p_value = tcav_random_set_test(float(scores.mean()), null_means)
                else:
                    t, p_value = tcav_ttest(scores, nulls[m][:, 0])
                ci = self._interval(scores, seed)
                rows.append({
                    "layer": layer, "concept": concept, "tcav": ci.estimate, "tcav_std": float(scores.std(ddof=1)),
                    "ci_low": ci.low, "ci_high": ci.high, "random_tcav": float(null_means.mean()),
                    "random_std": float(null_means.std(ddof=1)), "t": t, "p": p_value,
                    "cav_accuracy": float(np.mean([c.accuracy for c in cavs])), "n_concept": m,
                    "n_eval": len(grads[layer]),
                })
            if len(directions) > 1:
                sim = cosine_similarity_table(directions)
                cav_rows += [{"layer": layer, "concept_a": a, "concept_b": b, "cosine": float(sim.loc[a, b])}
                             for a in sim.index for b in sim.columns]
        return rows, cav_rows

    def _interval(self, scores: np.ndarray, seed: int) -> ConfidenceInterval:
        if self.interval == "bootstrap":
            return bootstrap_ci(np.mean, scores, n_resamples=self.n_resamples, confidence=self.confidence,
                                random_state=seed)
        mean = float(scores.mean())
        quantile = scipy.stats.t.ppf((1 + self.confidence) / 2, len(scores) - 1)
        half = float(quantile * scores.std(ddof=1) / np.sqrt(len(scores)))
        return ConfidenceInterval(mean, mean - half, mean + half, self.confidence, "t")

    def _cav(self, concept: np.ndarray, random: np.ndarray, seed: int) -> CAV:
        return train_cav(concept, random, classifier=self.classifier, random_state=seed)

    def _score(self, grads: np.ndarray, concept: np.ndarray, random: np.ndarray, seed: int) -> float:
        return tcav_score(grads, self._cav(concept, random, seed).direction)


class _Draws:
    """Random example subsets, drawn once per analysis run and shared by every layer.

    Random concept ``j`` is ``pool[perm_j[:m]]``; its counterexamples in run ``i`` are ``m``
    other pool examples. A concept's run ``i`` uses ``m`` of its own examples (all of them
    when it has ``m``) against ``m`` pool examples.
    """

    def __init__(self, rng: np.random.Generator, n_pool: int, n_runs: int, n_random: int) -> None:
        self.rng, self.n_pool, self.n_runs = rng, n_pool, n_runs
        self.sets = [rng.permutation(n_pool) for _ in range(n_random)]
        self.counter = [[rng.permutation(n_pool - 1) for _ in range(n_runs)] for _ in range(n_random)]
        self.runs = [rng.permutation(n_pool) for _ in range(n_runs)]
        self._picks: dict[str, list[np.ndarray]] = {}

    def random_sets(self, m: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        out = []
        for perm, counters in zip(self.sets, self.counter, strict=True):
            rest = perm[m:]
            out.append((perm[:m], [rest[c[c < len(rest)][:m]] for c in counters]))
        return out

    def concept_runs(self, concept: str, n_concept: int, m: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if concept not in self._picks:
            self._picks[concept] = [self.rng.permutation(n_concept)[:m] for _ in range(self.n_runs)]
        return [(pick, run[:m]) for pick, run in zip(self._picks[concept], self.runs, strict=True)]


def _same_class(label: Any, target: int) -> bool:
    try:
        return int(label) == target
    except (TypeError, ValueError):
        return False


def _empty_row(layer: str, concept: str) -> dict[str, Any]:
    nan = float("nan")
    return {"layer": layer, "concept": concept, "tcav": nan, "tcav_std": nan, "ci_low": nan, "ci_high": nan,
            "random_tcav": nan, "random_std": nan, "t": nan, "p": nan, "cav_accuracy": nan, "n_concept": 0, "n_eval": 0}


def _reduce_gradient(grad: torch.Tensor, reduce: str, mask: torch.Tensor | None) -> torch.Tensor:
    """Gradient with respect to the *reduced* activation, per example.

    Moving the reduced vector by ``eps * v`` means moving the token states the reduction
    reads: the first or last token for ``first``/``last``; every real token (or spatial
    position) for ``mean`` and for per-feature ``max``. The derivative along ``v`` is then
    ``v`` dotted with the sum of the token gradients the move touches.
    """
    if grad.ndim <= 2:
        return grad
    if grad.ndim >= 4:
        return grad.flatten(2).sum(dim=-1)
    if reduce in ("first", "last"):
        return reduce_tokens(grad, reduce, mask)  # type: ignore[arg-type]
    if mask is not None and mask.shape[:2] == grad.shape[:2]:
        grad = grad * mask.to(grad.device, grad.dtype).unsqueeze(-1)
    return grad.sum(dim=1)


def _activations_and_gradients(
    model: nn.Module,
    probe: ProbeSet,
    layers: Sequence[str],
    *,
    reduce: str,
    target: int,
    eval_mask: np.ndarray,
    batch_size: int,
    device: torch.device | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reduced activations of every probe example and reduced target-logit gradients of the
    scored ones, one batch at a time, so memory holds one batch of token states at most."""
    acts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    grads: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    was_training = model.training
    model.eval()
    start = 0
    try:
        for batch in probe_batches(probe, batch_size, device):
            size = len(next(iter(batch.values())))
            keep = eval_mask[start : start + size]
            start += size
            batch_acts, batch_grads = _batch_gradients(model, batch, layers, reduce=reduce, target=target,
                                                       keep=keep, positional=probe.positional)
            for layer in layers:
                acts[layer].append(batch_acts[layer])
                if layer in batch_grads:
                    grads[layer].append(batch_grads[layer])
    finally:
        model.train(was_training)
    return ({k: np.concatenate(v) for k, v in acts.items()},
            {k: np.concatenate(v) if v else np.zeros((0, acts[k][0].shape[1])) for k, v in grads.items()})


def _batch_gradients(
    model: nn.Module, batch: dict[str, torch.Tensor], layers: Sequence[str], *, reduce: str, target: int,
    keep: np.ndarray, positional: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch: a zero "tap" is added to each layer's output so that ``torch.autograd.grad``
    gives d logit / d activation without touching the parameters' ``.grad``."""
    nodes = [Node(layer) for layer in layers]
    size = len(keep)
    mask = batch.get("attention_mask")
    taps: dict[Node, tuple[torch.Tensor, torch.Tensor]] = {}

    def tap(node: Node) -> Any:
        def edit(act: torch.Tensor) -> torch.Tensor:
            leaf = torch.zeros_like(act, requires_grad=True)
            taps[node] = (act.detach(), leaf)
            return act + leaf

        return edit

    with torch.enable_grad(), intervene(model, {node: tap(node) for node in nodes}):
        logits = answer_logits(logits_of(forward(model, batch, positional=positional)), mask)
        if target >= logits.shape[-1]:
            raise InvalidParameterError(f"target={target} is out of range for {logits.shape[-1]} output classes.")
        got: Sequence[torch.Tensor | None] = (
            torch.autograd.grad(logits[:, target].sum(), [taps[n][1] for n in nodes], allow_unused=True)
            if keep.any() else [None] * len(nodes)
        )
    acts, grads = {}, {}
    rows = torch.as_tensor(keep)
    for node, grad in zip(nodes, got, strict=True):
        act = taps[node][0]
        acts[node.module] = reduce_tokens(act, reduce, mask).reshape(size, -1).float().cpu().numpy()  # type: ignore[arg-type]
        if keep.any():
            g = torch.zeros_like(act) if grad is None else grad
            reduced = _reduce_gradient(g, reduce, mask).reshape(size, -1)
            grads[node.module] = reduced[rows.to(g.device)].float().cpu().numpy()
    return acts, grads


def _figure(table: pd.DataFrame, alpha: float) -> Figure:
    fig = Figure(figsize=(max(4.0, 1.2 * table["layer"].nunique() + 2), 3.2))
    ax = fig.subplots()
    layers = list(dict.fromkeys(table["layer"]))
    concepts = list(dict.fromkeys(table["concept"]))
    width = 0.8 / (len(concepts) + 1)
    for j, concept in enumerate([*concepts, "random"]):
        sub = table[table["concept"] == (concept if concept != "random" else concepts[0])].set_index("layer")
        sub = sub.reindex(layers)
        col, err = ("random_tcav", "random_std") if concept == "random" else ("tcav", "tcav_std")
        xs = np.arange(len(layers)) + (j - len(concepts) / 2) * width
        ax.bar(xs, sub[col], width, yerr=sub[err], label=concept, color="#bbb" if concept == "random" else None,
               capsize=2)
        if concept != "random":
            for x, y, p in zip(xs, sub["tcav"], sub["p_adj"], strict=True):
                if np.isfinite(p) and p < alpha:
                    ax.text(x, min(float(y) + 0.05, 1.02), "*", ha="center", fontsize=9)
    ax.axhline(0.5, color="#555", lw=0.6, ls="--")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("TCAV score")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=6)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"TCAV per layer (* p_adj < {alpha}; grey: random concepts)", fontsize=8)
    fig.tight_layout()
    return fig
