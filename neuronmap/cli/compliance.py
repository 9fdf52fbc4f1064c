"""``neuronmap gate``, ``neuronmap audit`` and ``neuronmap card``: the CI and compliance subcommands.

``gate`` exits 0 when every check passed, 1 when a check failed, 2 when a check could not be
evaluated (metric missing, no CI, no baseline) or the config/run could not be read; the CLI's
``main`` turns every :class:`~neuronmap.errors.NeuronMapError` into one line on stderr and exit 2.
``audit verify`` exits 0 on an intact trail whose evidence files match, 1 on tampering (each
bad line and file named) or when nothing can be called verified (no engine run recorded, no file
manifests), 2 when there is no trail to read. ``audit keygen`` writes an Ed25519 key pair;
``audit sign-off`` records a responsible person's sign-off of a card in the trail.
``card`` exits 0 when the card is written, 1 with ``--strict`` while the card is incomplete (a
required field or Annex IV item empty; for Annex IV also an unverified audit trail, no valid
sign-off, a failed last gate), 2 on bad input (missing run, unknown template, invalid card YAML);
a template that reaches for internals is a sandbox error (exit 2 with the message).

The domain modules (:mod:`neuronmap.compliance.gates`, :mod:`~neuronmap.compliance.audit`,
:mod:`~neuronmap.compliance.cards`) know nothing of the command line; this module imports them
inside the handlers so that ``neuronmap --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from neuronmap.errors import NeuronMapError

__all__ = ["add_audit_parser", "add_card_parser", "add_gate_parser", "add_parser", "run_audit_keygen",
           "run_audit_sign_off", "run_audit_verify", "run_card", "run_gate"]

_GATE_EPILOG = """gates.yaml:
  gates:
    - metric: neuronmap/probing/*/accuracy     # key or glob (* within a component, ** across)
      min: 0.70
      statistic: ci_low                        # value | ci_low | ci_high
      when: last                               # last | all | any (over steps)
    - metric: neuronmap/fairness/gender/demographic_parity_difference
      max: 0.10
      statistic: ci_high
    - metric: neuronmap/probing/net.3/accuracy
      baseline: {mode: absolute, margin: 0.02} # non-inferiority against --baseline RUN
      required: false

exit status: 0 all checks passed, 1 a check failed, 2 a check could not run or bad input.
RUN: a run folder, or mlflow:<run_id> (tracking URI from --tracking-uri or MLFLOW_TRACKING_URI).
$GITHUB_STEP_SUMMARY, when set, gets the Markdown table appended."""


def add_parser(sub: Any) -> None:
    """Register ``card``, ``gate`` and ``audit`` on the ``neuronmap`` subparsers."""
    add_card_parser(sub)
    add_gate_parser(sub)
    add_audit_parser(sub)


def add_gate_parser(sub: Any) -> None:
    """Register ``gate``."""
    p = sub.add_parser(
        "gate", help="check a run's metrics against thresholds (exit code, JUnit XML) for CI",
        description="Evaluate the checks of a gates.yaml file on a run's metrics.",
        epilog=_GATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run folder or mlflow:<run_id>")
    p.add_argument("--config", required=True, metavar="gates.yaml", help="the checks")
    p.add_argument("--baseline", default=None, metavar="RUN", help="run to compare with (baseline rules)")
    p.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML here")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="write the JSON report here")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the Markdown table here")
    p.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow tracking URI for mlflow: runs")
    p.add_argument("--no-audit", action="store_true", help="do not append the evaluation to audit.jsonl")
    p.add_argument("--quiet", action="store_true", help="print only the verdict line")
    p.set_defaults(handler=run_gate)


def run_gate(args: argparse.Namespace) -> int:
    """Evaluate, write the requested reports, print a summary; return the gate's exit code."""
    from neuronmap.compliance.gates import evaluate

    try:
        report = evaluate(args.run, args.config, args.baseline, tracking_uri=args.tracking_uri,
                          audit=not args.no_audit)
    except NeuronMapError as err:
        if args.junit:  # CI still gets a report that shows why nothing was checked
            try:
                _write_error_junit(args.junit, err)
            except OSError as write_err:
                raise NeuronMapError(f"{err} (and --junit {args.junit!r} cannot be written: {write_err})") from err
        raise
    try:
        report.write(junit=args.junit, json=args.json_out, markdown=args.markdown)
    except OSError as err:
        # Exit 2, not the gate's verdict: CI must not read a report it never got as "the model failed".
        raise NeuronMapError(f"cannot write the gate report: {err} (the checks gave exit {report.exit_code})") from err
    for result in report.checks:
        if not args.quiet or result.status != "passed":
            print(f"[{result.status.upper():7}] {result.name}: {result.message}")
    counts = ", ".join(f"{len(report.by_status(s))} {s}" for s in ("passed", "failed", "error", "skipped"))
    print(f"neuronmap gate: {counts} -> exit {report.exit_code}")
    return report.exit_code


def _write_error_junit(path: str, err: Exception) -> None:
    import xml.etree.ElementTree as ET

    from neuronmap.compliance._gate_output import xml_safe_tree

    suites = ET.Element("testsuites", name="neuronmap", tests="1", failures="0", errors="1")
    suite = ET.SubElement(suites, "testsuite", name="neuronmap-gates", tests="1", failures="0", errors="1",
                          skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname="neuronmap.gates", name="gate configuration and run", time="0")
    ET.SubElement(case, "error", message=str(err), type=type(err).__name__).text = str(err)
    xml_safe_tree(suites)
    ET.indent(suites)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n", encoding="utf-8")


def add_audit_parser(sub: Any) -> None:
    """Register ``audit`` with its ``verify`` action."""
    p = sub.add_parser("audit", help="verify a run's tamper-evident audit trail and evidence files",
                       description="Work with the hash-chained audit trail (audit.jsonl) of a run folder.")
    actions = p.add_subparsers(dest="audit_command", metavar="ACTION")
    v = actions.add_parser(
        "verify", help="check every hash, link, signature and evidence file; name each bad one (exit 1)",
        description="Detect edited, deleted, inserted or reordered lines of audit.jsonl, and evidence files "
                    "(metrics.jsonl, tables, figures, reports, config.json, run.json) that no longer match the "
                    "digests the trail recorded. With NEURONMAP_AUDIT_KEY set, HMAC signatures are checked; "
                    "Ed25519 signatures are always checked, and with --public-key required.",
        epilog="exit status: 0 verified, 1 tampered or not verifiable (no engine run or no file manifests "
               "recorded), 2 no trail.\nCI: keep the printed head hash outside the run folder (job summary, "
               "release notes, a signed tag) and pass it back with --head.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("run", metavar="RUN", help="run folder or path to audit.jsonl")
    v.add_argument("--head", default=None, metavar="HASH",
                   help="the last entry's hash recorded elsewhere (detects removed trailing lines)")
    v.add_argument("--public-key", dest="public_keys", action="append", default=None, metavar="PEM",
                   help="trusted Ed25519 public key (repeatable): every entry must be signed by one")
    v.add_argument("--chain-only", action="store_true", help="skip the evidence files (check only audit.jsonl)")
    v.add_argument("--json", dest="json_out", action="store_true", help="print the result as JSON")
    v.set_defaults(handler=run_audit_verify)
    k = actions.add_parser("keygen", help="write an Ed25519 key pair for signing audit entries",
                           description="Write NAME.pem (private, mode 0600) and NAME.pub.pem into --out. Sign "
                                       "with NEURONMAP_AUDIT_SIGNING_KEY=KEYDIR/NAME.pem; publish NAME.pub.pem.")
    k.add_argument("--out", required=True, metavar="KEYDIR", help="folder for the key files")
    k.add_argument("--name", default="audit", help="file name stem (default: audit)")
    k.set_defaults(handler=run_audit_keygen)
    s = actions.add_parser(
        "sign-off", help="record a responsible person's sign-off of the run's model card",
        description="Append a sign_off entry binding the card's digest (the run's evidence plus the card data) "
                    "to a named person. A strict EU AI Act Annex IV card needs one that post-dates the last "
                    "evaluation and matches the card as rendered.",
    )
    s.add_argument("run", metavar="RUN", help="run folder")
    s.add_argument("--by", required=True, metavar="NAME", help="who signs off")
    s.add_argument("--role", default=None, help="their role (e.g. 'head of QA')")
    s.add_argument("--data", default=None, metavar="card.yaml", help="the card data the card is rendered with")
    s.add_argument("--statement", default=None, help="what is signed off (default: the test results of the card)")
    s.add_argument("--signing-key", default=None, metavar="PEM",
                   help="Ed25519 private key to sign the entry (default NEURONMAP_AUDIT_SIGNING_KEY)")
    s.set_defaults(handler=run_audit_sign_off)
    p.set_defaults(handler=lambda _args: (p.print_help(), 2)[1])


def run_audit_verify(args: argparse.Namespace) -> int:
    """Print the verification; 0 intact, 1 tampered."""
    from neuronmap.compliance.audit import verify

    try:
        result = verify(args.run, head=args.head, public_keys=args.public_keys, evidence=not args.chain_only)
    except FileNotFoundError as err:
        raise NeuronMapError(str(err)) from err
    good = result.ok if args.chain_only else result.verified
    if args.json_out:
        print(json.dumps({"path": str(result.path), "ok": result.ok, "verified": result.verified,
                          "entries": result.entries, "runs": result.runs, "files_checked": result.files_checked,
                          "head": result.head, "signed": result.signed, "signers": dict(result.signers),
                          "notes": list(result.notes),
                          "problems": [{"line": p.line, "kind": p.kind, "message": p.message}
                                       for p in result.problems]}, indent=2))
    else:
        print(result)
        if result.ok and not good:
            why = "no engine run is recorded" if result.runs == 0 else "the trail records no evidence files"
            print(f"not verified: {why}; nothing in this folder can be called verified.", file=sys.stderr)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0 if good else 1


def run_audit_keygen(args: argparse.Namespace) -> int:
    """Write a key pair; print where."""
    from neuronmap.compliance._audit_sign import generate_key_pair

    private, public = generate_key_pair(args.out, args.name)
    print(f"Wrote {private} (private: keep it secret, sign with NEURONMAP_AUDIT_SIGNING_KEY={private})")
    print(f"Wrote {public} (public: publish it; verify with --public-key {public})")
    return 0


def run_audit_sign_off(args: argparse.Namespace) -> int:
    """Append a sign_off entry with the card's digest; print it."""
    from neuronmap.compliance.audit import AuditTrail
    from neuronmap.compliance.cards import ModelCard, card_digest

    card = ModelCard.from_run(args.run, data=args.data)
    digest = card_digest(card)
    trail = AuditTrail(args.run, signing_key=args.signing_key)
    entry = trail.record_sign_off(by=args.by, role=args.role, card_digest=digest,
                                  statement=args.statement or "test results and documentation of this card reviewed")
    print(f"Signed off by {args.by} at {entry['timestamp']}: card digest {digest}, audit entry seq {entry['seq']}")
    return 0


_CARD_EPILOG = """examples:
  neuronmap card runs/r1 --data card.yaml --out MODEL_CARD.md
  neuronmap card runs/r1 --format html --out card.html
  neuronmap card runs/r1 --template eu_ai_act_annex_iv --data card.yaml --strict --out annex_iv.md
  neuronmap card runs/r1 --template my_card.md.j2 --out card.md

built-in templates: default (md, html), eu_ai_act_annex_iv (md)."""


def add_card_parser(sub: Any) -> None:
    """Register ``card`` on the ``neuronmap`` subparsers."""
    p = sub.add_parser(
        "card", help="render a model card (Markdown, HTML, EU AI Act Annex IV) from a run folder",
        description="Render a model card from a NeuronMap run folder plus a YAML file of what only people "
                    "know. Templates run in a Jinja2 sandbox; values are escaped.",
        epilog=_CARD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.set_defaults(handler=run_card)


def run_card(args: argparse.Namespace) -> int:
    """Render the card; the exit status as documented in the module (0 written, 1 incomplete)."""
    from jinja2.exceptions import SecurityError, TemplateError

    from neuronmap.compliance.cards.data import ModelCard
    from neuronmap.compliance.cards.render import CardIncompleteError, render_card

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
        from neuronmap.compliance.audit import AuditTrail

        AuditTrail(args.run).record_card(text, template=args.template, fmt=args.fmt, data=card.user_data,
                                         probe_fingerprint=card.evaluation_data.get("fingerprint"), output=args.out)
    return 0
