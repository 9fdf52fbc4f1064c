"""The ``neuronmap`` command.

Subcommands: ``layers`` (list a model's modules so you can write selectors), ``extract``
(activations of a model on a text file), ``report`` (re-render a run folder's report.html),
``demo`` (train something small with NeuronMap on a schedule). Errors in the user's input exit
with status 2 and one line saying what is wrong; they never print a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neuronmap.errors import NeuronMapError, NeuronMapWarning

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _load_hf(
    model_dir: str, *, attn_implementation: str | None = None, task: str = "base"
) -> tuple[Any, Any]:
    """Load a ``save_pretrained()`` folder offline: ``(model, tokenizer or None)``.

    ``task="sequence-classification"`` loads ``AutoModelForSequenceClassification``.
    """
    from neuronmap._imports import TRANSFORMERS_AVAILABLE

    TRANSFORMERS_AVAILABLE.require("Loading a model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir() or not (path / "config.json").exists():
        raise NeuronMapError(
            f"Model directory {model_dir!r} has no config.json; expected a folder saved with "
            "save_pretrained() (config.json plus weights)."
        )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    auto = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModel
    model = auto.from_pretrained(path, **kwargs).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from neuronmap.capture.hooks import _describe
    from neuronmap.capture.layers import resolve_layers

    model, tokenizer = _load_hf(args.model)
    names = resolve_layers(model, args.select) if args.select else [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    shapes: dict[str, str] = {}

    def make_hook(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            shapes.setdefault(name, _describe(output))

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        if tokenizer is not None:
            batch = dict(tokenizer(["NeuronMap lists the layers of this model."], return_tensors="pt"))
        else:
            batch = {"input_ids": torch.ones(1, 8, dtype=torch.long)}
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    width = max((len(n) for n in names), default=10)
    print(f"{'module':<{width}}  {'type':<28} output")
    for name in names:
        print(f"{name:<{width}}  {type(modules[name]).__name__:<28} {shapes.get(name, '(not called)')}")
    print(f"\n{len(names)} modules. Select with dotted names or globs, e.g. --layers 'encoder.layer.*'.")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from neuronmap.capture import capture_activations
    from neuronmap.probe import ProbeSet

    texts_path = Path(args.texts)
    if not texts_path.exists():
        raise NeuronMapError(f"Texts file {args.texts!r} does not exist.")
    texts = [line.strip() for line in texts_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    model, tokenizer = _load_hf(args.model)
    if tokenizer is None:
        raise NeuronMapError(f"No tokenizer found in {args.model!r}; extract needs one to encode the texts.")
    probe = ProbeSet.from_texts(texts, tokenizer, max_length=args.max_length, name=texts_path.stem)
    acts = capture_activations(
        model, probe, layers=args.layers, reduce=args.reduce, batch_size=args.batch_size, progress=not args.quiet
    )
    out = acts.save(args.out)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in acts.items())
    print(f"Wrote {out}: {shapes}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from neuronmap._run_source import MLFLOW_PREFIX, load_run
    from neuronmap.reporters._html import render_run_html

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from neuronmap.demo import run_digits_demo

    epochs = 2 if args.quick else args.epochs
    path = run_digits_demo(args.out, epochs=epochs)
    print(f"\nNeuronMap report: {path.resolve()}")
    return 0


#: Modules that register subcommands beside the features they drive (cards, gates, audit ...).
#: Each has ``add_parser(subparsers)`` and keeps its heavy imports (torch, scipy, transformers)
#: inside the command handlers, so that ``neuronmap --help`` imports neither torch nor scipy
#: (tests/test_import.py checks). To add a command: an ``add_parser`` in its module, one line here.
COMMAND_MODULES: tuple[str, ...] = (
    "neuronmap._compliance_cli",
    "neuronmap.analyze",
    "neuronmap.reporters.replay",
    "neuronmap.service.cli",
    "neuronmap.generate",
)


def _top_parser() -> argparse.ArgumentParser:
    from neuronmap import __version__

    parser = argparse.ArgumentParser(
        prog="neuronmap",
        description="NeuronMap: interpretability analyses on a schedule, logged to your tracker.",
    )
    parser.add_argument("--version", action="version", version=f"neuronmap {__version__}")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neuronmap`` command."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("layers", help="list a model's modules, types and output shapes")
    p.add_argument("model", metavar="MODEL_DIR", help="a Hugging Face model folder (config.json + weights)")
    p.add_argument("--select", nargs="*", help="only modules matching these selectors")
    p.set_defaults(handler=_cmd_layers)

    p = sub.add_parser("extract", help="capture activations of a model on a text file")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--texts", required=True, metavar="FILE", help="one text per line")
    p.add_argument("--layers", required=True, nargs="+", help="layer selectors, e.g. 'encoder.layer.*'")
    p.add_argument("--reduce", default="mean", choices=["mean", "first", "last", "max", "none"])
    p.add_argument("--out", default="activations.npz", metavar="FILE")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_extract)

    p = sub.add_parser("report", help="render report.html of a run folder, a W&B run folder or mlflow:<run_id>")
    p.add_argument("run", metavar="RUN", help="run folder, W&B run folder (wandb/offline-run-*) or mlflow:<run_id>")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="default: RUN/report.html (report-<run_id>.html for mlflow: runs)")
    p.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow tracking URI for mlflow: runs")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("demo", help="train a small model with NeuronMap and write a report")
    p.add_argument("--out", default="neuronmap-runs", metavar="DIR")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="a shorter run (for tests)")
    p.set_defaults(handler=_cmd_demo)

    _register_extensions(sub)
    return parser


def _register_extensions(sub: Any) -> None:
    """Subcommands that live beside the features they drive (:data:`COMMAND_MODULES`)."""
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real bug inside the module must not be hidden
                raise
            continue
        add_parser = getattr(module, "add_parser", None)
        if add_parser is not None:
            add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neuronmap`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:
        # Answered before the subcommands' modules are imported: `--version` costs ~no imports.
        _top_parser().parse_args(argv[:1])
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command, warnings.showwarning)
            return handler(args)
    except NeuronMapError as err:
        print(f"neuronmap {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output path that cannot be written (or an input that cannot be read)
        print(f"neuronmap {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line_warning(command: str, default: Callable[..., None]) -> Callable[..., None]:
    """Show NeuronMap's own warnings (a skipped torn record ...) as one line, like its errors,
    each text once (a command may read the same file twice, e.g. the history and the report)."""
    shown: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, NeuronMapWarning):
            if str(message) not in shown:
                shown.add(str(message))
                print(f"neuronmap {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)

    return show


if __name__ == "__main__":
    sys.exit(main())
