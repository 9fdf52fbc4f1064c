"""``neuronmap card``: render a model card from a run folder.

Exit status: 0 written, 1 ``--strict`` and the card is incomplete (a required field or Annex IV
item empty; for Annex IV also an unverified audit trail, no valid sign-off, a failed last gate), 2 bad input (missing run,
unknown template, invalid card YAML); a template that reaches for internals is a sandbox error
(exit 2 with the message).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError

from neuronmap.errors import NeuronMapError

__all__ = ["add_parser", "run"]

_EPILOG = """examples:
  neuronmap card runs/r1 --data card.yaml --out MODEL_CARD.md
  neuronmap card runs/r1 --format html --out card.html
  neuronmap card runs/r1 --template eu_ai_act_annex_iv --data card.yaml --strict --out annex_iv.md
  neuronmap card runs/r1 --template my_card.md.j2 --out card.md

built-in templates: default (md, html), eu_ai_act_annex_iv (md)."""


def add_parser(sub: Any) -> None:
    """Register ``card`` on the ``neuronmap`` subparsers."""
    p = sub.add_parser(
        "card", help="render a model card (Markdown, HTML, EU AI Act Annex IV) from a run folder",
        description="Render a model card from a NeuronMap run folder plus a YAML file of what only people "
                    "know. Templates run in a Jinja2 sandbox; values are escaped.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="a NeuronMap run folder (LocalReporter)")
    p.add_argument("--format", dest="fmt", choices=["md", "html"], default="md", help="output format (default md)")
    p.add_argument("--template", default="default", metavar="NAME|PATH",
                   help="built-in template name or a path to a .j2 file (default: default)")
    p.add_argument("--data", default=None, metavar="card.yaml", help="card data supplied by people (YAML)")
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default: standard output)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 while the card is incomplete (Annex IV: every item, a verified trail, a sign-off "
                        "after the last evaluation, a passing last gate)")
    p.add_argument("--include-identity", action="store_true",
                   help="keep user and host names (public cards leave them out)")
    p.add_argument("--no-audit", action="store_true", help="do not append the rendering to audit.jsonl")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Render the card; the exit status as documented in the module."""
    from neuronmap.cards.data import ModelCard
    from neuronmap.cards.render import CardIncompleteError, render_card

    card = ModelCard.from_run(args.run, data=args.data)
    try:
        text = render_card(card, template=args.template, fmt=args.fmt, strict=args.strict, audit=False,
                           identity=args.include_identity)
    except CardIncompleteError as err:
        print(f"neuronmap card: incomplete: {err}", file=sys.stderr)
        return 1
    except SecurityError as err:
        raise NeuronMapError(f"template {args.template!r} was stopped by the sandbox: {err}") from err
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError) as err:
        # A user's template can fail in many ways; report it as bad input, not a traceback.
        raise NeuronMapError(f"template {args.template!r} failed: {type(err).__name__}: {err}") from err
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as err:
            raise NeuronMapError(f"cannot write --out {args.out!r}: {err}") from err
        print(f"Wrote {out} ({args.fmt}, template {args.template})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not args.no_audit:
        from neuronmap.audit import AuditTrail

        AuditTrail(args.run).record_card(text, template=args.template, fmt=args.fmt, data=card.user_data,
                                         probe_fingerprint=card.evaluation_data.get("fingerprint"), output=args.out)
    return 0
