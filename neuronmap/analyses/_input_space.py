"""The continuous input space that gradient-based analyses work in.

Images and tabular features are continuous already. Token ids are not, so text models are
differentiated at the embedding layer: the word-embedding module is called as usual and a
forward hook replaces its output with the embeddings being attributed or optimised. This works
for any model with an ``nn.Embedding`` (it does not rely on an ``inputs_embeds`` argument), and
position/segment embeddings are still added downstream exactly as in a normal forward pass.
Private to :mod:`neuronmap.analyses.attribution` and :mod:`neuronmap.analyses.activation_max`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from neuronmap.capture.forward import output_logits, probe_batches
from neuronmap.errors import InvalidParameterError
from neuronmap.probe import POSITIONAL_KEY, ProbeSet

__all__ = ["InputBatch", "InputSpace", "token_labels"]

TOKEN_KEY = "input_ids"
_WORD = re.compile(r"\w+|[^\w\s]")
#: Keyword inputs that are continuous already (Hugging Face vision and audio models).
CONTINUOUS_KEYS = ("pixel_values", "input_values", "input_features", "inputs_embeds")


@dataclass(frozen=True)
class InputBatch:
    """One probe batch in the continuous input space."""

    #: Continuous inputs ``[b, ...]``: pixels/features, or token embeddings ``[b, t, d]``.
    inputs: torch.Tensor
    #: The other model inputs (token ids, attention mask ...), in :attr:`InputSpace.keys` order.
    extras: tuple[torch.Tensor, ...]
    #: ``[b, t]`` mask of real tokens for text, else ``None``.
    mask: torch.Tensor | None
    #: ``[b, t]`` token ids for text, else ``None``.
    ids: torch.Tensor | None
    #: Index of the batch's first example in the probe set.
    start: int


class InputSpace:
    """How to feed continuous inputs of a probe set to a model.

    Args:
        model: The model.
        probe: The probe set. Integer ``input_ids`` (or an integer positional tensor) make it
            text, differentiated at the word embeddings; a floating positional tensor or a
            ``pixel_values``-like keyword input is used as it is.

    Raises:
        InvalidParameterError: The probe set has no continuous input and no token ids, or a text
            model has no embedding module.
    """

    def __init__(self, model: nn.Module, probe: ProbeSet) -> None:
        self.model = model
        self.probe = probe
        self.layer = "input"
        self._embedding: nn.Embedding | None = None
        self.kind: Literal["embeddings", "tensor"]
        token_key = POSITIONAL_KEY if probe.positional else TOKEN_KEY
        tokens = probe.inputs.get(token_key)
        if tokens is not None and not tokens.is_floating_point():
            self.kind, self._key = "embeddings", token_key
            self._embedding, self.layer = _find_embedding(model)
        elif probe.positional:
            self.kind, self._key = "tensor", POSITIONAL_KEY
        else:
            key = next((k for k in CONTINUOUS_KEYS if k in probe.inputs), None)
            if key is None:
                raise InvalidParameterError(
                    f"Gradient-based analyses need token ids ('input_ids') or a continuous input (a positional "
                    f"tensor or one of {list(CONTINUOUS_KEYS)}); probe set {probe.name!r} has {list(probe.inputs)}."
                )
            self.kind, self._key = "tensor", key
        # Text keeps the ids among the extras: the model is called with them and the hook swaps the embeddings.
        self.keys = [k for k in probe.inputs if self.kind == "embeddings" or k != self._key]

    @property
    def embedding(self) -> nn.Embedding:
        """The word-embedding module of a text model."""
        if self._embedding is None:
            raise InvalidParameterError(
                f"Probe set {self.probe.name!r} is not text; it has no embedding layer."
            )
        return self._embedding

    def batches(self, batch_size: int, device: torch.device | None) -> Iterator[InputBatch]:
        """The probe set in batches, as continuous inputs plus everything else the model takes."""
        start = 0
        for batch in probe_batches(self.probe, batch_size, device):
            extras = tuple(batch[k] for k in self.keys)
            if self.kind == "embeddings":
                ids = batch[self._key]
                mask = batch.get("attention_mask", torch.ones_like(ids))
                with torch.no_grad():
                    inputs = self.embedding(ids).detach()
                yield InputBatch(inputs, extras, mask, ids, start)
            else:
                yield InputBatch(batch[self._key].float(), extras, None, None, start)
            start += len(extras[0]) if extras else len(batch[self._key])

    def call(self, x: torch.Tensor, *extras: torch.Tensor) -> Any:
        """Run the model on continuous inputs ``x`` (with the matching rows of the other inputs)."""
        kwargs = dict(zip(self.keys, extras, strict=True))
        if self.kind == "tensor":
            return (
                self.model(x, **kwargs)
                if self.probe.positional
                else self.model(**kwargs, **{self._key: x})
            )

        def substitute(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return x

        handle = self.embedding.register_forward_hook(substitute)
        try:
            if self.probe.positional:
                return self.model(kwargs.pop(POSITIONAL_KEY), **kwargs)
            return self.model(**kwargs)
        finally:
            handle.remove()

    def logits(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        """The model's scores ``[n]`` or logits ``[n, classes]`` on continuous inputs."""
        output = self.call(x, *extras)
        logits = output_logits(output)
        if logits is None or logits.ndim > 2:
            shape = None if logits is None else tuple(logits.shape)
            raise InvalidParameterError(
                f"{type(self.model).__name__} returns {shape if shape else 'no tensor'} where one score [n] or "
                "logits [n, classes] per example are needed; use a model with a task head (e.g. "
                "AutoModelForSequenceClassification) or wrap it to return scores."
            )
        return logits


def _find_embedding(model: nn.Module) -> tuple[nn.Embedding, str]:
    """The word-embedding module (``get_input_embeddings()`` when the model has it) and its name."""
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(module, nn.Module) and id(module) in names:
        return module, names[id(module)]  # type: ignore[return-value]
    for name, candidate in model.named_modules():
        if isinstance(candidate, nn.Embedding):
            return candidate, name
    raise InvalidParameterError(
        f"The probe set holds token ids but {type(model).__name__} has no nn.Embedding to attribute to "
        "(and no get_input_embeddings()); gradient-based analyses of text need the word-embedding layer."
    )


def token_labels(texts: list[str] | None, ids: list[np.ndarray]) -> list[list[str]]:
    """Token labels: the ``text`` column's words where they align with the tokens, else ``#id``.

    Words align when the text splits into as many words and punctuation marks as there are
    tokens, or two fewer (a ``[CLS] ... [SEP]`` frame, whose ends are labelled by id).
    """
    labels = []
    for i, row in enumerate(ids):
        fallback = [f"#{int(t)}" for t in row]
        words = _WORD.findall(texts[i]) if texts is not None else []
        if len(words) == len(row):
            labels.append(words)
        elif len(words) == len(row) - 2 and len(row) >= 2:
            labels.append([fallback[0], *words, fallback[-1]])
        else:
            labels.append(fallback)
    return labels
