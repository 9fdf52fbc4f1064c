"""Card rendering: Hugging Face metadata read back by huggingface_hub, a self-contained HTML file,
the EU AI Act Annex IV evidence mapping, strict mode, the audit entry and the sandbox."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from compliance_runs import FAIRNESS, append_metrics, copy_run, make_run
from jinja2.exceptions import SecurityError

import neuronmap as nm
from neuronmap.audit import verify
from neuronmap.cards import (
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
    run = make_run(tmp_path_factory.mktemp("render"), "render-run")
    append_metrics(run, {f"neuronmap/fairness/{HOSTILE}/selection_rate": 0.5}, step=2)
    return run


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
    results = {r.metric_type: r for r in hf.data.eval_results}
    rows = [r for r in card.quantitative_analyses["results"] if r["value"] is not None]
    plain = {r["key"] for r in rows if HOSTILE not in r["key"]}
    assert plain <= set(results) and len(results) == len(rows)
    hostile = (set(results) - plain).pop()  # metadata strings are escaped like the body
    assert hostile == ("neuronmap/fairness/&lt;script&gt;alert('x')&lt;/script&gt; &#123;&#123; 7*7 &#125;&#125; "
                       "&#123;&#37; raw &#37;&#125;/selection_rate")
    assert results[DPD].metric_value == pytest.approx(FAIRNESS[DPD])
    assert results[DPD].task_type == "text-classification" and results[DPD].dataset_name == "tiny"
    assert "# Model card:" in hf.text and "| fairness | gender | demographic_parity_difference | 0.08 [0.02, 0.15]" in text


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
        "provider": "ACME", "test_sign_off": [{"name": "A. Auditor", "role": "QA lead", "date": "2025-01-03"}]}})
    text = render_card(card, template="eu_ai_act_annex_iv", audit=False)
    for heading in ("## Evidence map", "## 1. General description", "### 2(g) Validation and testing procedures",
                    "## 3. Monitoring, functioning and control", "## 5. Risk management system",
                    "## 9. Post-market monitoring"):
        assert heading in text
    evidence = text.split("## Evidence map")[1].split("## 1.")[0]
    assert "| 2(g) | potentially discriminatory impacts | automatic: keys `neuronmap/fairness/*`" in evidence
    assert "| 3 | accuracy for groups of persons" in evidence
    section_2g = text.split("### 2(g)")[1].split("## 3.")[0]
    assert f"`{DPD}`" in section_2g and "0.08 [0.02, 0.15] (p_adj = 0.03)" in section_2g
    times = [json.loads(line)["time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(t in section_2g for t in times)  # dated test logs
    assert "name: A. Auditor; role: QA lead; date: 2025-01-03" in section_2g
    section_3 = text.split("## 3.")[1].split("## 4.")[0]
    assert f"`{DPD}`" in section_3 and "neuronmap/representation_bias/net.3/decodability" in section_3
    assert "Provider: ACME" in text
    assert "**NOT PROVIDED**: fill `annex_iv.risk_management`" in text
    assert "verified intact" in text


def test_strict_lists_missing_fields(run_dir: Path) -> None:
    card = ModelCard.from_run(run_dir)
    with pytest.raises(CardIncompleteError, match=r"required field\(s\) still empty: model_details.version"):
        render_card(card, strict=True, audit=False)
    with pytest.raises(CardIncompleteError, match=r"annex_iv\.provider"):
        render_card(card, template="eu_ai_act_annex_iv", strict=True, audit=False)
    assert set(ANNEX_IV_REQUIRED) <= set(card.missing_fields((*ANNEX_IV_REQUIRED,)))


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
    assert result.ok
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
    assert (reporter.run_dir / "texts" / "model_card.md").read_text() == text
    assert "# Model card: logged" in text
