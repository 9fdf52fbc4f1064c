"""``neuronmap generate``: write a probe set from a preset or a template file.

The generation itself is :func:`neuronmap.generate.generate`; the presets are
:mod:`neuronmap.presets`. Output formats: Parquet, CSV, JSON lines or plain text.
"""

from __future__ import annotations

import argparse
from typing import Any

from neuronmap.errors import NeuronMapError
from neuronmap.generate import PRESET_NAMES

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``generate`` on the ``neuronmap`` subparsers."""
    p = sub.add_parser("generate", help="write a probe set from a preset or a template file")
    p.add_argument("--preset", choices=PRESET_NAMES, help="a built-in preset")
    p.add_argument("--template", metavar="FILE", help="a YAML/JSON template file (see neuronmap.generate)")
    p.add_argument("--n", type=int, default=None, help="rows (default: the preset's or template's own size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="probes.parquet", metavar="FILE", help=".parquet, .csv, .jsonl or .txt")
    p.set_defaults(handler=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    from neuronmap import presets
    from neuronmap.generate import generate, write_frame

    if (args.preset is None) == (args.template is None):
        raise NeuronMapError("generate needs exactly one of --preset NAME or --template FILE.")
    if args.preset is not None:
        frame = presets.get_preset(args.preset, n=args.n, seed=args.seed).frame
    else:
        frame = generate(args.template, n=args.n, seed=args.seed)
    path = write_frame(frame, args.out)
    label = " with labels" if "label" in frame else ""
    print(f"Wrote {len(frame)} probes{label} to {path} (columns: {', '.join(map(str, frame.columns))})")
    return 0
