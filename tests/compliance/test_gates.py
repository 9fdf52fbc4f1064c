"""Gates: config validation with line numbers, thresholds on values and CI bounds, step modes,
baseline comparisons, missing metrics, JUnit XML / Markdown / JSON renderings, MLflow runs and
the engine listener."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from compliance_runs import append_metrics, copy_run, make_run

import neuronmap as nm
from neuronmap.compliance.audit import verify
from neuronmap.compliance.gates import (
    GateConfigError,
    GateMonitor,
    RunReadError,
    evaluate,
    load_gate_config,
    match_keys,
)
from neuronmap.errors import TornLineWarning
from neuronmap.reporters import LocalReporter
from neuronmap.results import HISTORY_COLUMNS, History, split_key
from neuronmap.runs import read_history
from neuronmap.testing import tiny_mlp, tiny_probe

DPD = "neuronmap/fairness/gender/demographic_parity_difference"


def _history(rows: list[tuple[int, str, float]]) -> History:
    records = []
    for step, key, value in rows:
        analysis, layer, metric = split_key(key)
        records.append([step, None, None, analysis, layer, metric, value, key])
    return History(pd.DataFrame(records, columns=HISTORY_COLUMNS))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("gates"), "base")


# ---------------------------------------------------------------- config
def test_config_accepts_list_and_mapping_with_defaults() -> None:
    text = ("defaults:\n  statistic: ci_low\ngates:\n  - metric: a/b\n    min: 0.5\n"
            "  - metric: c/d\n    max: 1\n    statistic: value\n")
    cfg = load_gate_config(text)
    assert [c.statistic for c in cfg.checks] == ["ci_low", "value"]
    assert [c.line for c in cfg.checks] == [4, 6]
    assert load_gate_config([{"metric": "a/b", "min": 1}]).checks[0].name == "a/b >= 1"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gates:\n  - metric: a\n    mni: 3\n", r"line 3: unknown key 'mni'; did you mean 'min'\?"),
        ("gates:\n  - metric: a\n\n    min: high\n", r"line 4: 'min' must be a number; got 'high'"),
        ("gates:\n  - metric: a\n    min: 1\n    statistic: median\n",
         r"line 4: 'statistic' must be one of value, ci_low, ci_high; got 'median'"),
        ("gates:\n  - metric: a\n    min: 1\n    when: most\n", r"line 4: 'when' must be one of last, all, any"),
        ("gates:\n  - metric: a\n    min: 2\n    max: 1\n", r"line 4: 'min' \(2.0\) is larger than 'max' \(1.0\)"),
        ("gates:\n  - name: x\n    metric: a\n", r"line 2: check on 'a' has no condition"),
        ("gates:\n  - metric: [a\n", r"line 3: invalid YAML"),
        ("gates:\n  - metric: a\n    baseline: {margin: -1}\n", r"line 3: 'margin' must be >= 0"),
        ("gates:\n  - metric: a\n    min: 1\n  - metric: b\n    min: 1\n    name: a >= 1\n",
         r"line 4: two checks are named 'a >= 1'"),
        ("gates: []\n", r"line 1: expected a non-empty list of checks"),
        ("defaults:\n  when: never\ngates:\n  - metric: a\n    min: 1\n", r"line 2: 'when' must be one of"),
    ],
)
def test_invalid_config_names_line_and_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(GateConfigError, match=match):
        load_gate_config(path)


def test_config_is_read_with_safe_loader(tmp_path: Path) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  - metric: !!python/object/apply:os.system ['echo pwned']\n    min: 1\n")
    with pytest.raises(GateConfigError, match="line 2: invalid YAML"):
        load_gate_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(GateConfigError, match="does not exist"):
        load_gate_config("no/such/gates.yaml")


# ---------------------------------------------------------------- matching
def test_glob_star_stays_in_one_component_and_siblings_are_excluded() -> None:
    keys = ["neuronmap/p/enc.1/acc", "neuronmap/p/enc.1/acc_ci_low", "neuronmap/p/a/b/acc", "neuronmap/q/x/acc"]
    assert match_keys("neuronmap/p/*/acc", keys) == ["neuronmap/p/enc.1/acc"]
    assert match_keys("neuronmap/p/**/acc", keys) == ["neuronmap/p/a/b/acc", "neuronmap/p/enc.1/acc"]
    assert match_keys("neuronmap/*/*/acc_ci_low", keys) == ["neuronmap/p/enc.1/acc_ci_low"]
    assert match_keys("neuronmap/p/enc.1/acc", keys) == ["neuronmap/p/enc.1/acc"]
    assert match_keys("neuronmap/p/enc.[13]/acc", keys) == ["neuronmap/p/enc.1/acc"]
    assert match_keys("neuronmap/p/enc.[!1]/acc", keys) == []
    assert match_keys("neuronmap/?/x/acc", keys) == ["neuronmap/q/x/acc"]


# ---------------------------------------------------------------- thresholds
def test_value_versus_ci_bound(run_dir: Path) -> None:
    # value 0.08, CI [0.02, 0.15] (compliance_runs.FAIRNESS)
    assert evaluate(run_dir, [{"metric": DPD, "max": 0.1}], audit=False).exit_code == 0
    report = evaluate(run_dir, [{"metric": DPD, "max": 0.1, "statistic": "ci_high"}], audit=False)
    assert report.exit_code == 1
    (result,) = report.checks[0].results
    assert result.compared_key == DPD + "_ci_high"
    assert result.value == pytest.approx(0.15)
    assert "0.15" in report.checks[0].message and "ci_high <= 0.1" in report.checks[0].message
    assert evaluate(run_dir, [{"metric": DPD, "min": 0.01, "statistic": "ci_low"}], audit=False).exit_code == 0


def test_thresholds_on_real_engine_metrics(run_dir: Path) -> None:
    frame = read_history(run_dir)
    key = "neuronmap/activation_stats/net.1/effective_rank"
    last = float(frame[frame["key"] == key]["value"].iloc[-1])
    assert evaluate(run_dir, [{"metric": key, "min": last}], audit=False).exit_code == 0  # bounds are inclusive
    assert evaluate(run_dir, [{"metric": key, "min": math.nextafter(last, math.inf)}], audit=False).exit_code == 1
    ranks = frame[frame["metric"] == "effective_rank"].drop_duplicates("key", keep="last")
    report = evaluate(run_dir, [{"metric": "neuronmap/activation_stats/*/effective_rank",
                                 "min": float(ranks["value"].median())}], audit=False)
    assert report.checks[0].status == "failed"
    assert len(report.checks[0].results) == len(ranks)
    below_median = int((ranks["value"] < ranks["value"].median()).sum())
    assert sum(r.status == "failed" for r in report.checks[0].results) == below_median


@pytest.mark.parametrize(("when", "status"), [("last", "failed"), ("all", "failed"), ("any", "passed")])
def test_when_over_steps(when: str, status: str) -> None:
    history = _history([(0, "neuronmap/p/l/acc", 0.5), (1, "neuronmap/p/l/acc", 0.9), (2, "neuronmap/p/l/acc", 0.7)])
    report = evaluate(history, [{"metric": "neuronmap/p/l/acc", "min": 0.8, "when": when}])
    assert report.checks[0].status == status
    assert report.checks[0].results[0].step == {"last": 2, "all": 0, "any": 1}[when]


def test_all_passes_only_when_every_step_passes() -> None:
    history = _history([(0, "neuronmap/p/l/acc", 0.85), (1, "neuronmap/p/l/acc", 0.9)])
    assert evaluate(history, [{"metric": "neuronmap/p/l/acc", "min": 0.8, "when": "all"}]).exit_code == 0


@pytest.mark.parametrize(
    ("rule", "candidate", "status"),
    [
        ({"margin": 0.02}, 0.79, "passed"),                     # 0.79 >= 0.80 - 0.02
        ({"margin": 0.005}, 0.79, "failed"),
        ({"mode": "relative", "min_delta": -0.01}, 0.795, "passed"),  # (0.795 - 0.8) / 0.8 = -0.00625
        ({"mode": "relative", "min_delta": -0.005}, 0.795, "failed"),
        ({"max_delta": 0.0}, 0.81, "failed"),
        ({"margin": 0.01, "higher_is_better": False}, 0.805, "passed"),  # lower is better: 0.805 <= 0.81
        ({"margin": 0.01, "higher_is_better": False}, 0.82, "failed"),
    ],
)
def test_baseline_rules(rule: dict, candidate: float, status: str) -> None:
    base = _history([(5, "neuronmap/p/l/acc", 0.8)])
    run = _history([(3, "neuronmap/p/l/acc", candidate)])
    report = evaluate(run, [{"metric": "neuronmap/p/l/acc", "baseline": rule}], base)
    result = report.checks[0].results[0]
    assert result.status == status
    assert result.baseline_value == pytest.approx(0.8)
    expected = (candidate - 0.8) / 0.8 if rule.get("mode") == "relative" else candidate - 0.8
    assert result.delta == pytest.approx(expected)


def test_baseline_rule_without_baseline_run_is_not_run() -> None:
    run = _history([(0, "neuronmap/p/l/acc", 0.8)])
    report = evaluate(run, [{"metric": "neuronmap/p/l/acc", "baseline": {"margin": 0.1}}])
    assert report.checks[0].status == "error" and not report.checks[0].ran
    assert report.exit_code == 2
    optional = evaluate(run, [{"metric": "neuronmap/p/l/acc", "baseline": {"margin": 0.1}, "required": False}])
    assert optional.checks[0].status == "skipped" and optional.exit_code == 0


# ---------------------------------------------------------------- not run
def test_missing_metric_names_closest_keys(run_dir: Path) -> None:
    report = evaluate(run_dir, [{"metric": "neuronmap/activation_stats/net.1/dead_fractoin", "max": 1}], audit=False)
    assert report.exit_code == 2
    assert report.checks[0].status == "error"
    assert "closest keys: neuronmap/activation_stats/net.1/dead_fraction" in report.checks[0].message


def test_optional_missing_metric_is_skipped_not_failed(run_dir: Path) -> None:
    report = evaluate(run_dir, [{"metric": "neuronmap/probing/*/accuracy", "min": 0.7, "required": False},
                                {"metric": DPD, "max": 0.5}], audit=False)
    assert [c.status for c in report.checks] == ["skipped", "passed"]
    assert report.exit_code == 0


def test_missing_ci_sibling_and_nan_are_errors() -> None:
    history = _history([(0, "neuronmap/p/l/acc", 0.9), (0, "neuronmap/p/l/loss", math.nan)])
    report = evaluate(history, [{"metric": "neuronmap/p/l/acc", "min": 0.5, "statistic": "ci_low"},
                                {"metric": "neuronmap/p/l/loss", "max": 1.0}])
    assert [c.status for c in report.checks] == ["error", "error"]
    assert "no key neuronmap/p/l/acc_ci_low" in report.checks[0].message
    assert "is NaN at step 0" in report.checks[1].message


def test_failure_and_error_exit_codes() -> None:
    history = _history([(0, "neuronmap/p/l/acc", 0.5)])
    failed = evaluate(history, [{"metric": "neuronmap/p/l/acc", "min": 0.9}])
    both = evaluate(history, [{"metric": "neuronmap/p/l/acc", "min": 0.9}, {"metric": "neuronmap/p/l/nope", "min": 0}])
    assert failed.exit_code == 1 and both.exit_code == 2 and not both.ok


def test_unreadable_runs(tmp_path: Path) -> None:
    with pytest.raises(RunReadError, match="does not exist"):
        evaluate(tmp_path / "nope", [{"metric": "a", "min": 0}])
    with pytest.raises(RunReadError, match=r"no metrics\.jsonl"):
        evaluate(tmp_path, [{"metric": "a", "min": 0}])
    # a torn line (a crash mid-write) is skipped with a warning; a line that is JSON but not a
    # metrics record is an error (tests/reporters/test_crash_safety.py covers torn runs end to end)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "metrics": {"a": 1}}\n{broken\n')
    with pytest.warns(TornLineWarning, match="line 2"):
        assert evaluate(tmp_path, [{"metric": "a", "min": 0}], audit=False).exit_code == 0
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "metrics": {"a": 1}}\n[1, 2]\n')
    with pytest.raises(RunReadError, match=r"Cannot read.*line 2.*not a metrics record"):
        evaluate(tmp_path, [{"metric": "a", "min": 0}])


# ---------------------------------------------------------------- renderings
def test_junit_xml_one_testcase_per_check(run_dir: Path) -> None:
    report = evaluate(run_dir, [
        {"name": "dpd point", "metric": DPD, "max": 0.1},
        {"name": "dpd upper bound", "metric": DPD, "max": 0.1, "statistic": "ci_high"},
        {"name": "probing", "metric": "neuronmap/probing/*/accuracy", "min": 0.7},
        {"name": "optional", "metric": "neuronmap/x/y/z", "min": 0.7, "required": False},
    ], audit=False)
    root = ET.fromstring(report.to_junit_xml())
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["dpd point", "dpd upper bound", "probing", "optional"]
    counts = (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped"))
    assert counts == ("4", "1", "1", "1")
    assert cases["dpd point"].find("failure") is None and cases["dpd point"].find("error") is None
    failure = cases["dpd upper bound"].find("failure")
    assert failure is not None
    assert "0.15" in failure.get("message", "") and "ci_high <= 0.1" in failure.get("message", "")
    error = cases["probing"].find("error")
    assert error is not None and "not found" in error.get("message", "")
    assert cases["optional"].find("skipped") is not None


def test_markdown_json_and_github_summary(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = evaluate(run_dir, [{"name": "dpd | bound", "metric": DPD, "max": 0.1, "statistic": "ci_high"}],
                      audit=False)
    report.write(json=tmp_path / "g.json", markdown=tmp_path / "g.md", junit=tmp_path / "j.xml")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["exit_code"] == 1
    assert data["summary"] == {"total": 1, "passed": 0, "failed": 1, "error": 0, "skipped": 0}
    assert data["checks"][0]["results"][0]["value"] == pytest.approx(0.15)
    table = (tmp_path / "g.md").read_text()
    assert "| ❌ failed | dpd \\| bound | 0.15 |" in table
    assert summary.read_text() == "earlier step\n" + table + "\n"


# ---------------------------------------------------------------- sources and hooks
@pytest.mark.integration
def test_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("gates")).info.run_id
    for step, value in enumerate([0.6, 0.75, 0.9]):
        client.log_metric(run_id, "neuronmap/probing/enc.1/accuracy", value, step=step)
    client.log_metric(run_id, "neuronmap/probing/enc.1/accuracy_ci_low", 0.82, step=2)
    report = evaluate(f"mlflow:{run_id}",
                      [{"metric": "neuronmap/probing/*/accuracy", "min": 0.8, "statistic": "ci_low"},
                       {"metric": "neuronmap/probing/enc.1/accuracy", "min": 0.7, "when": "all"}],
                      tracking_uri=uri)
    assert [c.status for c in report.checks] == ["passed", "failed"]
    assert report.checks[1].results[0].step == 0
    with pytest.raises(RunReadError, match="Cannot read MLflow run 'nope'"):
        evaluate("mlflow:nope", [{"metric": "a", "min": 0}], tracking_uri=uri)


def test_evaluating_a_run_folder_appends_to_its_audit_trail(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    before = verify(run).entries
    report = evaluate(run, [{"metric": DPD, "max": 0.1}])
    after = verify(run)
    assert after.ok and after.entries == before + 1
    last = json.loads((run / "audit.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "gate" and last["summary"]["exit_code"] == report.exit_code == 0


def test_gate_monitor_logs_results_and_requests_stop(tmp_path: Path) -> None:
    reporter = LocalReporter(tmp_path, run_name="live", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    gates = GateMonitor([{"name": "finite", "metric": "neuronmap/activation_stats/*/nonfinite_fraction", "max": 0.0},
                         {"name": "impossible", "metric": "neuronmap/activation_stats/net.1/std", "min": 1e9}],
                        stop_on_failure=True).attach(monitor)
    monitor.run(tiny_mlp(), step=4)
    assert gates.should_stop and gates.last_report is not None and gates.last_report.exit_code == 1
    monitor.flush()  # gate outcomes are published like every result, on background threads
    frame = read_history(reporter.run_dir)
    logged = dict(zip(frame["key"], frame["value"], strict=True))
    assert logged["neuronmap/gates/finite/passed"] == 1.0
    assert logged["neuronmap/gates/impossible/passed"] == 0.0
    # ... and they are in the monitor's own history too
    in_memory = monitor.history.frame.set_index("key")["value"]
    assert in_memory["neuronmap/gates/finite/passed"] == 1.0


def test_gate_monitor_stops_on_a_failed_check_even_when_another_errors(tmp_path: Path) -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    gates = GateMonitor([{"name": "no-baseline", "metric": "neuronmap/activation_stats/net.1/std",
                          "baseline": {"mode": "absolute", "margin": 0.02}},
                         {"name": "impossible", "metric": "neuronmap/activation_stats/net.1/std", "min": 1e9}],
                        stop_on_failure=True).attach(monitor)
    monitor.run(tiny_mlp(), step=0)
    report = gates.last_report
    assert report is not None and report.exit_code == 2  # the error decides the exit code ...
    assert [c.status for c in report.checks] == ["error", "failed"]
    assert gates.should_stop  # ... but the failed check still stops training
    errored_only = GateMonitor([{"name": "no-baseline", "metric": "neuronmap/activation_stats/net.1/std",
                                 "baseline": {"mode": "absolute", "margin": 0.02}}],
                               stop_on_failure=True).attach(monitor)
    monitor.run(tiny_mlp(), step=1)
    assert errored_only.last_report is not None and errored_only.last_report.exit_code == 2
    assert not errored_only.should_stop


def test_history_object_and_frame_inputs(run_dir: Path) -> None:
    frame = read_history(run_dir)
    append_frame = History(frame)
    assert evaluate(append_frame, [{"metric": DPD, "max": 0.1}]).exit_code == 0
    assert evaluate(frame, [{"metric": DPD, "max": 0.1}]).run == "<frame>"
    with pytest.raises(nm.InvalidParameterError, match="needs columns step, key, value"):
        evaluate(pd.DataFrame({"x": [1]}), [{"metric": DPD, "max": 0.1}])


def test_later_steps_supersede_earlier_ones(tmp_path: Path) -> None:
    run = make_run(tmp_path, "two", steps=1, fairness=False, audit=False)
    append_metrics(run, {DPD: 0.3}, step=0)
    append_metrics(run, {DPD: 0.05}, step=1)
    assert evaluate(run, [{"metric": DPD, "max": 0.1}], audit=False).exit_code == 0
    assert evaluate(run, [{"metric": DPD, "max": 0.1, "when": "all"}], audit=False).exit_code == 1


def test_example_ci_files_are_valid() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2] / "examples" / "ci_gate"
    cfg = load_gate_config(root / "gates.yaml")
    assert len(cfg.checks) == 6 and {c.required for c in cfg.checks} == {True, False}
    github = yaml.safe_load((root / "github-actions.yml").read_text())
    steps = " ".join(str(s.get("run", "")) for s in github["jobs"]["gate"]["steps"])
    assert "neuronmap gate neuronmap-runs/ci" in steps and "--junit gate-junit.xml" in steps
    gitlab = yaml.safe_load((root / "gitlab-ci.yml").read_text())
    assert gitlab["model-gate"]["artifacts"]["reports"]["junit"] == "gate-junit.xml"
