"""CI gates: the public path of :mod:`neuronmap.compliance.gates` (same names, same objects)."""

from __future__ import annotations

from neuronmap.compliance.gates import (
    BaselineRule,
    CheckResult,
    GateCheck,
    GateConfig,
    GateConfigError,
    GateMonitor,
    GateReport,
    KeyResult,
    RunReadError,
    Status,
    evaluate,
    load_gate_config,
    match_keys,
)

__all__ = ["BaselineRule", "CheckResult", "GateCheck", "GateConfig", "GateConfigError", "GateMonitor",
           "GateReport", "KeyResult", "RunReadError", "Status", "evaluate", "load_gate_config", "match_keys"]
