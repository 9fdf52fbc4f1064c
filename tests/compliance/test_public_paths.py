"""The documented import paths (``neuronmap.gates``, ``neuronmap.audit``, ``neuronmap.cards``)
re-export exactly the public names of the ``neuronmap.compliance`` modules, as the same objects."""

from __future__ import annotations

import importlib

import pytest

import neuronmap as nm


@pytest.mark.parametrize(("public", "home"), [
    ("neuronmap.gates", "neuronmap.compliance.gates"),
    ("neuronmap.audit", "neuronmap.compliance.audit"),
    ("neuronmap.cards", "neuronmap.compliance.cards"),
])
def test_public_path_reexports_every_public_name(public: str, home: str) -> None:
    shim, module = importlib.import_module(public), importlib.import_module(home)
    assert sorted(shim.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(shim, name) is getattr(module, name), name


def test_top_level_names_are_the_compliance_objects() -> None:
    from neuronmap.compliance import audit, cards, gates

    assert nm.GateMonitor is gates.GateMonitor
    assert nm.evaluate_gates is gates.evaluate
    assert nm.AuditTrail is audit.AuditTrail
    assert nm.ModelCard is cards.ModelCard
    assert nm.render_card is cards.render_card
