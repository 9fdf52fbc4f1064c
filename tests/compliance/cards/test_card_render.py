"""Card rendering: Hugging Face metadata read back by huggingface_hub, a self-contained HTML file,
the EU AI Act Annex IV evidence mapping, strict mode, the audit entry and the sandbox."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from compliance_runs import copy_run, make_run
from jinja2.exceptions import SecurityError

import neuronmap as nm
from neuronmap.compliance.audit import verify
from neuronmap.compliance.cards import (
    ANNEX_IV_REQUIRED,
    CardIncompleteError,
    ModelCard,
    available_templates,
    log_model_card,
    render_card,
)
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe

DPD = "neuronmap/fairness/gender/demographic_parity_difference"
HOSTILE = "<script>alert('x')</script> {{ 7*7 }} {% raw %}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("render"), "render-run",
                    extra={f"neuronmap/fairness/{HOSTILE}/selection_rate": 0.5})


@pytest.fixture(scope="module")
def card(run_dir: Path) -> ModelCard:
    return ModelCard.from_run(run_dir, data={
        "model_details": {"name": HOSTILE, "version": "1", "license": "mit", "task": "text-classification"},
        "intended_use": {"primary_uses": f"Sentiment. {HOSTILE}"},
    })


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_builtin_templates() -> None:
    assert available_templates() == ["default.html", "default.md", "eu_ai_act_annex_iv.md"]
    assert available_templates("md") == ["default", "eu_ai_act_annex_iv"]


def test_markdown_front_matter_is_hugging_face_model_index(card: ModelCard) -> None:
    from huggingface_hub import ModelCard as HFModelCard

    text = render_card(card, audit=False)
    hf = HFModelCard(text, ignore_metadata_errors=False)
    assert hf.data.license == "mit"
    # only the model's own evaluation, with Hub metric ids; interpretability keys stay out
    results = {r.metric_type: r for r in hf.data.eval_results}
    assert set(results) == {"accuracy", "f1", "ece"} and hf.data.metrics == ["accuracy", "ece", "f1"]
    measured = {r["metric"]: r for r in card.performance["overall"]}
    acc = results["accuracy"]
    assert acc.metric_value == pytest.approx(measured["accuracy"]["value"], abs=1e-6)
    assert acc.metric_args["ci_low"] == pytest.approx(measured["accuracy"]["ci_low"], abs=1e-6)
    assert acc.metric_args["ci_low"] <= acc.metric_value <= acc.metric_args["ci_high"]
    assert acc.metric_args["confidence_level"] == 0.95 and acc.metric_args["n"] == 64
    assert results["f1"].metric_config == "macro"
    assert all(r.verified is None for r in hf.data.eval_results)  # the Hub reserves `verified`
    assert acc.task_type == "text-classification" and acc.dataset_name == "tiny" and acc.dataset_type == "custom"
    # metadata strings are YAML data, not HTML: the hostile name comes back exactly as written
    header = text.split("\n---\n")[0]
    assert hf.data.model_name == HOSTILE and "&amp;" not in header and "&lt;" not in header
    assert "# Model card:" in hf.text
    assert "| fairness | gender | demographic_parity_difference | 0.08 [0.02, 0.15]" in text
    assert "neuronmap/activation_stats" not in text.split("\n---\n")[0]


def test_hub_metadata_license_and_datasets(card: ModelCard) -> None:
    from huggingface_hub import ModelCard as HFModelCard

    custom = card.with_data({"model_details": {"license": "ACME Research License 2", "datasets": ["imdb"],
                                               "name": "R&D classifier"},
                             "evaluation_data": {"dataset_id": "imdb", "split": "test"}})
    text = render_card(custom, audit=False)
    hf = HFModelCard(text, ignore_metadata_errors=False)
    assert hf.data.license == "other" and hf.data.license_name == "acme-research-license-2"
    assert hf.data.datasets == ["imdb"] and hf.data.model_name == "R&D classifier"
    (first, *_) = hf.data.eval_results
    assert (first.dataset_type, first.dataset_split) == ("imdb", "test")
    assert "license 'ACME Research License 2' is not a Hugging Face license identifier" in text


def test_public_cards_omit_user_and_host(card: ModelCard) -> None:
    import getpass
    import socket

    host = socket.gethostname()
    public = render_card(card, audit=False)
    assert f"**host**: {host}" not in public and f"**user**: {getpass.getuser()}" not in public
    assert f"**host**: {host}" in render_card(card, audit=False, identity=True)


def test_html_card_is_self_contained(card: ModelCard) -> None:
    text = render_card(card, fmt="html", audit=False)
    parser = _Collector()
    parser.feed(text)
    tags = [t for t, _ in parser.tags]
    assert tags[0] == "html" and "script" not in tags
    images = [a for t, a in parser.tags if t == "img"]
    assert images, "the card embeds the run's figures"
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    external = [a for t, a in parser.tags for k in ("src", "href") if (a.get(k) or "").startswith(("http", "//"))]
    assert external == []
    body = "".join(parser.text)
    for heading in ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
                    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations", "Test log"):
        assert heading in body


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_hostile_strings_are_escaped_never_executed(card: ModelCard, fmt: str) -> None:
    text = render_card(card, fmt=fmt, audit=False)
    if fmt == "md":  # the front matter holds the name as quoted YAML data (checked above); the body escapes
        text = text.split("\n---\n", 1)[1]
    assert "<script>" not in text and "alert('x')</script>" not in text
    assert "{{ 7*7 }}" not in text and "{% raw %}" not in text
    quote = "'" if fmt == "md" else "&#39;"
    escaped = (f"&lt;script&gt;alert({quote}x{quote})&lt;/script&gt; &#123;&#123; 7*7 &#125;&#125; "
               "&#123;&#37; raw &#37;&#125;")
    title = re.search(r"^# Model card: (.*)$" if fmt == "md" else r"<title>Model card: (.*)</title>", text, re.M)
    assert title is not None and title.group(1) == escaped  # shown verbatim, 7*7 not evaluated
    if fmt == "html":
        parser = _Collector()
        parser.feed(text)
        assert HOSTILE.split(" {{")[0] in "".join(parser.text)  # the browser shows the text as written


def test_sandbox_blocks_internals(tmp_path: Path, card: ModelCard) -> None:
    for i, source in enumerate([
        "{{ card.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ card.model_details.__class__.__mro__ }}",
        "{{ card.model_details.update({'name': 'x'}) }}",
    ]):
        template = tmp_path / f"evil{i}.md.j2"
        template.write_text(source)
        with pytest.raises(SecurityError):
            render_card(card, template=str(template), audit=False)


def test_user_template(tmp_path: Path, card: ModelCard) -> None:
    template = tmp_path / "mine.html.j2"
    template.write_text("<h1>{{ card.model_details.name }}</h1>{% for r in card.quantitative_analyses.fairness %}"
                        "<p>{{ r.key }}={{ r.value|num }}</p>{% endfor %}")
    text = render_card(card, template=str(template), fmt="md", audit=False)
    assert text.startswith("<h1>&lt;script&gt;")  # .html templates are HTML-escaped whatever the format
    assert f"<p>{DPD}=0.08</p>" in text


def test_annex_iv_maps_items_to_evidence(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir, data={"annex_iv": {
        "provider": "ACME", "market_forms": "not applicable: an internal research model, never placed on the market",
        "expected_accuracy": 0.95}})
    text = render_card(card, template="eu_ai_act_annex_iv", audit=False)
    assert text.index("not legal advice") < text.index("## Completeness")  # the disclaimer is rendered
    for heading in ("## Completeness", "## 1. General description", "### 2(g) Validation and testing procedures",
                    "## 3. Monitoring, functioning and control", "## 5. Risk management system",
                    "## 9. Post-market monitoring", "## Model examination", "## Record-keeping"):
        assert heading in text
    assert "> **INCOMPLETE.**" in text
    status = text.split("## Completeness")[1].split("## 1.")[0]
    assert ("| 1(d) | Forms in which the system is placed on the market | not applicable: annex_iv.market_forms: "
            in status)
    assert "| 1(c) | Versions of relevant software | provided |" in status
    assert "| 1(f) |" in status and "| 2(h) | Cybersecurity measures | **missing**: annex_iv.cybersecurity |" in status
    section_2g = text.split("### 2(g)")[1].split("## 3.")[0]
    accuracy = next(r for r in card.performance["overall"] if r["metric"] == "accuracy")
    assert f"| Accuracy | {accuracy['display']} | 64 | `neuronmap/performance/overall/accuracy` |" in section_2g
    assert f"`{DPD}`" in section_2g and "0.08 [0.02, 0.15] (p_adj = 0.03)" in section_2g
    assert "estimate can even fall outside its own interval" in section_2g  # the CI method explained
    times = [json.loads(line)["time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(t in section_2g for t in times)  # dated test logs
    assert "**NOT SIGNED OFF**: no sign-off is recorded" in section_2g
    assert "Not measured by this run" in section_2g  # robustness is not claimed
    assert "10(2)(g)" in section_2g and "10(5)" in section_2g
    section_3 = text.split("## 3.")[1].split("## 4.")[0]
    assert "| group | a | Accuracy |" in section_3 and "| 32 |" in section_3  # per group, with group sizes
    assert "⚠ **accuracy: declared 0.95, measured" in section_3 and "LOWER THAN DECLARED" in section_3
    examination = text.split("## Model examination")[1].split("## Record-keeping")[0]
    assert "neuronmap/representation_bias/net.3/decodability" in examination
    assert "Provider: ACME" in text
    assert "**MISSING**: fill `annex_iv.risk_management`" in text
    assert "Automatic:" not in text and "cybersecurity, integrity" not in text.lower()
    record = text.split("## Record-keeping")[1]
    assert "Verified: hash-chained audit trail" in record and "evidence files" in record


def test_declared_accuracy_met_is_not_flagged(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir, data={"annex_iv": {"expected_accuracy": {"accuracy": 0.5}}})
    (row,) = card.performance["declared"]
    assert not row["flag"] and "declared level met" in row["text"]
    low = card.with_data({"annex_iv": {"expected_accuracy": {"accuracy": 0.99, "calibration_error": 0.001}}})
    flags = {r["metric"]: r["flag"] for r in low.performance["declared"]}
    assert flags == {"accuracy": True, "calibration_error": True}
    assert "⚠" in render_card(low, audit=False)


def test_strict_lists_missing_fields(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir)
    with pytest.raises(CardIncompleteError, match=r"required field\(s\) still empty: model_details.version"):
        render_card(card, strict=True, audit=False)
    with pytest.raises(CardIncompleteError, match=r"annex_iv\.provider"):
        render_card(card, template="eu_ai_act_annex_iv", strict=True, audit=False)
    assert set(ANNEX_IV_REQUIRED) <= set(card.missing_fields((*ANNEX_IV_REQUIRED,)))
    assert "annex_iv.product_illustrations" in ANNEX_IV_REQUIRED  # 1(f)
    assert "annex_iv.design_specifications.compliance_trade_offs" in ANNEX_IV_REQUIRED  # 2(b)'s seventh


def test_unknown_template_and_format(card: ModelCard) -> None:
    with pytest.raises(nm.InvalidParameterError, match=r"No built-in html card template named 'eu_ai_act_annex_iv'"):
        render_card(card, template="eu_ai_act_annex_iv", fmt="html", audit=False)
    with pytest.raises(nm.InvalidParameterError, match=r"Card format must be one of \('md', 'html'\); got 'pdf'"):
        render_card(card, fmt="pdf", audit=False)  # type: ignore[arg-type]
    with pytest.raises(nm.InvalidParameterError, match="does not exist"):
        render_card(card, template="no/such.md.j2", audit=False)


def test_rendering_is_audited(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    text = render_card(ModelCard.from_run(run))
    result = verify(run)
    assert result.ok and result.verified
    last = json.loads((run / "audit.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "card" and last["summary"]["template"] == "default"
    import hashlib

    assert last["results_hash"] == hashlib.sha256(text.encode()).hexdigest()


def test_log_model_card_sends_text_to_reporters(tmp_path: Path) -> None:
    reporter = LocalReporter(tmp_path, run_name="log", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    model = tiny_mlp()
    monitor.run(model, step=0)
    text = log_model_card(monitor, model=model, data={"model_details": {"name": "logged"}})
    monitor.flush()
    # trackers get Markdown without the Hub front matter (their viewers would show it as text) and HTML
    assert (reporter.run_dir / "texts" / "model_card.md").read_text() == text
    assert text.startswith("# Model card: logged")
    html = (reporter.run_dir / "texts" / "model_card.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Model card: logged" in html


def test_card_is_named_after_the_model(tmp_path: Path) -> None:
    from types import SimpleNamespace

    model = tiny_mlp()
    model.config = SimpleNamespace(_name_or_path="sentence-transformers/all-MiniLM-L6-v2")
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    monitor.run(model, step=0)
    assert ModelCard.from_monitor(monitor, model=model).model_details["name"] == \
        "sentence-transformers/all-MiniLM-L6-v2"
