"""What "complete" means for EU AI Act Annex IV technical documentation, item by item.

Every item of Annex IV of Regulation (EU) 2024/1689 (plus the Article 10 data-governance fields
an auditor asks for beside 2(d) and 2(g)) is listed with the card fields that answer it. An item
is *provided* when each of its fields is filled (automatic evidence or people's text), *not
applicable* when the provider wrote ``"not applicable: <reason>"``, and *missing* otherwise.
Beyond the fields, a strict render also needs: the model's own measured performance, a
verified audit trail, a sign-off recorded after the last evaluation that matches the card's
digest, and a last gate evaluation that passed.

This checks that the documentation is *complete*, not that it is *correct* or that the system
conforms: that is the provider's responsibility and, where required, a conformity assessment
(Article 43).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronmap.compliance.cards.data import ModelCard

__all__ = ["ANNEX_IV_ITEMS", "DESIGN_SPECIFICATIONS", "annex_iv_fields", "annex_iv_status", "is_filled",
           "is_not_applicable", "sign_off_status", "strict_problems"]

#: Annex IV 2(b)'s sub-items, each its own field under ``annex_iv.design_specifications``.
DESIGN_SPECIFICATIONS = ("general_logic", "algorithms", "key_design_choices", "classification_choices",
                         "optimisation_objective", "expected_output", "compliance_trade_offs")
#: ``(item, title, fields)``; ``auto:`` fields are evidence the run folder must hold.
ANNEX_IV_ITEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("1(a)", "Intended purpose, provider, version",
     ("annex_iv.intended_purpose", "annex_iv.provider", "model_details.version")),
    ("1(b)", "Interaction with other hardware, software or AI systems", ("annex_iv.interactions",)),
    ("1(c)", "Versions of relevant software", ("auto:environment.versions",)),
    ("1(d)", "Forms in which the system is placed on the market", ("annex_iv.market_forms",)),
    ("1(e)", "Hardware on which the system is intended to run", ("annex_iv.hardware",)),
    ("1(f)", "Photographs or illustrations of products the system is a component of",
     ("annex_iv.product_illustrations",)),
    ("1(g)", "User interface provided to the deployer", ("annex_iv.user_interface",)),
    ("1(h)", "Instructions for use for the deployer", ("annex_iv.instructions_for_use",)),
    ("2(a)", "Methods and steps of development", ("annex_iv.development_methods",)),
    ("2(b)", "Design specifications", tuple(f"annex_iv.design_specifications.{k}" for k in DESIGN_SPECIFICATIONS)),
    ("2(c)", "System architecture and computational resources",
     ("annex_iv.architecture", "annex_iv.compute_resources")),
    ("2(d)", "Data requirements: training data, provenance, selection, labelling, cleaning",
     ("training_data.description", "training_data.provenance", "training_data.selection",
      "training_data.labelling", "training_data.cleaning")),
    ("2(e)", "Assessment of the human oversight measures (Art. 14)", ("annex_iv.human_oversight",)),
    ("2(f)", "Pre-determined changes to the system and its performance", ("annex_iv.predetermined_changes",)),
    ("2(g)", "Validation and testing: data, metrics, measured performance, discriminatory impacts, logs",
     ("auto:evaluation_data.fingerprint", "auto:performance.overall", "auto:test_log")),
    ("2(h)", "Cybersecurity measures", ("annex_iv.cybersecurity",)),
    ("3", "Capabilities and limitations, accuracy for groups and overall, risks, oversight, input data",
     ("annex_iv.capabilities_and_limitations", "auto:performance.by_group", "annex_iv.expected_accuracy",
      "ethical_considerations.risks", "annex_iv.input_specifications")),
    ("4", "Appropriateness of the performance metrics", ("annex_iv.metrics_appropriateness",)),
    ("5", "Risk management system (Art. 9)", ("annex_iv.risk_management",)),
    ("6", "Relevant changes through the lifecycle", ("annex_iv.lifecycle_changes",)),
    ("7", "Harmonised standards or other specifications applied", ("annex_iv.standards_applied",)),
    ("8", "Copy of the EU declaration of conformity (Art. 47)", ("annex_iv.declaration_of_conformity",)),
    ("9", "Post-market monitoring plan (Art. 72)", ("annex_iv.post_market_monitoring",)),
    ("Art. 10(2)(f)", "Examination for possible biases", ("auto:quantitative_analyses.fairness",)),
    ("Art. 10(2)(g)", "Measures to detect, prevent and mitigate biases", ("annex_iv.bias_mitigation",)),
    ("Art. 10(2)(h)", "Data gaps or shortcomings and how they are addressed", ("annex_iv.data_gaps",)),
    ("Art. 10(5)", "Conditions for processing special categories of personal data",
     ("annex_iv.special_category_data",)),
)
_NOT_APPLICABLE = re.compile(r"^\s*not applicable\s*[:\-–]\s*(?P<reason>.{3,})", re.IGNORECASE | re.DOTALL)


def annex_iv_fields() -> tuple[str, ...]:
    """The people-supplied fields of every item (what ``--strict`` requires), in item order."""
    return tuple(f for _, _, fields in ANNEX_IV_ITEMS for f in fields if not f.startswith("auto:"))


def is_not_applicable(value: Any) -> str | None:
    """The reason when ``value`` reads ``"not applicable: <reason>"``, else ``None``."""
    if isinstance(value, str):
        match = _NOT_APPLICABLE.match(value)
        if match:
            return match.group("reason").strip()
    return None


def is_filled(value: Any) -> bool:
    """Whether a card field counts as filled: not empty, ``TODO``, ``TBD``, ``N/A`` or a bare
    ``"not applicable"`` without its reason."""
    if value is None:
        return False
    if isinstance(value, str):
        text = value.strip()
        if text.lower().rstrip(":. ") == "not applicable":
            return False  # "not applicable" needs its reason: "not applicable: <reason>"
        return bool(text) and text.upper() not in ("TODO", "TBD", "N/A")
    if isinstance(value, (Mapping, Sequence)):
        return len(value) > 0
    return True


def _get(card_dict: Mapping[str, Any], dotted: str) -> Any:
    node: Any = card_dict
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def annex_iv_status(card: ModelCard) -> list[dict[str, Any]]:
    """One row per item: ``item, title, status`` (``provided``, ``not applicable``, ``missing``),
    ``missing`` (fields still empty) and ``reasons`` (not-applicable reasons)."""
    data = card.to_dict()
    rows = []
    for item, title, fields in ANNEX_IV_ITEMS:
        missing, reasons, provided = [], [], 0
        for field in fields:
            value = _get(data, field.removeprefix("auto:"))
            reason = is_not_applicable(value)
            if reason is not None:
                reasons.append(f"{field}: {reason}")
            elif is_filled(value):
                provided += 1
            else:
                missing.append(field)
        if item == "2(c)" and "annex_iv.architecture" in missing and data["model_details"].get("architecture"):
            missing.remove("annex_iv.architecture")  # the model type recorded from the run answers it
        status = "missing" if missing else "not applicable" if reasons and not provided else "provided"
        rows.append({"item": item, "title": title, "status": status, "missing": missing, "reasons": reasons})
    return rows


def sign_off_status(card: ModelCard, digest: str) -> dict[str, Any]:
    """Whether the card carries a valid sign-off: the latest ``sign_off`` entry of the trail,
    recorded after the last evaluation, for this card's digest."""
    offs = list(card.audit.get("sign_offs") or [])
    if not offs:
        return {"valid": False, "reason": "no sign-off is recorded in the audit trail (`neuronmap audit sign-off`)",
                "entry": None}
    last = offs[-1]
    evaluation = card.audit.get("last_evaluation") or {}
    if evaluation and int(evaluation.get("seq") or -1) > int(last.get("seq") or -1):
        return {"valid": False, "entry": last,
                "reason": f"the sign-off by {last.get('by')} ({last.get('timestamp')}) predates the last evaluation "
                          f"({evaluation.get('kind')} at {evaluation.get('timestamp')})"}
    if last.get("card_digest") != digest:
        return {"valid": False, "entry": last,
                "reason": f"the sign-off by {last.get('by')} is for card digest {str(last.get('card_digest'))[:16]}…, "
                          f"but this card's digest is {digest[:16]}… (its data or evidence changed since)"}
    return {"valid": True, "entry": last, "reason": ""}


def strict_problems(card: ModelCard, digest: str) -> list[str]:
    """Everything that keeps a strict Annex IV render from passing, one line each."""
    problems = []
    for row in annex_iv_status(card):
        if row["status"] == "missing":
            problems.append(f"Annex IV {row['item']} ({row['title']}): missing {', '.join(row['missing'])}")
    audit = card.audit
    if not audit.get("present"):
        problems.append("no audit trail in the run folder")
    elif not audit.get("verified"):
        why = "; ".join(audit.get("problems") or []) or "no engine run or file manifest recorded"
        problems.append(f"the audit trail does not verify: {why}")
    off = sign_off_status(card, digest)
    if not off["valid"]:
        problems.append(f"test sign-off: {off['reason']}")
    gate = audit.get("last_gate")
    if gate and gate.get("exit_code") not in (0, None):
        problems.append(f"the last gate evaluation ({gate.get('timestamp')}) exited {gate.get('exit_code')}: "
                        f"{gate.get('failed', 0)} failed, {gate.get('error', 0)} not run")
    return problems
