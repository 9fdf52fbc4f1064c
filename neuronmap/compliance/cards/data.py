"""Model-card data: the sections of Mitchell et al. (2019), filled from a run and from people.

"Model Cards for Model Reporting" (Mitchell et al., FAT* 2019, section 4) lists nine sections:
model details, intended use, factors, metrics, evaluation data, training data, quantitative
analyses, ethical considerations, caveats and recommendations. NeuronMap fills what a run
knows (every metric with its CI and corrected p-value, fairness and representation-bias
results, the probe set's fingerprint, the environment, dated test logs, figures) and reads the
rest (intended use, training data, ethics ...) from a YAML file that people write. Run data are
read generically, so any analysis that logs stable keys shows up without changes here.

The model's own task performance (:class:`~neuronmap.ModelPerformance`) is kept apart from the
interpretability results: it is what "metrics" and "quantitative analyses" mean in the paper
and in Annex IV 2(g) and 3, and the only source of the Hugging Face ``model-index``. Probes,
similarity and neuron statistics describe the model's internals and appear under "model
examination"; representation bias (decodability of a sensitive attribute) is examination too.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from neuronmap.compliance.cards._annex_iv import annex_iv_fields, is_filled
from neuronmap.compliance.cards._sources import metric_rows, read_run_folder
from neuronmap.errors import InvalidParameterError
from neuronmap.runs.folder import METRICS_FILE

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.engine import NeuronMap

__all__ = ["ANNEX_IV_REQUIRED", "REQUIRED_FIELDS", "SECTIONS", "ModelCard", "card_digest", "load_card_data"]

#: The sections of Mitchell et al. 2019, in the paper's order.
SECTIONS = ("model_details", "intended_use", "factors", "metrics", "evaluation_data", "training_data",
            "quantitative_analyses", "ethical_considerations", "caveats_and_recommendations")
#: Top-level keys a card YAML file may hold.
USER_KEYS = (*SECTIONS, "annex_iv", "extra")
#: Fields only people can fill; ``--strict`` fails while any is empty.
REQUIRED_FIELDS = (
    "model_details.name", "model_details.version", "model_details.developers", "model_details.license",
    "intended_use.primary_uses", "intended_use.primary_users", "intended_use.out_of_scope_uses",
    "training_data.description", "ethical_considerations.risks", "caveats_and_recommendations.recommendations",
)
#: Extra fields the EU AI Act Annex IV template needs: every people-supplied field of every item
#: (see :mod:`neuronmap.compliance.cards._annex_iv`); each may read ``"not applicable: <reason>"``.
ANNEX_IV_REQUIRED = annex_iv_fields()
_FAIRNESS_ANALYSES = ("fairness", "representation_bias", "counterfactual_bias")
#: Analyses whose results measure how the system treats groups of persons (Art. 10, Annex IV 2(g)).
_BIAS_ANALYSES = ("fairness", "counterfactual_bias")
_PERFORMANCE = "performance"
#: Metrics where lower is better (a declared value is "not met" when the measured one is higher).
_LOWER_IS_BETTER = ("calibration_error", "mae")
#: Method settings of a bias analysis worth stating on a card, in reading order.
_METHOD_KEYS = ("test", "n_permutations", "p_adjust", "alpha", "n_resamples", "confidence", "min_group_size",
                "positive_label", "metrics")
_METHOD_ALIASES = {"correction": "p_adjust"}


def load_card_data(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Read people-supplied card data from YAML (``yaml.safe_load`` only) or a mapping.

    Raises:
        InvalidParameterError: The file is missing, is not YAML, is not a mapping, or has a
            top-level key that is not a card section (the message lists the allowed ones).
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidParameterError(f"Card data file {str(path)!r} does not exist.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise InvalidParameterError(f"{path}{where}: invalid YAML: {getattr(err, 'problem', err)}.") from err
    if not isinstance(data, Mapping):
        raise InvalidParameterError(f"Card data must be a mapping of sections; got {type(data).__name__}.")
    unknown = sorted(str(k) for k in data if k not in USER_KEYS)
    if unknown:
        raise InvalidParameterError(f"Unknown card section(s) {unknown}; allowed: {', '.join(USER_KEYS)}.")
    return copy.deepcopy(dict(data))


def _merge(auto: Mapping[str, Any], user: Any) -> dict[str, Any]:
    """``user`` over ``auto``, recursively for mappings; a non-mapping user value goes under ``text``."""
    out = copy.deepcopy(dict(auto))
    if user is None:
        return out
    if not isinstance(user, Mapping):
        out["text"] = user
        return out
    for key, value in user.items():
        both_mappings = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merge(out[key], value) if both_mappings else value
    return out


@dataclass(frozen=True)
class ModelCard:
    """Everything a model card template can show, as plain data.

    Build it with :meth:`from_run` or :meth:`from_monitor`, add what people know with
    :meth:`with_data`, render with :func:`neuronmap.cards.render_card`.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
        >>> _ = monitor.run(tiny_mlp(), step=0)
        >>> card = ModelCard.from_monitor(monitor, data={"model_details": {"name": "tiny"}})
        >>> card.model_details["name"], card.evaluation_data["n"]
        ('tiny', 64)
    """

    model_details: dict[str, Any] = field(default_factory=dict)
    intended_use: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation_data: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    #: ``results`` (all latest metrics), ``by_analysis``, ``fairness`` rows and ``tables``.
    quantitative_analyses: dict[str, Any] = field(default_factory=dict)
    ethical_considerations: dict[str, Any] = field(default_factory=dict)
    caveats_and_recommendations: dict[str, Any] = field(default_factory=dict)
    #: Versions, git commit, user and host (from the audit trail's first run, else now).
    environment: dict[str, Any] = field(default_factory=dict)
    #: Figures: ``name``, ``step``, ``path`` (relative to the run folder), ``data_uri`` (base64 PNG).
    figures: list[dict[str, Any]] = field(default_factory=list)
    #: Dated records of every evaluation (engine runs and gate evaluations).
    test_log: list[dict[str, Any]] = field(default_factory=list)
    #: Run folder, status and times.
    run: dict[str, Any] = field(default_factory=dict)
    #: Audit-trail verification summary (``present``, ``ok``, ``entries``, ``head``, ``problems``).
    audit: dict[str, Any] = field(default_factory=dict)
    #: People-supplied EU AI Act Annex IV items.
    annex_iv: dict[str, Any] = field(default_factory=dict)
    #: The model's own task performance (:class:`~neuronmap.ModelPerformance`): ``present``, ``task``,
    #: ``overall`` and ``by_group`` rows with CIs and group sizes, ``declared`` comparisons.
    performance: dict[str, Any] = field(default_factory=dict)
    #: Bias evidence: ``method`` (test, correction, alpha, resamples per analysis), ``notes``,
    #: ``ci_explanation``.
    bias: dict[str, Any] = field(default_factory=dict)
    #: Interpretability results (probing, similarity, statistics, representation bias) by analysis.
    examination: dict[str, Any] = field(default_factory=dict)
    #: The latest run's findings (``analysis``, ``kind``, ``line``), most important first.
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: Anything else from the card YAML, for custom templates.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The people-supplied data as read (hashed into the audit trail).
    user_data: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, data: Any = None) -> ModelCard:
        """Fill a card from a LocalReporter run folder, then merge ``data`` (a YAML path or mapping)."""
        folder = read_run_folder(Path(run_dir))
        config = folder["config"]
        probe = dict(config.get("probe") or {})
        groups = [str(g) for g in probe.pop("groups", None) or []]
        monitor_name = config.get("name") if config.get("name") not in (None, "", "neuronmap") else None
        name = folder["audit"].get("model_name") or monitor_name or Path(run_dir).name
        auto = _auto_sections(folder["history"], name=str(name), probe=probe, groups=groups, run=folder["run"],
                              config=config, notes=folder["notes"])
        auto["caveats_and_recommendations"]["analysis_failures"] = folder["failures"]
        card = cls(**auto, environment=folder["environment"], figures=folder["figures"],
                   test_log=folder["test_log"], audit=folder["audit"], run=folder["run"], findings=folder["findings"])
        card = dataclasses.replace(card, quantitative_analyses={**card.quantitative_analyses,
                                                                "tables": folder["tables"]})
        return card.with_data(data)

    @classmethod
    def from_monitor(cls, monitor: NeuronMap, *, model: nn.Module | None = None, data: Any = None) -> ModelCard:
        """Fill a card from a live monitor (its History, config and probe set, and its run folder if any)."""
        # publisher.run_dir, not the ``reporters`` property: reading must not create a default folder.
        run_dir = monitor.publisher.run_dir
        if run_dir is not None and hasattr(monitor, "flush"):
            monitor.flush(timeout=60)  # reporters write on background threads: read the folder once written
        if run_dir is not None and (run_dir / METRICS_FILE).exists():
            base = cls.from_run(run_dir)
        else:
            from neuronmap.compliance.audit import environment_info

            base = cls(environment={**environment_info(), "recorded": "at card rendering"})
        from neuronmap.compliance.audit import model_name

        probe = monitor.probe
        name = model_name(model) if model is not None else base.audit.get("model_name")
        last = getattr(monitor, "last_report", None)
        auto: dict[str, Any] = _auto_sections(
            monitor.history.frame, name=name or (monitor.name if monitor.name != "neuronmap" else "model"),
            probe={"name": probe.name, "n": len(probe), "fingerprint": probe.fingerprint(),
                   "description": probe.description},
            groups=list(probe.group_columns), run=base.run, config=monitor.config(),
            notes={n: list(r.notes) for n, r in last.results.items()} if last is not None else {},
        )
        if last is not None and getattr(last, "findings", None):
            auto["findings"] = [{"analysis": f.analysis, "kind": f.kind, "line": f.line(), "step": last.step}
                                for f in last.findings]
        if model is not None:
            auto["model_details"]["architecture"] = type(model).__name__
            auto["model_details"]["parameters"] = int(sum(p.numel() for p in model.parameters()))
        auto["quantitative_analyses"]["tables"] = base.quantitative_analyses.get("tables", [])
        auto["caveats_and_recommendations"] = base.caveats_and_recommendations or auto["caveats_and_recommendations"]
        return dataclasses.replace(base, **auto).with_data(data)

    @property
    def stats_note(self) -> str:
        """What the findings' CI, p and p_adj mean (:data:`neuronmap.findings.STATS_NOTE`); empty without p_adj."""
        from neuronmap.findings import stats_note

        # the findings keep only their text here, so that a card from a monitor and one from its run
        # folder agree (and keep one digest)
        return stats_note(self.findings)

    def with_data(self, data: Any) -> ModelCard:
        """A copy with people-supplied data (YAML path or mapping) merged over the automatic sections."""
        user = load_card_data(data)
        if not user:
            return self
        merged: dict[str, Any] = {key: _merge(getattr(self, key), user.get(key)) for key in USER_KEYS if key in user}
        card = dataclasses.replace(self, **merged, user_data=_merge(self.user_data, user))
        performance = {**card.performance, "declared": _declared(card.performance, card.annex_iv)}
        return dataclasses.replace(card, performance=performance)

    def without_identity(self) -> ModelCard:
        """A copy without user and host names (public cards omit them unless asked)."""
        environment = {k: v for k, v in self.environment.items() if k not in ("user", "host")}
        log = [{**e, "user": None} for e in self.test_log]
        return dataclasses.replace(self, environment=environment, test_log=log)

    # ------------------------------------------------------------------ queries
    def get(self, dotted: str) -> Any:
        """A field by dotted path (``model_details.name``), ``None`` when absent."""
        node: Any = self.to_dict()
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def missing_fields(self, required: Sequence[str] = REQUIRED_FIELDS) -> list[str]:
        """Required fields that are empty or still ``TODO``/``TBD``."""
        return [f for f in required if not is_filled(self.get(f))]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what templates receive as ``card``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def card_digest(card: ModelCard) -> str:
    """SHA-256 of what a card states: every section, the evidence read from the run and the card
    data, without the audit status, the run folder's location and the rendering itself.

    A sign-off (:meth:`neuronmap.audit.AuditTrail.record_sign_off`) binds this digest: a card
    whose data or evidence changed afterwards no longer matches it.
    """
    from neuronmap.compliance.audit import hash_json

    body = {k: v for k, v in card.to_dict().items() if k not in ("audit", "run")}
    body["run"] = {k: v for k, v in card.run.items() if k != "folder"}
    return hash_json(body)


