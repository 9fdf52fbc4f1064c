"""World-model probes: do a layer's activations encode where places are and when events happened?

Gurnee & Tegmark (2023) fitted linear ridge probes from the activations of an entity's name
to its latitude and longitude (places) or its year (events, people, works) and found that
held-out R² rises with depth, generalises to held-out regions and periods, and beats
baselines. :class:`WorldModelProbe` runs that protocol per layer on a probe set with the
target columns (the shipped :func:`neuronmap.presets.places` and
:func:`neuronmap.presets.events` sets, or your own):

* R² of ridge probes (CI, exact permutation p corrected across layers and targets), the
  shuffled-target control and a random-feature baseline, as in
  :class:`~neuronmap.analyses.regression_probing.RegressionProbing`;
* **held-out-group generalisation**: R² when whole regions (continents) or periods are held
  out of training (Gurnee & Tegmark 2023, sec. 4.2, "block holdout");
* for space, the mean great-circle **error in km** of the predicted positions (haversine,
  with a bootstrap CI) and a **map** of predicted vs true positions at the best layer; for
  time, predicted vs true years.

References:
    Gurnee & Tegmark (2023). Language Models Represent Space and Time. arXiv:2310.02207 (ICLR 2024).
    Sinnott (1984). Virtues of the Haversine. Sky and Telescope 68(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap.analyses.base import AnalysisContext, AnalysisResult, register_analysis
from neuronmap.analyses.params import Columns, Options
from neuronmap.analyses.regression_probing import RegressionProbing, r2_figure
from neuronmap.errors import InvalidParameterError
from neuronmap.stats import bootstrap_ci

__all__ = ["WorldModelProbe", "haversine_km"]

Kind = Literal["space", "time"]
_DEFAULTS: dict[str, tuple[tuple[str, ...], str]] = {
    "space": (("latitude", "longitude"), "region"),
    "time": (("year",), "period"),
}
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> NDArray[np.float64]:
    """Great-circle distance in km between points given in degrees (Sinnott 1984).

    Example:
        >>> round(float(haversine_km(51.51, -0.13, 48.86, 2.35)))  # London - Paris
        343
    """
    p1, p2 = np.radians(np.asarray(lat1, dtype=float)), np.radians(np.asarray(lat2, dtype=float))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=float) - np.asarray(lon1, dtype=float))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


@register_analysis
class WorldModelProbe(RegressionProbing):
    """Linear probes for space (latitude/longitude) or time (year), with held-out-group generalisation.

    Args:
        kind: ``"space"`` (targets ``latitude``/``longitude``, groups ``region``) or ``"time"``
            (target ``year``, groups ``period``).
        targets: Override the target columns.
        holdout_column: Override the column whose groups are held out (``None`` keeps the default;
            ``""`` disables the held-out score).
        cv, standardize, control_task, control_column, random_features, n_permutations,
            n_resamples, confidence, p_adjust, alpha, layers, blas_threads, name: As for
            :class:`RegressionProbing` (``n_bootstrap`` is the deprecated name of ``n_resamples``).

    Metrics (per layer): ``<target>_r2`` (CI, ``_p``, ``_p_adj``), ``<target>_holdout_r2`` (CI),
    ``<target>_control_r2``, ``<target>_selectivity`` (CI), ``<target>_random_feature_r2``
    (``r2`` ... without prefix for a single target), and for space ``error_km`` (CI).
    Figures: ``r2``, and ``map`` (space) or ``years`` (time).

    Example:
        >>> import numpy as np, torch, neuronmap as nm
        >>> from neuronmap.presets import places
        >>> df = places().frame
        >>> coords = torch.tensor(df[["latitude", "longitude"]].to_numpy(), dtype=torch.float32)
        >>> probe = nm.ProbeSet(torch.cat([coords / 90, torch.randn(len(df), 6)], 1), metadata=df)
        >>> wm = WorldModelProbe("space", n_permutations=99, n_resamples=99)
        >>> m = nm.NeuronMap(probe, layers=["0"], analyses=[wm], reporters=[]).run(
        ...     torch.nn.Sequential(torch.nn.Linear(8, 16)), step=0).metrics
        >>> m["neuronmap/world_model/0/latitude_r2"] > 0.9
        True
    """

    name = "world_model"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "kind": [Options(_DEFAULTS)],
        "targets": [None, Columns()],
    }

    def __init__(
        self,
        kind: Kind = "space",
        *,
        targets: Sequence[str] | None = None,
        holdout_column: str | None = None,
        cv: int = 5,
        standardize: bool = True,
        control_task: bool = True,
        control_column: str | None = None,
        random_features: bool = True,
        n_permutations: int = 1000,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
        blas_threads: int | None = 1,
        name: str | None = None,
    ) -> None:
        columns = list(_DEFAULTS[kind][0] if targets is None else [targets] if isinstance(targets, str) else targets)
        if kind == "space" and len(columns) != 2:
            raise InvalidParameterError(
                f"WorldModelProbe: targets must be two columns (latitude, longitude) for kind='space'; got {targets!r}."
            )
        super().__init__(columns, cv=cv, standardize=standardize, holdout_column=holdout_column,
                         control_task=control_task, control_column=control_column, random_features=random_features,
                         n_permutations=n_permutations, n_resamples=n_resamples, confidence=confidence,
                         p_adjust=p_adjust, alpha=alpha, layers=layers, blas_threads=blas_threads, name=name)
        self.kind = kind
        self.targets = targets

    def _wanted_holdout(self) -> str | None:
        """``holdout_column`` with its default for ``kind`` filled in (``""`` disables it)."""
        return _DEFAULTS[self.kind][1] if self.holdout_column is None else (self.holdout_column or None)

    def _holdout(self, ctx: AnalysisContext) -> str | None:
        column = self._wanted_holdout()
        return column if column is not None and column in ctx.probe.frame else None

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        wanted, notes = self._wanted_holdout(), []
        if wanted is not None and wanted not in ctx.probe.frame:
            notes.append(f"Probe set has no {wanted!r} column; no held-out-group score.")
        scored = self.score(ctx)
        if isinstance(scored, str):
            return AnalysisResult(self.name, status="skipped", notes=(scored,))
        table, preds, ys, more = scored
        notes += more
        metrics = self.metrics(table)
        tables = {"world_model": table}
        layers = list(dict.fromkeys(table["layer"]))
        best = str(table.groupby("layer", sort=False)["r2"].mean().idxmax())
        figures = {"r2": r2_figure(table, confidence=self.confidence, title=f"World model ({self.kind})")}
        keep = self._targets(ctx)[1]
        labels = ctx.probe.frame.loc[keep]
        if self.kind == "space":
            lat, lon = self._target_columns()
            rows = []
            for layer in layers:
                km = haversine_km(ys[lat], ys[lon], preds[(layer, lat)], preds[(layer, lon)])
                ci = bootstrap_ci(np.mean, km, n_resamples=self.n_resamples, confidence=self.confidence,
                                  random_state=ctx.random_state)  # fmt: skip
                rows.append({"layer": layer, "error_km": ci.estimate, "error_km_ci_low": ci.low,
                             "error_km_ci_high": ci.high, "median_error_km": float(np.median(km))})  # fmt: skip
                metrics.add(layer, "error_km", ci.estimate, ci=ci)
            tables["distance"] = pd.DataFrame(rows)
            figures["map"] = _map_figure(ys[lat], ys[lon], preds[(best, lat)], preds[(best, lon)],
                                         _groups(labels, self._holdout(ctx)), best)  # fmt: skip
        else:
            target = self._target_columns()[0]
            figures["years"] = _time_figure(ys[target], preds[(best, target)],
                                            _groups(labels, self._holdout(ctx)), best, target)  # fmt: skip
        notes.append(f"Best layer by mean R²: {best}.")
        return AnalysisResult(self.name, metrics=metrics, tables=tables, figures=figures, notes=tuple(notes))


def _groups(frame: pd.DataFrame, column: str | None) -> NDArray[Any]:
    if column and column in frame:
        return frame[column].astype(str).to_numpy()
    return np.full(len(frame), "all")


def _colors(groups: NDArray[Any]) -> tuple[list[str], dict[str, Any]]:
    from matplotlib import colormaps

    names = list(dict.fromkeys(groups))
    cmap = colormaps["tab10"]
    return names, {g: cmap(i % 10) for i, g in enumerate(names)}


def _map_figure(lat: NDArray[np.float64], lon: NDArray[np.float64], plat: NDArray[np.float64],
                plon: NDArray[np.float64], groups: NDArray[Any], layer: str) -> Figure:  # fmt: skip
    """True (hollow) and predicted (filled) positions on a longitude/latitude plane, joined by lines."""
    fig = Figure(figsize=(8.0, 4.4))
    ax = fig.subplots()
    names, color = _colors(groups)
    for a, b, c, d in zip(lon, lat, plon, plat, strict=True):
        ax.plot([a, c], [b, d], color="#bbb", lw=0.5, zorder=1)
    for g in names:
        sel = groups == g
        ax.scatter(lon[sel], lat[sel], s=14, facecolors="none", edgecolors=[color[g]], lw=0.8, zorder=2)
        ax.scatter(plon[sel], plat[sel], s=12, color=color[g], label=g, zorder=3)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.axhline(0, color="#ddd", lw=0.6, zorder=0)
    ax.set_title(f"Predicted (filled) vs true (hollow) positions, held-out folds, layer {layer}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def _time_figure(y: NDArray[np.float64], pred: NDArray[np.float64], groups: NDArray[Any], layer: str,
                 target: str) -> Figure:  # fmt: skip
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    names, color = _colors(groups)
    for g in names:
        sel = groups == g
        ax.scatter(y[sel], pred[sel], s=12, color=color[g], label=g)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], color="#555", ls=":", lw=1)
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target} (held-out folds)")
    ax.set_title(f"{target}: layer {layer}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
