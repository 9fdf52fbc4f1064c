"""The compliance subcommands of ``neuronmap``: ``gate`` (exit codes, JUnit XML on passing,
failing and broken configs), ``card`` (formats, strict mode, sandbox) and ``audit verify``."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from compliance_runs import copy_run, make_run

from neuronmap.cli import main

DPD = "neuronmap/fairness/gender/demographic_parity_difference"


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("cli"), "cli-run")


@pytest.fixture
def run(shared_run: Path, tmp_path: Path) -> Path:
    return copy_run(shared_run, tmp_path / "run")


def _gates(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    return path


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return {case.get("name", ""): case for case in root.iter("testcase")}


PASSING = f"gates:\n  - name: dpd\n    metric: {DPD}\n    max: 0.1\n"
FAILING = f"gates:\n  - name: dpd bound\n    metric: {DPD}\n    max: 0.1\n    statistic: ci_high\n"


def test_gate_passing(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "out" / "junit.xml"
    code = main(["gate", str(run), "--config", str(_gates(tmp_path, PASSING)), "--junit", str(junit),
                 "--json", str(tmp_path / "g.json"), "--markdown", str(tmp_path / "g.md")])
    assert code == 0
    cases = _junit_cases(junit)
    assert list(cases) == ["dpd"]
    assert cases["dpd"].find("failure") is None and cases["dpd"].find("error") is None
    assert "0.08" in (cases["dpd"].findtext("system-out") or "")
    assert json.loads((tmp_path / "g.json").read_text())["exit_code"] == 0
    assert "✅ passed" in (tmp_path / "g.md").read_text()
    assert "-> exit 0" in capsys.readouterr().out


def test_gate_failing(run: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(run), "--config", str(_gates(tmp_path, FAILING)), "--junit", str(junit)]) == 1
    failure = _junit_cases(junit)["dpd bound"].find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert "= 0.15" in message and "ci_high <= 0.1" in message


def test_gate_broken_config(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "junit.xml"
    config = _gates(tmp_path, f"gates:\n  - metric: {DPD}\n    max: 0.1\n    statistic: median\n")
    assert main(["gate", str(run), "--config", str(config), "--junit", str(junit)]) == 2
    err = capsys.readouterr().err
    assert "line 4: 'statistic' must be one of value, ci_low, ci_high; got 'median'" in err
    (case,) = _junit_cases(junit).values()
    error = case.find("error")
    assert error is not None and "line 4" in error.get("message", "")


def test_gate_missing_metric_names_closest_keys(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "junit.xml"
    config = _gates(tmp_path, "gates:\n  - name: typo\n    metric: neuronmap/fairness/gender/demographic_parity_diff\n"
                              "    max: 0.1\n")
    assert main(["gate", str(run), "--config", str(config), "--junit", str(junit)]) == 2
    assert f"closest keys: {DPD}" in capsys.readouterr().out
    error = _junit_cases(junit)["typo"].find("error")
    assert error is not None and DPD in error.get("message", "")


def test_gate_unreadable_run_and_baseline(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _gates(tmp_path, f"gates:\n  - metric: {DPD}\n    baseline: {{margin: 0.01}}\n")
    assert main(["gate", str(tmp_path / "missing"), "--config", str(config)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["gate", str(run), "--config", str(config), "--baseline", str(run)]) == 0


def test_gate_appends_github_summary(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    main(["gate", str(run), "--config", str(_gates(tmp_path, FAILING))])
    assert "### NeuronMap gates: a check failed" in summary.read_text()


def test_gate_exit_status_of_the_real_command(run: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "neuronmap.cli", "gate", str(run), "--config",
                           str(_gates(tmp_path, FAILING)), "--quiet", "--no-audit"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "[FAILED ] dpd bound" in proc.stdout


def test_card_formats_and_strict(run: Path, tmp_path: Path) -> None:
    assert main(["card", str(run), "--out", str(tmp_path / "card.md")]) == 0
    assert (tmp_path / "card.md").read_text().startswith("---\n")
    assert main(["card", str(run), "--format", "html", "--out", str(tmp_path / "card.html")]) == 0
    assert (tmp_path / "card.html").read_text().lstrip().startswith("<!DOCTYPE html>")
    assert main(["card", str(run), "--strict", "--out", str(tmp_path / "strict.md")]) == 1
    assert not (tmp_path / "strict.md").exists()
    data = tmp_path / "card.yaml"
    data.write_text(
        "model_details: {name: tiny, version: '1', developers: [me], license: mit}\n"
        "intended_use: {primary_uses: tests, primary_users: CI, out_of_scope_uses: [production]}\n"
        "training_data: {description: random init}\n"
        "ethical_considerations: {risks: none}\n"
        "caveats_and_recommendations: {recommendations: none}\n"
    )
    assert main(["card", str(run), "--strict", "--data", str(data), "--out", str(tmp_path / "strict.md")]) == 0
    kinds = [json.loads(line)["kind"] for line in (run / "audit.jsonl").read_text().splitlines()]
    assert kinds.count("card") == 3  # every rendering, not the refused one


def test_card_annex_iv(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "annex.md"
    assert main(["card", str(run), "--template", "eu_ai_act_annex_iv", "--out", str(out)]) == 0
    assert "### 2(g) Validation and testing procedures" in out.read_text()


def test_card_bad_input(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.md.j2"
    evil.write_text("{{ card.__class__.__mro__ }}")
    assert main(["card", str(run), "--template", str(evil)]) == 2
    assert "stopped by the sandbox" in capsys.readouterr().err
    assert main(["card", str(run), "--template", "nope"]) == 2
    assert "No built-in md card template named 'nope'" in capsys.readouterr().err
    bad = tmp_path / "card.yaml"
    bad.write_text("modeldetails: {}\n")
    assert main(["card", str(run), "--data", str(bad)]) == 2
    assert "Unknown card section(s) ['modeldetails']" in capsys.readouterr().err


def test_audit_verify(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(run)]) == 0
    assert "audit trail OK: 3 entries" in capsys.readouterr().out
    path = run / "audit.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["step"] = 99
    lines[1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(run)]) == 1
    assert "line 2: edited" in capsys.readouterr().out
    assert main(["audit", "verify", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [{"line": 2, "kind": "edited", "message": report["problems"][0]["message"]}]
    assert main(["audit", "verify", str(tmp_path / "none")]) == 2


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gate", "--help"])
    text = capsys.readouterr().out
    assert "exit status: 0 all checks passed, 1 a check failed, 2" in text and "mlflow:<run_id>" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in ("card", "gate", "audit"))