def _performance(rows: list[dict[str, Any]], config: Mapping[str, Any]) -> dict[str, Any]:
    """The model's own metrics: overall rows with Hub ids, per-group rows with sizes."""
    from neuronmap.analyses.performance import HUB_METRICS

    mine = [r for r in rows if r["analysis"] == _PERFORMANCE]
    if not mine:
        return {"present": False, "overall": [], "by_group": [], "declared": []}
    sizes = {r["layer"]: r["value"] for r in mine if r["metric"] == "n"}
    overall, by_group = [], []
    for r in mine:
        if r["metric"] == "n":
            continue
        hub_id, label = HUB_METRICS.get(r["metric"], (r["metric"], r["metric"]))
        row = {**r, "hub_id": hub_id, "label": label, "n": sizes.get(r["layer"])}
        if r["layer"] == "overall":
            overall.append(row)
        else:
            attribute, _, group = r["layer"].partition(".")
            by_group.append({**row, "attribute": attribute, "group": group})
    settings = dict((config.get("analyses") or {}).get(_PERFORMANCE) or {})
    task = "regression" if any(r["metric"] in ("r2", "mae") for r in overall) else "classification"
    return {"present": True, "task": task, "overall": overall, "by_group": by_group, "declared": [],
            "n": sizes.get("overall"), "confidence": settings.get("confidence", 0.95),
            "n_resamples": settings.get("n_resamples")}


