"""Run folders for the compliance tests: a real NeuronMap run plus hand-written fairness lines.

Imported by tests/test_gates.py, tests/test_audit.py, tests/test_cli_compliance.py and
tests/cards/ (the tests folder is on ``sys.path`` under pytest's default import mode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import neuronmap as nm
from neuronmap.compliance.audit import AuditTrail
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe

#: Hand-written fairness-like results at the last step (values chosen for the known answers).
FAIRNESS = {
    "neuronmap/fairness/gender/demographic_parity_difference": 0.08,
    "neuronmap/fairness/gender/demographic_parity_difference_ci_low": 0.02,
    "neuronmap/fairness/gender/demographic_parity_difference_ci_high": 0.15,
    "neuronmap/fairness/gender/demographic_parity_difference_p": 0.01,
    "neuronmap/fairness/gender/demographic_parity_difference_p_adj": 0.03,
    "neuronmap/representation_bias/net.3/decodability": 0.61,
    "neuronmap/representation_bias/net.3/decodability_ci_low": 0.52,
    "neuronmap/representation_bias/net.3/decodability_ci_high": 0.70,
}


def make_run(root: Path, name: str = "run", *, steps: int = 3, fairness: bool = True, audit: bool = True,
             seed: int = 0, extra: dict[str, float] | None = None) -> Path:
    """A LocalReporter run folder from a real NeuronMap (ActivationStats, ModelPerformance) on the tiny MLP."""
    reporter = LocalReporter(root, run_name=name, render_html=False)
    probe = tiny_probe(seed=seed)
    probe.description = "64 Gaussian points, label = sign of the first feature, two alternating groups."
    analyses = [nm.ActivationStats(), nm.ModelPerformance(n_resamples=200)]
    monitor = nm.NeuronMap(probe, layers=["net.*"], analyses=analyses, reporters=[reporter])
    if audit:
        AuditTrail(reporter.run_dir).attach(monitor)
    model = tiny_mlp(seed=seed)
    for step in range(steps):
        monitor.run(model, step=step, epoch=step, event="validation_end")
    if fairness:  # logged as a user's own metrics would be, before the run closes
        monitor.flush()
        reporter.log_metrics({**FAIRNESS, **(extra or {})}, step=steps - 1)
    monitor.close()  # closes the reporter, then the audit trail records the run's end and final files
    return reporter.run_dir


def append_metrics(run_dir: Path, metrics: dict[str, float | None], *, step: int) -> None:
    """Append one metrics.jsonl line as LocalReporter writes it."""
    line = {"step": step, "epoch": None, "event": None, "time": "2025-01-02T03:04:05+00:00", "metrics": metrics}
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def copy_run(src: Path, dest: Path) -> Path:
    """A private copy of a shared run folder (tests that write to it)."""
    shutil.copytree(src, dest)
    return dest
