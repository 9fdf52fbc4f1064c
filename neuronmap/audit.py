"""The audit trail: the public path of :mod:`neuronmap.compliance.audit` (same names, same objects)."""

from __future__ import annotations

from neuronmap.compliance.audit import (
    AUDIT_FILE,
    KEY_ENV,
    AuditError,
    AuditProblem,
    AuditTrail,
    AuditVerification,
    canonical_json,
    environment_info,
    hash_json,
    hash_model,
    model_name,
    verify,
)

__all__ = ["AUDIT_FILE", "KEY_ENV", "AuditError", "AuditProblem", "AuditTrail", "AuditVerification",
           "canonical_json", "environment_info", "hash_json", "hash_model", "model_name", "verify"]
