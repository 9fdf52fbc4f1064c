from __future__ import annotations

import pytest
from torch import nn

from neuronmap.capture import glob_to_regex, module_names, resolve_layers
from neuronmap.errors import InvalidParameterError, LayerNotFoundError
from neuronmap.testing import tiny_bert, tiny_mlp


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    return tiny_bert(layers=2)


def test_star_stays_within_one_component(bert) -> None:
    assert resolve_layers(bert, "encoder.layer.*") == ["encoder.layer.0", "encoder.layer.1"]


def test_double_star_crosses_components(bert) -> None:
    dense = resolve_layers(bert, "encoder.**.dense")
    assert "encoder.layer.0.attention.output.dense" in dense
    assert "encoder.layer.1.intermediate.dense" in dense
    assert all(name.endswith(".dense") and name.startswith("encoder.") for name in dense)
    assert len(dense) == 6  # attention.output, intermediate, output in each of 2 layers


def test_glob_regex_semantics() -> None:
    rx = glob_to_regex("a.**.c")
    assert rx.fullmatch("a.c") and rx.fullmatch("a.b.c") and rx.fullmatch("a.b.b.c")
    assert not rx.fullmatch("a.bc")
    assert glob_to_regex("a.*").fullmatch("a.b") and not glob_to_regex("a.*").fullmatch("a.b.c")


def test_regex_type_and_exact_selectors_keep_model_order(bert) -> None:
    assert resolve_layers(bert, "re:encoder\\.layer\\.\\d+") == ["encoder.layer.0", "encoder.layer.1"]
    assert resolve_layers(bert, "type:BertLayer") == ["encoder.layer.0", "encoder.layer.1"]
    assert resolve_layers(bert, ["encoder.layer.1", "encoder.layer.0", "encoder.layer.1"]) == [
        "encoder.layer.0",
        "encoder.layer.1",
    ]


def test_unknown_layer_suggests_nearest_names_and_counts(bert) -> None:
    with pytest.raises(LayerNotFoundError,
                       match=r"Layer 'encoder.layr.1' not found in BertModel; did you mean 'encoder.layer.1'") as info:
        resolve_layers(bert, "encoder.layr.1")
    assert "modules live under 'encoder'" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_selector_with_nothing_near_lists_top_level_modules(bert) -> None:
    with pytest.raises(LayerNotFoundError,
                       match=r"Selector 'blocks.\*' matched no module of BertModel \(\d+ modules\). "
                             r"Top-level modules: embeddings, encoder, pooler"):
        resolve_layers(bert, "blocks.*")


def test_glob_matching_nothing_suggests_nearest_globs(bert) -> None:
    with pytest.raises(LayerNotFoundError,
                       match=r"Selector 'encoder.layers.\*' matched no module of BertModel \(\d+ modules\); "
                             r"did you mean 'encoder.layer.\*'"):
        resolve_layers(bert, "encoder.layers.*")
    with pytest.raises(LayerNotFoundError, match=r"did you mean 'encoder.layer.\*.output'"):
        resolve_layers(bert, "encoder.layer.*.outptu")
    with pytest.raises(LayerNotFoundError, match=r"did you mean 'type:BertLayer'\?"):
        resolve_layers(bert, "type:BertLayr")


def test_selector_written_for_another_root_suggests_the_rerooted_one(bert) -> None:
    # The HF model's name (bert.encoder.layer.*) used on the inner BertModel: a prefix too many.
    with pytest.raises(LayerNotFoundError,
                       match=r"did you mean 'encoder.layer.\*'\? Selectors are matched against the module given to "
                             r"NeuronMap \(BertModel here; in Lightning the LightningModule\)"):
        resolve_layers(bert, "bert.encoder.layer.*")

    class Wrapper(nn.Module):  # a LightningModule-like wrapper holding the encoder as .model
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_bert(layers=2)

    with pytest.raises(LayerNotFoundError,
                       match=r"Selector 'encoder.layer.\*' matched no module of Wrapper "
                             r".*did you mean 'model.encoder.layer.\*'"):
        resolve_layers(Wrapper(), "encoder.layer.*")
    assert resolve_layers(Wrapper(), "model.encoder.layer.*") == ["model.encoder.layer.0", "model.encoder.layer.1"]


def test_bad_regex_and_empty_selectors() -> None:
    with pytest.raises(InvalidParameterError, match="Invalid regular expression in 're:\\(\\('"):
        resolve_layers(tiny_mlp(), "re:((")
    with pytest.raises(InvalidParameterError, match="layers must name at least one module"):
        resolve_layers(tiny_mlp(), [])


def test_module_names_exclude_root() -> None:
    assert module_names(tiny_mlp())[:2] == ["net", "net.0"]


def test_character_classes_in_globs() -> None:
    model = tiny_mlp()
    assert resolve_layers(model, "net.[13]") == ["net.1", "net.3"]
    assert resolve_layers(model, "net.[!0-2]") == ["net.3", "net.4"]


def test_match_selector_is_the_one_matcher(bert) -> None:
    from neuronmap.capture.layers import match_selector

    names = ["encoder.layer.0", "encoder.layer.0.output", "encoder.layer.1"]
    assert match_selector("encoder.layer.*", names) == ["encoder.layer.0", "encoder.layer.1"]
    assert match_selector("re:.*output", names) == ["encoder.layer.0.output"]
    assert match_selector("encoder.layer.1", names) == ["encoder.layer.1"]
    modules = dict(bert.named_modules())
    assert match_selector("type:BertLayer", names, modules=modules) == ["encoder.layer.0", "encoder.layer.1"]
    assert match_selector("type:BertLayer", names) == []  # without modules a class names nothing
    keys = ["neuronmap/p/enc.1/acc", "neuronmap/p/a/b/acc", "neuronmap/q/acc"]
    assert match_selector("neuronmap/p/*/acc", keys, sep="/") == ["neuronmap/p/enc.1/acc"]
    assert match_selector("neuronmap/**/acc", keys, sep="/") == keys
    with pytest.raises(InvalidParameterError, match="Invalid regular expression"):
        match_selector("re:(", names)


def test_analysis_layers_accept_every_selector_kind(bert) -> None:
    import numpy as np

    from neuronmap.analyses.base import Analysis, AnalysisContext
    from neuronmap.capture.hooks import Activations

    class Names(Analysis):
        def run(self, ctx):  # pragma: no cover - layer_items only
            raise NotImplementedError

    acts = Activations({n: np.zeros((2, 3)) for n in ["embeddings", "encoder.layer.0", "encoder.layer.1"]})
    ctx = AnalysisContext(model=bert, probe=None, activations=acts, step=0)  # type: ignore[arg-type]
    for selector in ("encoder.layer.*", "re:encoder\\.layer\\.\\d", "type:BertLayer"):
        assert [n for n, _ in Names(layers=selector).layer_items(ctx)] == ["encoder.layer.0", "encoder.layer.1"]
