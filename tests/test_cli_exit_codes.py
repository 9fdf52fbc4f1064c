"""Exit 2 with one clear line for what CI must not read as a verdict: unwritable outputs, an
unreachable tracker, empty or binary audit trails, bad analyze configs, odd gate names."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from neuronmap.cli import main
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_text_probe

ACC = "neuronmap/probing/net.1/accuracy"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    rep = LocalReporter(tmp_path, run_name="run", render_html=False)
    for step in range(2):
        rep.log_metrics({ACC: 0.9}, step=step)
    rep.close()
    return rep.run_dir


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text(f"gates:\n  - metric: {ACC}\n    min: 0.5\n")
    return path


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A path under a regular file: unwritable for every user, root included."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "sub"


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"neuronmap {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("option", ["--junit", "--json", "--markdown"])
def test_gate_output_that_cannot_be_written_is_exit_2(run, gates, blocked, option, capsys) -> None:
    # the checks pass (exit 0) and would fail (exit 1): either way an unwritable report is exit 2
    assert main(["gate", str(run), "--config", str(gates), "--no-audit", option, str(blocked / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err, "gate")
    assert "cannot write the gate report" in line and "a-file/sub" in line and "gave exit 0" in line


def test_gate_error_junit_that_cannot_be_written_is_exit_2(tmp_path, gates, blocked, capsys) -> None:
    assert main(["gate", str(tmp_path / "nope"), "--config", str(gates), "--junit", str(blocked / "x.xml")]) == 2
    line = _one_error_line(capsys.readouterr().err, "gate")
    assert "does not exist" in line and "--junit" in line and "cannot be written" in line


def test_card_and_report_outputs_that_cannot_be_written_are_exit_2(run, blocked, capsys) -> None:
    assert main(["card", str(run), "--no-audit", "--out", str(blocked / "card.md")]) == 2
    assert "cannot write --out" in _one_error_line(capsys.readouterr().err, "card")
    assert main(["report", str(run), "--out", str(blocked / "report.html")]) == 2
    assert "a-file/sub/report.html" in _one_error_line(capsys.readouterr().err, "report")


def test_junit_xml_with_control_characters_in_a_gate_name_parses(run, tmp_path, capsys) -> None:
    config = tmp_path / "gates.yaml"
    config.write_text(yaml.safe_dump({"gates": [{"name": "acc\x07bell \x1b[31mred", "metric": ACC, "min": 0.95}]}))
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(run), "--config", str(config), "--no-audit", "--junit", str(junit)]) == 1
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case is not None and case.get("name") == "acc\\x07bell \\x1b[31mred"
    assert case.find("failure") is not None
    json.loads(json.dumps(case.attrib))  # plain strings throughout


# ---------------------------------------------------------------- mlflow:ID against a dead tracker
def _gate_mlflow(uri: str, gates: Path, capsys) -> tuple[int, float, str]:
    start = time.monotonic()
    code = main(["gate", "mlflow:0123456789abcdef", "--config", str(gates), "--tracking-uri", uri])
    return code, time.monotonic() - start, capsys.readouterr().err


@pytest.mark.integration
def test_gate_on_mlflow_with_nothing_listening_exits_2_quickly(gates, capsys) -> None:
    pytest.importorskip("mlflow")
    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, took, err = _gate_mlflow(f"http://127.0.0.1:{port}", gates, capsys)
    assert code == 2 and took < 15, (took, err)  # MLflow's own defaults took 249 s
    assert "Cannot read MLflow run '0123456789abcdef'" in _one_error_line(err, "gate")


@pytest.mark.integration
def test_gate_on_a_tracker_that_never_answers_exits_2_within_15_s(gates, capsys) -> None:
    pytest.importorskip("mlflow")
    with socket.socket() as hole:  # accepts connections (kernel backlog) and never answers: a hung server
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        code, took, err = _gate_mlflow(f"http://127.0.0.1:{hole.getsockname()[1]}", gates, capsys)
    assert code == 2 and took < 15, (took, err)
    assert "Read timed out" in _one_error_line(err, "gate")


# ---------------------------------------------------------------- audit verify
def test_audit_verify_fails_on_an_empty_trail(tmp_path, capsys) -> None:
    (tmp_path / "audit.jsonl").write_text("")
    assert main(["audit", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "holds no entries" in out


def test_audit_verify_reads_a_binary_file_as_malformed_lines(tmp_path, capsys) -> None:
    (tmp_path / "audit.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary\n")
    assert main(["audit", "verify", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "line 1: malformed" in out and "Traceback" not in err


# ---------------------------------------------------------------- analyze: no empty run folder
@pytest.mark.parametrize(
    ("probe", "analyses", "message"),
    [
        ({"npz": "probe.npz"}, ["no_such_analysis"], r"Unknown analysis 'no_such_analysis'; known analyses"),
        ({"csv": "missing.csv"}, ["activation_stats"], r"The probe csv file 'missing.csv' does not exist"),
        ({"texts": "missing.txt"}, ["activation_stats"], r"The probe texts file 'missing.txt' does not exist"),
    ],
)
def test_analyze_config_mistakes_leave_no_run_folder(tmp_path, probe, analyses, message, capsys) -> None:
    tiny_text_probe(n=8).save(tmp_path / "probe.npz")
    config = tmp_path / "analysis.yaml"
    config.write_text(yaml.safe_dump({"model": "model", "probe": probe, "layers": ["encoder.layer.*"],
                                      "analyses": analyses, "out": "runs", "run_name": "r"}))
    assert main(["analyze", str(config)]) == 2
    assert pytest.importorskip("re").search(message, _one_error_line(capsys.readouterr().err, "analyze"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "bad\x01name"])
def test_analyze_run_name_cannot_escape_the_runs_folder(tmp_path, name, capsys) -> None:
    tiny_text_probe(n=8).save(tmp_path / "probe.npz")
    config = tmp_path / "analysis.yaml"
    config.write_text(yaml.safe_dump({"model": "model", "probe": "probe.npz", "layers": ["x"],
                                      "analyses": ["activation_stats"], "out": "runs", "run_name": name}))
    assert main(["analyze", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err, "analyze")
    assert "run_name in" in line and "single folder name" in line and repr(name) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.yaml", "probe.npz"]
