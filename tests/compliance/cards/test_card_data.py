"""ModelCard data: the Mitchell et al. (2019) sections filled from a run folder, a live monitor
and a people-written YAML file; required fields for ``--strict``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compliance_runs import FAIRNESS, append_metrics, make_run

import neuronmap as nm
from neuronmap.compliance.cards import REQUIRED_FIELDS, SECTIONS, ModelCard, load_card_data
from neuronmap.reporters import LocalReporter
from neuronmap.runs import read_history
from neuronmap.testing import tiny_mlp, tiny_probe

DPD = "neuronmap/fairness/gender/demographic_parity_difference"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("cards"), "card-run")


def _complete() -> dict:
    return {
        "model_details": {"name": "tiny", "version": "1.0", "developers": ["ML team"], "license": "apache-2.0"},
        "intended_use": {"primary_uses": "demo", "primary_users": "tests", "out_of_scope_uses": ["anything real"]},
        "training_data": {"description": "none: random weights"},
        "ethical_considerations": {"risks": "none known"},
        "caveats_and_recommendations": {"recommendations": "do not deploy"},
    }


def test_sections_follow_mitchell_et_al() -> None:
    assert SECTIONS == ("model_details", "intended_use", "factors", "metrics", "evaluation_data", "training_data",
                        "quantitative_analyses", "ethical_considerations", "caveats_and_recommendations")


def test_from_run_folds_ci_and_p_values_into_rows(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir)
    rows = {r["key"]: r for r in card.quantitative_analyses["results"]}
    dpd = rows[DPD]
    assert (dpd["value"], dpd["ci_low"], dpd["ci_high"], dpd["p"], dpd["p_adj"]) == (
        FAIRNESS[DPD], FAIRNESS[DPD + "_ci_low"], FAIRNESS[DPD + "_ci_high"], FAIRNESS[DPD + "_p"],
        FAIRNESS[DPD + "_p_adj"])
    assert dpd["display"] == "0.08 [0.02, 0.15] (p_adj = 0.03)"
    assert not any(key.endswith(("_ci_low", "_ci_high", "_p", "_p_adj")) for key in rows)
    frame = read_history(run_dir)
    main = frame[~frame["key"].str.endswith(("_ci_low", "_ci_high", "_p", "_p_adj"))]
    assert set(rows) == set(main["key"])
    latest = main.drop_duplicates("key", keep="last").set_index("key")["value"]
    assert all(rows[k]["value"] == pytest.approx(latest[k]) for k in rows)
    fairness = {r["key"] for r in card.quantitative_analyses["fairness"]}
    assert fairness == {DPD}  # representation bias is model examination, not the model's treatment of groups
    assert "representation_bias" in card.examination["analyses"]
    assert card.factors["fairness_attributes"] == ["gender"]


def test_from_run_reads_probe_environment_figures_and_logs(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert card.evaluation_data["fingerprint"] == config["probe"]["fingerprint"]
    assert len(card.evaluation_data["fingerprint"]) == 64
    assert card.evaluation_data["n"] == 64 and card.evaluation_data["steps"] == [0, 1, 2]
    assert card.environment["recorded"].startswith("audit trail, first engine run")
    # three engine runs and the run's end; every evidence file matches what the trail recorded
    assert card.audit["present"] and card.audit["ok"] and card.audit["entries"] == 4 and card.audit["runs"] == 3
    assert card.audit["verified"] and card.audit["files_checked"] > 10
    names = {f["name"] for f in card.figures}
    assert "activation_stats/health" in names
    fig = next(f for f in card.figures if f["name"] == "activation_stats/health")
    assert fig["step"] == 2 and fig["path"] == "figures/2/activation_stats/health.png"
    assert fig["data_uri"].startswith("data:image/png;base64,iVBORw0KGgo")  # the PNG signature
    metrics_lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    logged = [e for e in card.test_log if e["source"].startswith("metrics.jsonl")]
    assert len(logged) == len(metrics_lines)
    assert [e["date"] for e in logged] == sorted(json.loads(line)["time"] for line in metrics_lines)
    assert card.run["name"] == "card-run" and card.run["status"] == "FINISHED"


def test_failed_analyses_become_caveats(tmp_path: Path) -> None:
    class Broken(nm.Analysis):
        name = "broken"

        def run(self, ctx: nm.AnalysisContext) -> nm.AnalysisResult:
            raise RuntimeError("singular matrix")

    reporter = LocalReporter(tmp_path, run_name="f", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[Broken()], reporters=[reporter])
    with pytest.warns(nm.errors.AnalysisFailedWarning):
        monitor.run(tiny_mlp(), step=3)
    monitor.close()  # the publisher delivers on its own thread; closing the monitor flushes it
    (failure,) = ModelCard.from_run(reporter.run_dir).caveats_and_recommendations["analysis_failures"]
    assert failure["step"] == 3 and failure["analysis"] == "broken" and "singular matrix" in failure["error"]


def test_from_monitor_without_folder() -> None:
    probe = tiny_probe()
    probe.description = "Gaussian points"
    monitor = nm.NeuronMap(probe, layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    model = tiny_mlp()
    monitor.run(model, step=0)
    card = ModelCard.from_monitor(monitor, model=model, data={"model_details": {"name": "tiny"}})
    assert card.model_details["parameters"] == (8 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    assert card.model_details["architecture"] == "TinyMLP"
    assert card.evaluation_data["description"] == "Gaussian points"
    assert card.evaluation_data["groups"] == ["group"] and card.factors["relevant_factors"] == ["group"]
    assert card.environment["recorded"] == "at card rendering" and card.figures == []
    assert len(card.quantitative_analyses["results"]) == len(monitor.history.latest())


def test_from_monitor_with_folder_keeps_figures(tmp_path: Path) -> None:
    reporter = LocalReporter(tmp_path, run_name="m", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    monitor.run(tiny_mlp(), step=0)
    card = ModelCard.from_monitor(monitor)
    assert [f["name"] for f in card.figures] == ["activation_stats/health"]
    assert card.run["name"] == "m"


def test_user_data_merges_over_automatic_sections(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text("model_details:\n  name: sentiment\n  version: '2.1'\nevaluation_data:\n  description: EEC\n"
                    "ethical_considerations: Misuse for profiling.\n")
    card = ModelCard.from_run(run_dir, data=path)
    assert card.model_details["name"] == "sentiment" and card.model_details["version"] == "2.1"
    assert card.evaluation_data["description"] == "EEC" and card.evaluation_data["n"] == 64  # auto kept
    assert card.ethical_considerations == {"text": "Misuse for profiling."}
    assert card.user_data["model_details"]["name"] == "sentiment"


def test_missing_fields_and_placeholders(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir)
    # the model's own name (recorded by the audit trail); everything else in REQUIRED_FIELDS only people know
    assert card.model_details["name"] == "TinyMLP"
    assert card.missing_fields() == [f for f in REQUIRED_FIELDS if f != "model_details.name"]
    complete = card.with_data(_complete())
    assert complete.missing_fields() == []
    todo = complete.with_data({"intended_use": {"primary_users": "TODO"}, "model_details": {"developers": []}})
    assert todo.missing_fields() == ["model_details.developers", "intended_use.primary_users"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model_detials:\n  name: x\n", r"Unknown card section\(s\) \['model_detials'\]; allowed: model_details"),
        ("- a\n- b\n", "must be a mapping of sections; got list"),
        ("model_details: {name: [x\n", r"line 2: invalid YAML"),
        ("model_details: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    ],
)
def test_bad_card_data(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(nm.InvalidParameterError, match=match):
        load_card_data(path)


def test_card_data_file_must_exist() -> None:
    with pytest.raises(nm.InvalidParameterError, match="does not exist"):
        load_card_data("no/such/card.yaml")


def test_generic_reading_of_new_analyses(tmp_path: Path) -> None:
    run = make_run(tmp_path, "new", steps=1, fairness=False, audit=False)
    append_metrics(run, {"neuronmap/counterfactual_bias/gender/flip_rate": 0.12,
                         "neuronmap/counterfactual_bias/gender/flip_rate_ci_low": 0.05,
                         "neuronmap/counterfactual_bias/gender/flip_rate_ci_high": 0.2,
                         "eval_loss": 0.4}, step=0)
    card = ModelCard.from_run(run)
    rows = {r["key"]: r for r in card.quantitative_analyses["results"]}
    assert rows["neuronmap/counterfactual_bias/gender/flip_rate"]["has_ci"]
    assert rows["eval_loss"]["analysis"] == "" and "user" in card.quantitative_analyses["by_analysis"]
    keys = [r["key"] for r in card.quantitative_analyses["fairness"]]
    assert keys == ["neuronmap/counterfactual_bias/gender/flip_rate"]
