"""The ``neuronmap`` command: the top-level parser and ``main``.

Each command family has its module beside this one and registers its subcommands with
``add_parser(subparsers)``: :mod:`~neuronmap.cli.inspect` (``layers``, ``extract``),
:mod:`~neuronmap.cli.runs` (``analyze``, ``compare``, ``report``, ``replay``, ``demo``),
:mod:`~neuronmap.cli.compliance` (``card``, ``gate``, ``audit``), :mod:`~neuronmap.cli.generate`
and the service's ``serve``/``token`` (:mod:`neuronmap.service.cli`). Command modules keep their
heavy imports (torch, scipy, transformers) inside the handlers, so that ``neuronmap --help``
imports neither torch nor scipy (tests/test_import.py checks). Errors in the user's input exit
with status 2 and one line saying what is wrong; they never print a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from neuronmap.errors import NeuronMapError, NeuronMapWarning

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


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
    # Imported here, not at the top, so that `neuronmap --version` imports no command module.
    from neuronmap.cli import compliance, generate, inspect, runs
    from neuronmap.service import cli as service

    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The order of `neuronmap --help`: look inside a model, run, comply, serve, make probes.
    for family in (inspect, runs, compliance, service, generate):
        family.add_parser(sub)
    return parser


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

