"""A short evaluation for CI: train a small model briefly, run NeuronMap on a fixed probe set,
leave a run folder (with its audit trail) for ``neuronmap gate`` to judge.

Run it the way the CI jobs in this folder do::

    python examples/ci_gate/evaluate.py --out neuronmap-runs/ci
    neuronmap gate neuronmap-runs/ci --config examples/ci_gate/gates.yaml --junit gate-junit.xml

Replace the model and probe set with yours; keep the probe set fixed between runs so that the
numbers (and the probe-set fingerprint in the audit trail) stay comparable.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

import neuronmap as nm
from neuronmap.analyses.probing import Probing
from neuronmap.audit import AuditTrail
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="neuronmap-runs/ci", help="run folder to write (replaced)")
    parser.add_argument("--steps", type=int, default=200, help="training steps before the evaluation")
    args = parser.parse_args()

    torch.manual_seed(0)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    probe = tiny_probe(n=128)
    probe.description = "128 Gaussian points; label = sign of the first feature; two alternating groups."
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long()
    for _ in range(args.steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    reporter = LocalReporter(out.parent, run_name=out.name, render_html=False)
    monitor = nm.NeuronMap(
        probe,
        layers=["net.*"],
        # Probing only the last two layers keeps CI fast; with 2 layers the smallest Holm-adjusted
        # permutation p-value is 2 / (99 + 1) = 0.02, below the gate's 0.05.
        analyses=[nm.ActivationStats(),
                  Probing(n_permutations=99, n_resamples=200, control_task=False, layers=["net.3", "net.4"])],
        reporters=[reporter],
        name="ci-gate-example",
    )
    AuditTrail(reporter.run_dir).attach(monitor)  # every evaluation leaves a hash-chained record
    monitor.run(model, step=args.steps, event="ci")
    monitor.close()
    print(f"Run folder: {reporter.run_dir}")


if __name__ == "__main__":
    main()
