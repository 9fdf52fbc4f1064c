"""Domain presets and probe-set generation (Python and the ``neuronmap generate`` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import neuronmap as nm
from neuronmap.cli import main
from neuronmap.errors import InvalidParameterError
from neuronmap.generate import generate
from neuronmap.presets import PRESETS, bracket_depth, get_preset
from neuronmap.testing import tiny_tokenizer


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_deterministic_labelled_and_tokenizes(name):
    a, b = get_preset(name, seed=3), get_preset(name, seed=3)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.frame["text"].is_unique
    assert a.analyses and a.description and set(a.findings) <= {x.name for x in a.analyses}
    probe = a.probe_set(tiny_tokenizer())
    assert len(probe) == len(a.frame) and probe.name == name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_statistics_settings_reach_every_analysis_and_n_bootstrap_is_deprecated(name):
    preset = PRESETS[name](n_permutations=19, n_resamples=49)
    assert all((a.n_permutations, a.n_resamples) == (19, 49) for a in preset.analyses)
    with pytest.warns(FutureWarning, match=rf"presets.{name}\(n_bootstrap=...\) is deprecated .* use n_resamples="):
        old = PRESETS[name](n_bootstrap=49)
    assert all(a.n_resamples == 49 for a in old.analyses)


def test_code_preset_columns_and_balance():
    df = nm.presets.code(n=120).frame
    assert df["construct"].value_counts().to_dict() == {c: 30 for c in ("loop", "conditional", "definition", "call")}
    assert set(df["language"]) == {"python", "javascript", "c"}
    assert df["bracket_depth"].between(0, 8).all() and df["bracket_depth"].nunique() >= 3
    assert bracket_depth("if (a[(b)]) {") == 3


def test_math_preset_results_are_right_and_half_are_shown_wrong():
    df = nm.presets.math(n=90).frame
    ops = {"+": np.add, "-": np.subtract, "*": np.multiply}
    for row in df.itertuples():
        assert ops[row.operator](row.a, row.b) == row.result
        assert (row.shown_result == row.result) == (row.correct == "true")
        assert str(row.shown_result) in row.text
    assert (df["correct"] == "true").mean() == pytest.approx(0.5, abs=0.02)


def test_multilingual_preset_is_parallel():
    df = nm.presets.multilingual(n=12).frame
    assert sorted(df["language"].unique()) == ["de", "en", "es", "fr", "it"]
    assert (df.groupby("pair_id").size() == 5).all() and df["pair_id"].nunique() == 12


def test_temporal_and_world_presets():
    df = nm.presets.temporal(n=60).frame
    dates, orders = df[df.kind == "date"], df[df.kind == "order"]
    assert all(str(int(y)) in t for y, t in zip(dates.year, dates.text, strict=True))
    assert set(orders.order_true) == {"true", "false"} and orders.year.isna().all()
    places = nm.presets.places().frame
    assert len(places) >= 200 and places.latitude.between(-90, 90).all() and places.longitude.between(-180, 180).all()
    assert places.region.nunique() == 6
    ev = nm.presets.events().frame
    assert len(ev) >= 100 and ev.year.is_monotonic_increasing is False and ev.period.nunique() == 6


def test_generate_from_a_template_file_fills_placeholders_and_attributes(tmp_path: Path):
    spec = tmp_path / "cities.yaml"
    spec.write_text(
        "name: cities\nlabel: country\ngroups: [gender]\n"
        "templates:\n  - '{{ person }} lives in {{ city }}.'\n"
        "  - {text: '{{ person }} moved to {{ city }}.', tense: past}\n"
        "values:\n  person: [{value: Maria, gender: female}, {value: John, gender: male}, "
        "{value: Ana, gender: female}]\n"
        "  city: [{value: Paris, country: France}, {value: Lima, country: Peru}, {value: Oslo, country: Norway}]\n"
        "columns:\n  country: '{{ city.country }}'\n  gender: '{{ person.gender }}'\n", encoding="utf-8")  # fmt: skip
    df = generate(spec, n=12, seed=0)
    assert len(df) == 12 and df["text"].is_unique
    assert (df["template_id"].value_counts() == 6).all()
    for row in df.itertuples():
        assert row.text.startswith(row.person) and row.city in row.text
        assert row.label == row.country == row.city_country
    pd.testing.assert_frame_equal(df, generate(spec, n=12, seed=0))
    probe = nm.ProbeSet.from_pandas(df, tokenizer=tiny_tokenizer(), group_columns=["gender"])
    assert probe.group_columns == ["gender"] and probe.labels is not None
    assert set(probe.labels) <= {"France", "Peru", "Norway"}


def test_generate_errors_name_the_problem():
    with pytest.raises(InvalidParameterError, match="failed to render: 'cty' is undefined"):
        generate({"templates": ["{{ cty }}"], "values": {"city": ["Paris"]}}, n=1)
    with pytest.raises(InvalidParameterError, match="'templates' must be a non-empty list"):
        generate({"values": {"a": ["b"]}}, n=1)
    with pytest.warns(UserWarning, match="only 2 distinct texts"):
        assert len(generate({"templates": ["{{ a }}"], "values": {"a": ["x", "y"]}}, n=5)) == 2
    with pytest.raises(InvalidParameterError, match="Unknown preset 'chemistry'"):
        get_preset("chemistry")


def test_generate_command_writes_parquet_and_text(tmp_path: Path, capsys):
    out = tmp_path / "probes.parquet"
    assert main(["generate", "--preset", "math", "--n", "30", "--seed", "1", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    pd.testing.assert_frame_equal(df, nm.presets.math(n=30, seed=1).frame, check_dtype=False)
    assert "Wrote 30 probes with labels" in capsys.readouterr().out
    txt = tmp_path / "probes.txt"
    assert main(["generate", "--preset", "code", "--n", "20", "--out", str(txt)]) == 0
    assert len(txt.read_text(encoding="utf-8").splitlines()) == 20
    assert main(["generate", "--out", str(txt)]) == 2
    assert "exactly one of --preset NAME or --template FILE" in capsys.readouterr().err
