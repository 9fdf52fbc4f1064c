"""``neuronmap layers`` and ``neuronmap extract``: look inside a saved model.

``layers`` lists a model's modules, types and output shapes so that selectors can be written;
``extract`` saves the activations of chosen layers on a text file (``.npz``, no pickle).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neuronmap.cli._models import load_hf_model
from neuronmap.errors import NeuronMapError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``layers`` and ``extract`` on the ``neuronmap`` subparsers."""
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


def _cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from neuronmap.capture.forward import describe_output
    from neuronmap.capture.layers import resolve_layers

    model, tokenizer = load_hf_model(args.model)
    names = resolve_layers(model, args.select) if args.select else [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    shapes: dict[str, str] = {}

    def make_hook(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            shapes.setdefault(name, describe_output(output))

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
    model, tokenizer = load_hf_model(args.model)
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
