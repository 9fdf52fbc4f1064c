"""Helpers for testing NeuronMap and code built on it: tiny models, a tokenizer, probe sets,
:func:`check_reporter` and :func:`check_analysis`, the conformance checks for reporters and
analyses (yours included).

Everything here builds from configs with random weights; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from neuronmap._check_analysis import check_analysis
from neuronmap._tiny import TinyMLP, tiny_mlp, tiny_probe
from neuronmap.probe import ProbeSet

__all__ = [
    "TinyMLP",
    "WordTokenizer",
    "check_analysis",
    "check_reporter",
    "tiny_bert",
    "tiny_mlp",
    "tiny_probe",
    "tiny_text_probe",
    "tiny_tokenizer",
]


class WordTokenizer:
    """A deterministic whitespace tokenizer with the call signature of a HF tokenizer.

    Ids: 0 = [PAD], 1 = [CLS], 2 = [SEP]; words hash into ``[3, vocab_size)``.
    """

    pad_token_id = 0
    cls_token_id = 1
    sep_token_id = 2

    def __init__(self, vocab_size: int = 100) -> None:
        self.vocab_size = vocab_size

    def token_id(self, word: str) -> int:
        digest = hashlib.sha256(word.lower().encode()).digest()
        return 3 + int.from_bytes(digest[:4], "little") % (self.vocab_size - 3)

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        padding: str | bool = "longest",
        truncation: bool = True,
        max_length: int | None = 128,
        return_tensors: str | None = "pt",
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for text in texts:
            ids = [self.cls_token_id, *(self.token_id(w) for w in re.findall(r"\w+|[^\w\s]", text)), self.sep_token_id]
            if truncation and max_length:
                ids = [*ids[: max_length - 1], self.sep_token_id] if len(ids) > max_length else ids
            rows.append(ids)
        width = max(len(r) for r in rows)
        if padding == "max_length" and max_length:
            width = max_length
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def tiny_tokenizer(vocab_size: int = 100) -> WordTokenizer:
    return WordTokenizer(vocab_size)


def tiny_bert(
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    vocab_size: int = 100,
    num_labels: int | None = None,
    attn_implementation: str = "eager",
    seed: int = 0,
) -> nn.Module:
    """A random-init BERT from a config (``BertModel``, or a classifier with ``num_labels``)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        num_labels=num_labels or 2,
        attn_implementation=attn_implementation,
    )
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    return model.eval()


def tiny_text_probe(n: int = 32, *, seed: int = 0) -> ProbeSet:
    """Short sentences of varying length with sentiment labels and a gender column."""
    rng = np.random.default_rng(seed)
    subjects = ["he", "she", "the man", "the woman", "my brother", "my sister"]
    genders = ["male", "female", "male", "female", "male", "female"]
    words = {1: ["happy", "glad", "great"], 0: ["sad", "angry", "awful"]}
    texts, labels, gender = [], [], []
    for i in range(n):
        s = int(rng.integers(len(subjects)))
        label = int(i % 2)
        extra = " really" * int(rng.integers(0, 3))
        texts.append(f"{subjects[s]} feels{extra} {words[label][int(rng.integers(3))]} .")
        labels.append(label)
        gender.append(genders[s])
    return ProbeSet.from_texts(texts, tiny_tokenizer(), labels=labels, groups={"gender": gender}, name="tiny-text")


# ---------------------------------------------------------------------- reporter conformance
_REPORTER_METHODS: dict[str, tuple[str, ...]] = {
    "log_metrics": ("metrics", "step"),
    "log_params": ("params",),
    "log_figure": ("name", "figure", "step"),
    "log_table": ("name", "dataframe", "step"),
    "log_text": ("name", "text"),
    "log_artifact": ("path",),
    "set_tags": ("tags",),
    "flush": (),
    "close": ("status",),
}

_CARD = """# Model card: tiny-mlp

| layer | CKA vs. step 0 | 95% CI |
|---|---|---|
| net.0 | 0.97 | [0.95, 0.99] |
| net.2 | 0.81 | [0.77, 0.85] |

Non-ASCII and markup stay text: é – ✓ <script>alert(1)</script>
"""


