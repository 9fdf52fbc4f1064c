"""Helpers for testing NeuronMap and code built on it: tiny models, a tokenizer, probe sets.

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

from neuronmap.probe import ProbeSet

__all__ = [
    "TinyMLP",
    "WordTokenizer",
    "tiny_bert",
    "tiny_mlp",
    "tiny_probe",
    "tiny_text_probe",
    "tiny_tokenizer",
]


class TinyMLP(nn.Module):
    """A small ReLU network: ``net = Sequential(Linear, ReLU, Linear, ReLU, Linear)``."""

    def __init__(self, in_features: int = 8, hidden: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_mlp(in_features: int = 8, hidden: int = 16, classes: int = 2, *, seed: int = 0) -> TinyMLP:
    """A seeded :class:`TinyMLP`."""
    torch.manual_seed(seed)
    return TinyMLP(in_features, hidden, classes)


def tiny_probe(n: int = 64, in_features: int = 8, *, seed: int = 0) -> ProbeSet:
    """A tensor probe set with binary labels and a two-valued ``group`` column."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=gen)
    labels = (x[:, 0] > 0).long().numpy()
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")
    return ProbeSet(x, labels=labels, groups={"group": groups}, name="tiny")


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
                ids = ids[: max_length - 1] + [self.sep_token_id] if len(ids) > max_length else ids
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
    config = BertConfig(
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
