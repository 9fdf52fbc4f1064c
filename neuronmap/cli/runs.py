"""``neuronmap analyze``, ``compare``, ``report``, ``replay`` and ``demo``: runs without a training
loop, and what to do with a run folder afterwards.

``analyze`` runs the analyses of a YAML config once (:mod:`neuronmap.cli.config`); ``compare``
computes linear CKA between every layer of two models (or two checkpoints of one model) on the
same texts and writes the matrix as CSV and a heatmap; ``report`` re-renders a run's
report.html; ``replay`` delivers what a run left in its spool (:mod:`neuronmap.reporters.replay`);
``demo`` trains a small model with NeuronMap on a schedule.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neuronmap.cli._models import load_hf_model
from neuronmap.cli.config import CONFIG_FORMAT, load_config, run_config
from neuronmap.errors import NeuronMapError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``analyze``, ``compare``, ``report``, ``replay`` and ``demo``."""
    p = sub.add_parser("analyze", help="run configured analyses once, without a training loop",
                       description="Run the analyses a YAML config names once, on a saved model (or saved "
                                   "activations) and a probe set, and write a run folder.",
                       epilog=CONFIG_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="model or activations, probe set, layers, analyses "
                   "(format below)")
    p.set_defaults(handler=_cmd_analyze)

    p = sub.add_parser("compare", help="layer-by-layer CKA between two models on the same texts")
    p.add_argument("model_a", metavar="MODEL_A")
    p.add_argument("model_b", metavar="MODEL_B")
    p.add_argument("--texts", required=True, metavar="FILE", help="one text per line")
    p.add_argument("--layers", nargs="+", default=["encoder.layer.*"])
    p.add_argument("--reduce", default="mean", choices=["mean", "first", "last", "max"])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--debiased", action="store_true", help="debiased CKA (Nguyen et al. 2021)")
    p.add_argument("--out", default="neuronmap-compare", metavar="DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_compare)

    p = sub.add_parser("report", help="render report.html of a run folder, a W&B run folder or mlflow:<run_id>")
    p.add_argument("run", metavar="RUN", help="run folder, W&B run folder (wandb/offline-run-*) or mlflow:<run_id>")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="default: RUN/report.html (report-<run_id>.html for mlflow: runs)")
    p.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow tracking URI for mlflow: runs")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser(
        "replay",
        help="deliver a run's spooled tracker calls after the run ended, and close its tracker runs",
        description=_replay_doc(),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (holds spool/)")
    p.set_defaults(handler=_cmd_replay)

    p = sub.add_parser("demo", help="train a small model with NeuronMap and write a report")
    p.add_argument("--out", default="neuronmap-runs", metavar="DIR")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="a shorter run (for tests)")
    p.set_defaults(handler=_cmd_demo)


def _replay_doc() -> str | None:
    """The second paragraph of :mod:`neuronmap.reporters.replay`'s docstring (what replay does)."""
    from neuronmap.reporters import replay

    return replay.__doc__.split("\n\n")[1] if replay.__doc__ else None


def _cmd_analyze(args: argparse.Namespace) -> int:
    run_dir = run_config(load_config(args.config))
    print(f"Run folder: {run_dir}\nReport: {run_dir / 'report.html'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from neuronmap.analyses.similarity import cka_heatmap, compare_models
    from neuronmap.capture import capture_activations
    from neuronmap.probe import ProbeSet

    model_a, tokenizer = load_hf_model(args.model_a)
    model_b, _ = load_hf_model(args.model_b)
    if tokenizer is None:
        raise NeuronMapError(f"No tokenizer found in {args.model_a!r}; compare needs one to encode the texts.")
    texts_path = Path(args.texts)
    if not texts_path.exists():
        raise NeuronMapError(f"Texts file {args.texts!r} does not exist.")
    texts = [t for t in texts_path.read_text(encoding="utf-8").splitlines() if t.strip()]
    probe = ProbeSet.from_texts(texts, tokenizer, max_length=args.max_length)
    acts = [
        capture_activations(m, probe, layers=args.layers, reduce=args.reduce, progress=not args.quiet)
        for m in (model_a, model_b)
    ]
    matrix = compare_models(acts[0], acts[1], debiased=args.debiased)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(out / "cka.csv")
    cka_heatmap(matrix).savefig(out / "cka.png", dpi=100, bbox_inches="tight")
    print(matrix.round(3).to_string())
    print(f"\nWrote {out / 'cka.csv'} and {out / 'cka.png'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from neuronmap.reporters._html import render_run_html
    from neuronmap.runs.source import MLFLOW_PREFIX, load_run

    # the same source the gate reads: a run folder, a W&B run folder, or mlflow:<run_id>
    loaded = load_run(args.run, tracking_uri=args.tracking_uri, materialize=True)
    run_dir = loaded.run_dir
    if run_dir is None:
        raise NeuronMapError(f"{args.run!r} holds metrics but no NeuronMap record (neuronmap/metrics.jsonl); "
                             "it was not logged by NeuronMap's MLflowReporter.")
    out = args.out
    if out is None and args.run.startswith(MLFLOW_PREFIX):
        out = f"report-{args.run[len(MLFLOW_PREFIX):]}.html"
    path = render_run_html(run_dir, out)
    print(path)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from neuronmap.reporters.replay import replay_run

    outcomes = replay_run(args.run_dir)
    if not outcomes:
        print(f"{args.run_dir}: no spool, nothing to deliver.")
        return 0
    for outcome in outcomes:
        print(f"{outcome.folder.name}: {outcome.status}: {outcome.detail}")
    return 1 if any(o.status in ("unreachable", "no-spec") for o in outcomes) else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from neuronmap.demo import run_digits_demo

    epochs = 2 if args.quick else args.epochs
    path = run_digits_demo(args.out, epochs=epochs)
    print(f"\nNeuronMap report: {path.resolve()}")
    return 0
