"""Tiny transformers trained in seconds on tasks whose mechanism is known by construction.

* :func:`key_token_bert` — a 2-layer BERT classifier whose label is decided by the token at
  position ``KEY`` (in ``HIGH`` -> class 1). Layer 1's attention output projection is zeroed
  and frozen, so the only way the key token reaches the [CLS] read-out is through the heads
  of layer 0: the known circuit is "a layer-0 head moves position KEY to position 0".
* :func:`copy_gpt2` — a 2-layer GPT-2 whose next token at the last position is the token at
  position ``SOURCE`` (a copy task for causal tracing of a language model).

Both are trained once per test session (``functools.cache``) and never modified by tests.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from neuronmap.probe import ProbeSet
from neuronmap.testing import tiny_bert

SEQ_LEN = 7  # [CLS] t1 t2 t3 t4 t5 [SEP]
KEY = 3
FIRST, LAST = 3, 15  # content tokens are FIRST..LAST-1
HIGH = tuple(range(3, 9))  # key tokens of class 1
LOW = tuple(range(9, 15))  # key tokens of class 0
VOCAB = 16


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these models are tiny, and on a shared machine a second
    intra-op thread makes every step several times slower (oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Module-wide :func:`single_thread` (import it into a test module to apply it there)."""
    with single_thread():
        yield


#: The tiny BERT's attention heads (split at the output projection) and its first blocks.
HEADS = "bert.encoder.layer.*.attention.output.dense"
BLOCKS = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]


def _no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def key_token_ids(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random sequences and their labels (key token in HIGH)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST, LAST, (n, SEQ_LEN), generator=gen)
    ids[:, 0], ids[:, -1] = 1, 2
    return ids, (ids[:, KEY] < LOW[0]).long()


@dataclass(frozen=True)
class KeyTokenTask:
    model: nn.Module
    accuracy: float


@functools.cache
def key_token_bert() -> KeyTokenTask:
    """Train the key-token BERT (about 2 s on one CPU core)."""
    with single_thread():
        return _train_key_token_bert()


def _train_key_token_bert() -> KeyTokenTask:
    model = _no_dropout(tiny_bert(num_labels=2, vocab_size=VOCAB, layers=2, hidden=32, heads=2, seed=0))
    dead = model.bert.encoder.layer[1].attention.output.dense
    with torch.no_grad():
        dead.weight.zero_()
        dead.bias.zero_()
    dead.requires_grad_(False)
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.0)
    model.train()
    for step in range(50):
        ids, y = key_token_ids(128, seed=1000 + step)
        loss = nn.functional.cross_entropy(model(input_ids=ids).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, y = key_token_ids(512, seed=1)
    with torch.no_grad():
        accuracy = float((model(input_ids=ids).logits.argmax(-1) == y).float().mean())
    return KeyTokenTask(model=model, accuracy=accuracy)


def key_token_probe(n: int = 48, *, seed: int = 7) -> ProbeSet:
    """Probe set with labels and a ``high_key`` concept tag (key token in HIGH)."""
    ids, y = key_token_ids(n, seed=seed)
    return ProbeSet(
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        labels=y.numpy(),
        metadata={"high_key": (y == 1).numpy()},
        name="key-token",
    )


def key_token_pairs(n: int = 24, *, seed: int = 11) -> ProbeSet:
    """Clean/corrupted pairs: rows ``2i`` (clean) and ``2i+1`` (same sequence, key flipped).

    The ``corrupted_index`` column points each clean row at its partner (-1 on partners).
    """
    ids, y = key_token_ids(n, seed=seed)
    rng = np.random.default_rng(seed)
    flipped = ids.clone()
    for i in range(n):
        pool = LOW if int(y[i]) == 1 else HIGH
        flipped[i, KEY] = int(rng.choice(pool))
    rows = torch.stack([ids, flipped], dim=1).reshape(2 * n, SEQ_LEN)
    labels = torch.stack([y, 1 - y], dim=1).reshape(-1)
    partner = np.full(2 * n, -1)
    partner[0::2] = np.arange(1, 2 * n, 2)
    return ProbeSet(
        {"input_ids": rows, "attention_mask": torch.ones_like(rows)},
        labels=labels.numpy(),
        metadata={"corrupted_index": partner},
        name="key-token-pairs",
    )


# --------------------------------------------------------------------------- GPT-2 copy task
SOURCE = 1
GPT_LEN = 6
GPT_VOCAB = 20


def copy_ids(n: int, *, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, GPT_VOCAB, (n, GPT_LEN), generator=gen)


@functools.cache
def copy_gpt2() -> nn.Module:
    """A 2-layer GPT-2 trained so that the last position predicts the token at ``SOURCE``."""
    with single_thread():
        return _train_copy_gpt2()


def _train_copy_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=GPT_VOCAB, bos_token_id=0, eos_token_id=0, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    model.train()
    for step in range(100):
        ids = copy_ids(128, seed=2000 + step)
        logits = model(input_ids=ids).logits[:, -1]
        loss = nn.functional.cross_entropy(logits, ids[:, SOURCE])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# --------------------------------------------------------------------------- TCAV: planted direction
PLANTED_DIM = 8


def planted_logit(x: torch.Tensor) -> torch.Tensor:
    """``x_0 + sum_{j>0} x_j^2 - 7``: rises along ``e_0`` everywhere, while its gradient along
    the other axes changes sign from example to example (so random directions score ~0.5)."""
    return x[:, 0] + (x[:, 1:] ** 2).sum(dim=1) - (PLANTED_DIM - 1)


@functools.cache
def planted_mlp() -> nn.Module:
    """A TinyMLP regressed onto :func:`planted_logit` (logit of class 1 minus class 0)."""
    from neuronmap.testing import tiny_mlp

    with single_thread():
        model = tiny_mlp(PLANTED_DIM, 64, 2, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(200):  # R^2 ~ 0.98 on fresh inputs
            x = torch.randn(256, PLANTED_DIM, generator=gen)
            out = model(x)
            loss = ((out[:, 1] - out[:, 0] - planted_logit(x)) ** 2).mean() + (out.sum(dim=1) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def planted_probe(n: int = 120, *, seed: int = 1) -> ProbeSet:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, PLANTED_DIM, generator=gen)
    return ProbeSet(x, labels=(planted_logit(x) > 0).long().numpy(), name="planted")


def concept_set(n: int = 40, *, shift: float, seed: int) -> ProbeSet:
    """Random inputs moved by ``shift`` along the planted direction (``shift=0``: a random concept)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, PLANTED_DIM, generator=gen)
    x[:, 0] += shift
    return ProbeSet(x, name=f"concept-{shift}")
