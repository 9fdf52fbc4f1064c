"""The compliance subcommands of ``neuronmap``: ``gate`` (exit codes, JUnit XML on passing,
failing and broken configs), ``card`` (formats, strict mode, sandbox) and ``audit verify``."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
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
    assert "audit trail OK: 4 entries, 3 engine runs, " in capsys.readouterr().out
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


# ---------------------------------------------------------------------------------------- evidence

def _edit_metric(run: Path) -> str:
    path = run / "metrics.jsonl"
    path.write_text(path.read_text().replace(f'"{DPD}": 0.08', f'"{DPD}": 0.016'))
    return "metrics.jsonl"


def _edit_table(run: Path) -> str:
    path = run / "tables" / "2" / "performance" / "by_group.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[4] = "0.99"  # an estimate
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return "tables/2/performance/by_group.csv"


def _edit_figure(run: Path) -> str:
    path = run / "figures" / "1" / "activation_stats" / "health.png"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    return "figures/1/activation_stats/health.png"


def _edit_config(run: Path) -> str:
    path = run / "config.json"
    config = json.loads(path.read_text())
    config["probe"]["n"] = 6400
    path.write_text(json.dumps(config))
    return "config.json"


def _append_line(run: Path) -> str:
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"step": 2, "epoch": None, "event": None, "time": "2030-01-01T00:00:00+00:00",
                             "metrics": {DPD: 0.0}}) + "\n")
    return "metrics.jsonl"


@pytest.mark.parametrize("edit", [_edit_metric, _edit_table, _edit_figure, _edit_config, _append_line])
def test_editing_evidence_fails_verify_and_card(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                edit: object) -> None:
    card = tmp_path / "before.md"
    assert main(["card", str(run), "--out", str(card), "--no-audit"]) == 0
    assert "Verified: audit trail `audit.jsonl` intact" in card.read_text()
    capsys.readouterr()
    name = edit(run)  # type: ignore[operator]
    assert main(["audit", "verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert f"evidence: evidence file {name} " in out and "TAMPERED" in out
    assert main(["card", str(run), "--out", str(tmp_path / "after.md"), "--no-audit"]) == 0
    text = (tmp_path / "after.md").read_text()
    assert "Verified:" not in text and "AUDIT TRAIL OR EVIDENCE TAMPERED" in text and name in text


def test_unaudited_or_card_only_trails_are_not_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, "plain", audit=False)
    assert main(["card", str(run), "--out", str(tmp_path / "c.md")]) == 0  # creates audit.jsonl: a card entry
    assert "Not verified" in (tmp_path / "c.md").read_text()
    assert main(["card", str(run), "--out", str(tmp_path / "c2.md")]) == 0
    assert "Verified:" not in (tmp_path / "c2.md").read_text()  # two card entries verify nothing
    capsys.readouterr()
    assert main(["audit", "verify", str(run)]) == 1
    captured = capsys.readouterr()
    assert "NOT VERIFIED" in captured.out and "no engine run is recorded" in captured.err


# ---------------------------------------------------------------------------------------- strict Annex IV

def _annex_data(tmp_path: Path, **override: object) -> Path:
    filled = "Documented in the provider's quality manual, section 4."
    annex: dict[str, object] = {k: filled for k in (
        "provider", "intended_purpose", "interactions", "hardware", "user_interface", "instructions_for_use",
        "development_methods", "architecture", "compute_resources", "human_oversight", "predetermined_changes",
        "cybersecurity", "capabilities_and_limitations", "input_specifications", "metrics_appropriateness",
        "risk_management", "lifecycle_changes", "standards_applied", "post_market_monitoring", "bias_mitigation",
        "data_gaps")}
    annex.update(market_forms="not applicable: research prototype, not placed on the market",
                 product_illustrations="not applicable: software only, not a component of a product",
                 declaration_of_conformity="not applicable: no conformity assessment has been carried out",
                 special_category_data="not applicable: no special categories of personal data are processed",
                 expected_accuracy=0.5,
                 design_specifications={k: filled for k in (
                     "general_logic", "algorithms", "key_design_choices", "classification_choices",
                     "optimisation_objective", "expected_output", "compliance_trade_offs")})
    annex.update(override)
    data = {"model_details": {"name": "tiny", "version": "1", "developers": ["me"], "license": "mit"},
            "intended_use": {"primary_uses": "tests", "primary_users": "CI", "out_of_scope_uses": ["production"]},
            "training_data": {k: filled for k in ("description", "provenance", "selection", "labelling", "cleaning")},
            "ethical_considerations": {"risks": "none known"},
            "caveats_and_recommendations": {"recommendations": "none"}, "annex_iv": annex}
    path = tmp_path / "annex.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _strict(run: Path, data: Path, out: Path) -> int:
    return main(["card", str(run), "--template", "eu_ai_act_annex_iv", "--data", str(data), "--strict",
                 "--out", str(out), "--no-audit"])


def test_strict_annex_iv_needs_every_item_and_a_sign_off(run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "annex.md"
    missing = _annex_data(tmp_path, cybersecurity=None)
    assert _strict(run, missing, out) == 1
    err = capsys.readouterr().err
    assert "Annex IV 2(h) (Cybersecurity measures): missing annex_iv.cybersecurity" in err and not out.exists()
    bare = _annex_data(tmp_path, market_forms="not applicable")  # a reason is required
    assert _strict(run, bare, out) == 1 and "annex_iv.market_forms" in capsys.readouterr().err
    data = _annex_data(tmp_path)
    assert _strict(run, data, out) == 1
    assert "test sign-off: no sign-off is recorded" in capsys.readouterr().err
    assert main(["audit", "sign-off", str(run), "--by", "A. Auditor", "--role", "QA lead", "--data", str(data)]) == 0
    assert _strict(run, data, out) == 0
    text = out.read_text()
    assert "Signed off by A. Auditor (QA lead)" in text and "INCOMPLETE" not in text
    assert "| 1(f) | Photographs or illustrations of products the system is a component of | not applicable" in text
    # the card data changed after the sign-off: its digest no longer matches
    changed = _annex_data(tmp_path, risk_management="A different risk process.")
    assert _strict(run, changed, out) == 1
    assert "is for card digest" in capsys.readouterr().err


def test_strict_annex_iv_fails_after_a_later_or_failed_gate(run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = _annex_data(tmp_path)
    assert main(["audit", "sign-off", str(run), "--by", "A. Auditor", "--data", str(data)]) == 0
    assert main(["gate", str(run), "--config", str(_gates(tmp_path, FAILING))]) == 1
    capsys.readouterr()
    assert _strict(run, data, tmp_path / "annex.md") == 1
    err = capsys.readouterr().err
    assert "predates the last evaluation" in err and "the last gate evaluation" in err and "exited 1" in err


def test_signed_trail_with_published_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    assert main(["audit", "keygen", "--out", str(keys), "--name", "alice"]) == 0
    assert main(["audit", "keygen", "--out", str(tmp_path / "other"), "--name", "mallory"]) == 0
    assert (keys / "alice.pem").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("NEURONMAP_AUDIT_SIGNING_KEY", str(keys / "alice.pem"))
    run = make_run(tmp_path, "signed")
    capsys.readouterr()
    assert main(["audit", "verify", str(run), "--public-key", str(keys / "alice.pub.pem")]) == 0
    assert "Ed25519 signatures of" in capsys.readouterr().out
    assert main(["audit", "verify", str(run), "--public-key", str(tmp_path / "other" / "mallory.pub.pem")]) == 1
    assert "not among the trusted public keys" in capsys.readouterr().out
    path = run / "audit.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["signature"] = json.loads(lines[1])["signature"]  # a signature copied from another entry
    lines[0] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(run)]) == 1
    assert "line 1: signature: Ed25519 signature does not verify" in capsys.readouterr().out
    card = tmp_path / "card.md"
    assert main(["card", str(run), "--out", str(card), "--no-audit"]) == 0
    assert "line 1: signature" in card.read_text() and "Verified:" not in card.read_text()
