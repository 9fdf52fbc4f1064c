"""Lazy, cached availability flags for optional dependencies.

Each flag answers ``bool(flag)`` without importing the package (``importlib.util.find_spec``
only), so ``import neuronmap`` stays light; ``str(flag)`` is the install hint naming our
extra, in the manner of Lightning's ``RequirementCache``.

Example:
    >>> from neuronmap._imports import MLFLOW_AVAILABLE
    >>> if not MLFLOW_AVAILABLE:
    ...     print(MLFLOW_AVAILABLE)  # doctest: +SKIP
    No module named 'mlflow'. Install it with: pip install "neuronmap[mlflow]"
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cached_property
from types import ModuleType

from neuronmap.errors import MissingDependencyError

__all__ = [
    "CAPTUM_AVAILABLE",
    "CRYPTOGRAPHY_AVAILABLE",
    "LIGHTNING_AVAILABLE",
    "MLFLOW_AVAILABLE",
    "PLOTLY_AVAILABLE",
    "PYTORCH_LIGHTNING_AVAILABLE",
    "TENSORBOARD_AVAILABLE",
    "TRANSFORMERS_AVAILABLE",
    "UMAP_AVAILABLE",
    "WANDB_AVAILABLE",
    "RequirementCache",
]


class RequirementCache:
    """Whether an optional module can be imported, checked once and cached.

    Args:
        module: Top-level module name, e.g. ``"mlflow"``.
        extra: The ``neuronmap`` extra that installs it, e.g. ``"mlflow"``.
    """

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra

    @cached_property
    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def __bool__(self) -> bool:
        return self.available

    def __str__(self) -> str:
        if self.available:
            return f"'{self.module}' is installed."
        return f"No module named '{self.module}'. Install it with: pip install \"neuronmap[{self.extra}]\""

    def __repr__(self) -> str:
        return f"RequirementCache(module={self.module!r}, extra={self.extra!r}, available={self.available})"

    def require(self, feature: str | None = None) -> ModuleType:
        """Import and return the module, or raise an error naming the extra to install.

        Args:
            feature: What needs the module, for the message (e.g. ``"MLflowReporter"``).

        Raises:
            MissingDependencyError: The module is not installed.
        """
        if not self.available:
            prefix = f"{feature} needs '{self.module}'. " if feature else ""
            raise MissingDependencyError(prefix + str(self))
        return importlib.import_module(self.module)


LIGHTNING_AVAILABLE = RequirementCache("lightning", "lightning")
PYTORCH_LIGHTNING_AVAILABLE = RequirementCache("pytorch_lightning", "lightning")
TRANSFORMERS_AVAILABLE = RequirementCache("transformers", "hf")
MLFLOW_AVAILABLE = RequirementCache("mlflow", "mlflow")
WANDB_AVAILABLE = RequirementCache("wandb", "wandb")
TENSORBOARD_AVAILABLE = RequirementCache("tensorboard", "tensorboard")
CRYPTOGRAPHY_AVAILABLE = RequirementCache("cryptography", "audit")
UMAP_AVAILABLE = RequirementCache("umap", "viz")
PLOTLY_AVAILABLE = RequirementCache("plotly", "viz")
CAPTUM_AVAILABLE = RequirementCache("captum", "captum")