def _declared(performance: Mapping[str, Any], annex: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The provider's declared accuracy (``annex_iv.expected_accuracy``) beside the measured value.

    A number means accuracy; a mapping names metrics (``accuracy``, ``f1_macro``, ``r2`` ...).
    A declared value better than the measured estimate is flagged.
    """
    declared = annex.get("expected_accuracy")
    if isinstance(declared, bool) or declared is None:
        return []
    if isinstance(declared, (int, float)):
        declared = {"accuracy": declared}
    if not isinstance(declared, Mapping):
        return []
    measured = {r["metric"]: r for r in performance.get("overall", [])}
    out = []
    for metric, value in declared.items():
        try:
            claim = float(value)
        except (TypeError, ValueError):
            continue
        row = measured.get(str(metric))
        if row is None or row.get("value") is None:
            out.append({"metric": metric, "declared": claim, "measured": None, "flag": True,
                        "text": f"declared {metric} {claim:.4g} has no measured value in this run"})
            continue
        value_m = float(row["value"])
        worse = value_m > claim if metric in _LOWER_IS_BETTER else value_m < claim
        inside = row.get("has_ci") and row["ci_low"] <= claim <= row["ci_high"]
        text = (f"declared {claim:.4g}, measured {row['display']}: "
                + ("LOWER THAN DECLARED" if worse and metric not in _LOWER_IS_BETTER else
                   "WORSE THAN DECLARED" if worse else "declared level met")
                + (" (the declared value lies inside the CI)" if worse and inside else ""))
        out.append({"metric": metric, "declared": claim, "measured": value_m, "flag": bool(worse), "text": text})
    return out


def _bias(config: Mapping[str, Any], notes: Mapping[str, list[str]]) -> dict[str, Any]:
    methods = []
    for name, settings in (config.get("analyses") or {}).items():
        if not isinstance(settings, Mapping):
            continue
        if name in _BIAS_ANALYSES or settings.get("class") in ("Fairness", "CounterfactualBias"):
            methods.append({"analysis": name, **{k: settings[k] for k in _METHOD_KEYS if k in settings}})
    return {
        "method": methods,
        "notes": {k: v for k, v in notes.items() if k in (*_BIAS_ANALYSES, "representation_bias", _PERFORMANCE)},
        "ci_explanation": (
            "Disparities are max - min differences (or min/max ratios) across groups; their intervals are "
            "stratified bootstrap percentile intervals of that statistic. A max - min gap is never negative, so "
            "its bootstrap distribution sits above 0 and the interval does not test 'no difference' (the "
            "estimate can even fall outside its own interval); the p-value of each row tests equal rates across "
            "groups (chi-square or permutation), corrected for multiple comparisons."),
    }


def _auto_sections(history: pd.DataFrame, *, name: str, probe: Mapping[str, Any], groups: list[str],
                   run: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                   notes: Mapping[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    rows = metric_rows(history)
    config = config or {}
    by_analysis: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_analysis.setdefault(row["analysis"] or "user", []).append(row)
    fairness = [r for r in rows if r["analysis"] in _BIAS_ANALYSES]
    attributes = sorted({r["layer"] for r in fairness if r["analysis"] == "fairness"})
    performance = _performance(rows, config)
    examination = {a: r for a, r in by_analysis.items() if a not in (*_BIAS_ANALYSES, _PERFORMANCE)}
    siblings = sorted({s for r in rows for s in ("ci", "p", "p_adj") if r.get(f"has_{s}")})
    approaches = {
        "ci": "bootstrap confidence intervals (keys ending in _ci_low / _ci_high)",
        "p": "significance tests (keys ending in _p)",
        "p_adj": "p-values corrected for multiple comparisons across layers/attributes (keys ending in _p_adj)",
    }
    steps = sorted({int(s) for s in history["step"]}) if len(history) else []
    return {
        "model_details": {"name": name, "date": str(run.get("ended") or run.get("started") or "")[:10] or None},
        "intended_use": {},
        "factors": {"relevant_factors": sorted(set(groups) | set(attributes)), "fairness_attributes": attributes},
        "metrics": {
            "performance_measures": sorted({r["label"] for r in performance["overall"]}),
            "examination_measures": sorted({f"{r['analysis']}/{r['metric']}" for r in rows
                                            if r["analysis"] in examination}),
            "variation_approaches": [approaches[s] for s in siblings],
        },
        "evaluation_data": {**dict(probe), "groups": groups or None, "steps": steps},
        "training_data": {},
        "quantitative_analyses": {"results": rows, "by_analysis": by_analysis, "fairness": fairness,
                                  "analyses": sorted(by_analysis)},
        "performance": performance,
        "bias": _bias(config, notes or {}),
        "examination": {"by_analysis": examination, "analyses": sorted(examination)},
        "ethical_considerations": {},
        "caveats_and_recommendations": {"analysis_failures": []},
    }
