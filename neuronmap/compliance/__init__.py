"""Compliance: CI gates, the tamper-evident audit trail and model cards.

- :mod:`neuronmap.compliance.gates`: thresholds on a run's metrics → ``GateReport`` (exit code,
  JSON, JUnit XML, Markdown); its YAML in ``_gate_config``, its renderings in ``_gate_output``.
- :mod:`neuronmap.compliance.audit`: the hash-chained ``audit.jsonl``; verification in
  ``_audit_verify``, evidence-file digests in ``_audit_evidence``, Ed25519 in ``_audit_sign``.
- :mod:`neuronmap.compliance.cards`: model-card data from a run folder and its sandboxed renderer.

They read run folders and the engine's results; none of them knows the command line (the
``neuronmap gate``/``audit``/``card`` commands live in the CLI package). The public paths
``neuronmap.gates``, ``neuronmap.audit`` and ``neuronmap.cards`` re-export the same names.
This package imports nothing itself, so that importing one part does not load the others.
"""
