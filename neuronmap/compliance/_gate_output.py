"""Renderings of a :class:`~neuronmap.gates.GateReport`: JSON-able dict, JUnit XML, Markdown.

JUnit XML follows the schema that Jenkins, GitLab (``artifacts:reports:junit``) and GitHub
test-report actions read: ``<testsuites>/<testsuite>/<testcase>``; a failed check carries
``<failure message=...>``, a check that could not run ``<error>``, an optional one with nothing to
check ``<skipped>``; every testcase has the value and threshold in its message or
``<system-out>``. Characters that XML 1.0 cannot carry (control characters in a check's name
or message) are written as ``\\xNN`` escapes, so the file always parses.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronmap.compliance.gates import CheckResult, GateReport

__all__ = ["report_to_dict", "to_junit_xml", "to_markdown", "xml_safe", "xml_safe_tree"]

#: What XML 1.0 forbids even as character references (its ``Char`` production).
_XML_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_ICONS = {"passed": "✅ passed", "failed": "❌ failed", "error": "⚠️ error", "skipped": "⏭️ skipped"}


def xml_safe(text: str) -> str:
    """``text`` with characters XML 1.0 cannot hold replaced by visible ``\\xNN`` escapes."""
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


def xml_safe_tree(root: ET.Element) -> ET.Element:
    """Apply :func:`xml_safe` to every attribute value and text of ``root``'s tree (in place)."""
    for element in root.iter():
        element.attrib = {k: xml_safe(v) for k, v in element.attrib.items()}
        if element.text:
            element.text = xml_safe(element.text)
        if element.tail:
            element.tail = xml_safe(element.tail)
    return root


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _check_dict(result: CheckResult) -> dict[str, Any]:
    check = asdict(result.check)
    return {
        "name": result.name,
        "status": result.status,
        "ran": result.ran,
        "required": result.check.required,
        "metric": result.check.metric,
        "threshold": result.threshold,
        "message": result.message,
        "check": check,
        "results": [
            {"key": r.key, "compared_key": r.compared_key, "status": r.status, "value": _finite(r.value),
             "step": r.step, "baseline_value": _finite(r.baseline_value), "delta": _finite(r.delta),
             "message": r.message}
            for r in result.results
        ],
    }


def report_to_dict(report: GateReport) -> dict[str, Any]:
    """JSON-able form: summary counts, exit code and every check with its per-key results."""
    counts = {s: len(report.by_status(s)) for s in ("passed", "failed", "error", "skipped")}
    return {
        "run": report.run,
        "baseline": report.baseline,
        "config": report.config_source,
        "timestamp": report.timestamp,
        "exit_code": report.exit_code,
        "summary": {"total": len(report.checks), **counts},
        "checks": [_check_dict(c) for c in report.checks],
    }


def to_junit_xml(report: GateReport) -> str:
    """One ``<testsuite name="neuronmap-gates">`` with one ``<testcase>`` per check."""
    counts = {s: len(report.by_status(s)) for s in ("failed", "error", "skipped")}
    suites = ET.Element("testsuites", name="neuronmap", tests=str(len(report.checks)),
                        failures=str(counts["failed"]), errors=str(counts["error"]))
    suite = ET.SubElement(
        suites, "testsuite", name="neuronmap-gates", tests=str(len(report.checks)), failures=str(counts["failed"]),
        errors=str(counts["error"]), skipped=str(counts["skipped"]), timestamp=report.timestamp, time="0",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("run", report.run), ("baseline", report.baseline or ""), ("config", report.config_source)):
        ET.SubElement(props, "property", name=name, value=value)
    for result in report.checks:
        case = ET.SubElement(suite, "testcase", classname="neuronmap.gates", name=result.name, time="0")
        if result.check.line is not None:
            case.set("file", report.config_source)
            case.set("line", str(result.check.line))
        message = f"{result.message} [threshold: {result.threshold}]"
        if result.status == "failed":
            ET.SubElement(case, "failure", message=message, type="GateFailed").text = _details(result)
        elif result.status == "error":
            ET.SubElement(case, "error", message=message, type="GateNotRun").text = _details(result)
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=message)
        ET.SubElement(case, "system-out").text = _details(result)
    xml_safe_tree(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _details(result: CheckResult) -> str:
    lines = [f"check: {result.name}", f"metric: {result.check.metric}", f"threshold: {result.threshold}",
             f"status: {result.status}"]
    lines += [f"  [{r.status}] {r.message}" for r in result.results] or [f"  {result.message}"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(report: GateReport) -> str:
    """A Markdown summary: one line of counts, then a table with one row per check."""
    counts = {s: len(report.by_status(s)) for s in ("passed", "failed", "error", "skipped")}
    verdict = {0: "all checks passed", 1: "a check failed", 2: "a check could not be evaluated"}[report.exit_code]
    lines = [
        f"### NeuronMap gates: {verdict}",
        "",
        f"Run `{_cell(report.run)}`" + (f", baseline `{_cell(report.baseline)}`" if report.baseline else "")
        + f", {report.timestamp}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        "",
        "| status | check | value | threshold | details |",
        "|---|---|---|---|---|",
    ]
    for result in report.checks:
        values = ", ".join(f"{r.value:.4g}" for r in result.results if r.value is not None) or "–"
        lines.append(f"| {_ICONS[result.status]} | {_cell(result.name)} | {values} | {_cell(result.threshold)} "
                     f"| {_cell(result.message)} |")
    return "\n".join(lines) + "\n"