def check_reporter(reporter: Any, *, close: bool = True) -> None:
    """Check that ``reporter`` implements the reporter protocol and takes realistic payloads.

    Calls every method of :class:`~neuronmap.reporters.Reporter` the way the engine does:
    tags, nested params with a 7000-character value, metrics with NaN and statistic
    siblings at steps 0, 10 and then 5 (out of order), a real matplotlib ``Figure``, a
    DataFrame with a named index, NaN and text, a markdown model card with non-ASCII
    characters and markup, an artifact file, a whole ``Report`` through ``log_report`` when
    the reporter has one, then ``flush`` and ``close("FINISHED")``. It also checks that the
    caller's figure, table and metrics are left as they were.

    Args:
        reporter: The reporter under test (unguarded: a failure must show, not be spooled).
        close: Finish with ``close("FINISHED")`` (pass ``False`` to keep using the reporter).

    Raises:
        ReporterError: A method is missing, takes other parameters, raises, or changes
            its input; the message names the method and the call.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import LocalReporter
        >>> check_reporter(LocalReporter(tempfile.mkdtemp(), run_name="check"))
    """
    import inspect
    import math
    import tempfile
    from io import BytesIO
    from pathlib import Path

    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.errors import ReporterError

    kind = type(reporter).__name__
    problems = []
    for method, params in _REPORTER_METHODS.items():
        fn = getattr(reporter, method, None)
        if not callable(fn):
            problems.append(f"{method}() is missing")
            continue
        try:
            inspect.signature(fn).bind(*params)
        except TypeError as err:
            problems.append(f"{method}() cannot be called as {method}({', '.join(params)}): {err}")
        except ValueError:  # builtins without a signature: trust them
            pass
    if problems:
        raise ReporterError(f"check_reporter: {kind} does not implement the Reporter protocol: {'; '.join(problems)}.")

    def call(method: str, *args: Any, shown: str) -> None:
        try:
            getattr(reporter, method)(*args)
        except Exception as err:
            raise ReporterError(
                f"check_reporter: {kind}.{method}({shown}) raised {type(err).__name__}: {err}"
            ) from err

    metrics = {
        "neuronmap/check/net.0/mean": 0.5,
        "neuronmap/check/net.0/mean_ci_low": 0.25,
        "neuronmap/check/net.0/mean_ci_high": 0.75,
        "neuronmap/check/net.2/dead_fraction": float("nan"),
        "neuronmap/check/net.2/cka_p_adj": 0.01,
    }
    before = dict(metrics)
    figure = Figure(figsize=(3, 2))
    axes = figure.add_subplot()
    axes.plot([0, 1, 2], [0.2, 0.5, 0.4], label="net.0")
    axes.set_title("check")
    table = pd.DataFrame(
        {"mean": [0.5, float("nan")], "note": ["ok", "all | dead"]},
        index=pd.Index(["net.0", "net.2"], name="layer"),
    )
    table_before = table.copy()

    call("set_tags", {"neuronmap.check": "true", "probe": "tiny"}, shown="tags")
    call("log_params", {"layers": ["net.0", "net.2"], "schedule": {"every_n_steps": 10}, "reduce": "mean",
                        "long_value": "x" * 7000, "seed": None}, shown="params with a nested dict and a long value")
    for step in (0, 10, 5):
        call("log_metrics", metrics, step, shown=f"5 metrics incl. NaN, step={step}")
    if {k: (None if math.isnan(v) else v) for k, v in metrics.items()} != {
        k: (None if math.isnan(v) else v) for k, v in before.items()
    }:
        raise ReporterError(f"check_reporter: {kind}.log_metrics() changed the caller's metrics dict.")
    call("log_figure", "check/curve", figure, 10, shown="'check/curve', <Figure>, step=10")
    try:
        figure.savefig(BytesIO(), format="png")
    except Exception as err:
        raise ReporterError(f"check_reporter: {kind}.log_figure() left the caller's figure unusable: {err}") from err
    if len(figure.axes) != 1 or not axes.lines:
        raise ReporterError(f"check_reporter: {kind}.log_figure() changed the caller's figure.")
    call("log_table", "check/summary", table, 10, shown="'check/summary', <DataFrame 2x2, index 'layer'>, step=10")
    if not table.equals(table_before) or table.index.name != "layer":
        raise ReporterError(f"check_reporter: {kind}.log_table() changed the caller's DataFrame.")
    call("log_text", "model_card", _CARD, shown="'model_card', <markdown>")
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "check-artifact.json"
        artifact.write_text('{"check": true}\n', encoding="utf-8")
        call("log_artifact", artifact, shown=repr(str(artifact)))
        call("log_artifact", str(artifact), shown="the same path as str")
    if callable(getattr(reporter, "log_report", None)):
        call("log_report", _check_report(), shown="<Report step=20 with metrics, a figure and a table>")
    call("flush", shown="")
    if close:
        call("close", "FINISHED", shown="'FINISHED'")


def _check_report() -> Any:
    """A small but complete :class:`~neuronmap.results.Report` for :func:`check_reporter`."""
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.analyses.base import AnalysisResult
    from neuronmap.results import Report

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().imshow(np.eye(3))
    result = AnalysisResult(
        "check_report",
        metrics={"net.0/mean": 0.4, "net.0/mean_ci_low": 0.3, "net.0/mean_ci_high": 0.5},
        tables={"layers": pd.DataFrame({"layer": ["net.0"], "mean": [0.4]})},
        figures={"heatmap": figure},
        notes=("made by check_reporter",),
    )
    return Report(step=20, epoch=1, event="validation_end", timestamp="2024-01-01T00:00:00+00:00",
                  results={"check_report": result})
