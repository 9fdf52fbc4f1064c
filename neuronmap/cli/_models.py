"""The one model loader of the command line (``layers``, ``extract``, ``compare``, ``analyze``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuronmap.errors import NeuronMapError

__all__ = ["load_hf_model"]


def load_hf_model(
    model_dir: str | os.PathLike[str], *, attn_implementation: str | None = None, task: str = "base"
) -> tuple[Any, Any]:
    """Load a ``save_pretrained()`` folder offline: ``(model in eval mode, tokenizer or None)``.

    Args:
        model_dir: A folder with ``config.json`` and weights.
        attn_implementation: Passed to ``from_pretrained`` (``"eager"`` for attention maps).
        task: ``"base"`` loads ``AutoModel``; ``"sequence-classification"`` loads
            ``AutoModelForSequenceClassification``.

    Raises:
        NeuronMapError: The folder has no ``config.json``.
        MissingDependencyError: transformers is not installed (names the extra to install).
    """
    from neuronmap._imports import TRANSFORMERS_AVAILABLE

    TRANSFORMERS_AVAILABLE.require("Loading a model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a local folder
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir() or not (path / "config.json").exists():
        raise NeuronMapError(
            f"Model directory {str(model_dir)!r} has no config.json; expected a folder saved with "
            "save_pretrained() (config.json plus weights)."
        )
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    auto = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModel
    model = auto.from_pretrained(path, **kwargs).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer
