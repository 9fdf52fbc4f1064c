"""The ``neuronmap`` command line (``neuronmap --help`` lists the commands).

One module per command family, each with ``add_parser(subparsers)``: ``inspect`` (layers,
extract), ``runs`` (analyze, compare, report, replay, demo), ``compliance`` (card, gate, audit),
``generate``; the parser and :func:`main` are in ``_main``; ``_models`` is the one model loader
the commands share; ``config`` is the analysis config format (also read by the service).

Example:
    >>> from neuronmap.cli import build_parser
    >>> build_parser().parse_args(["gate", "runs/r1", "--config", "gates.yaml"]).command
    'gate'
"""

from __future__ import annotations

from neuronmap.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
