"""NeuronMap as a service: ``neuronmap serve`` (REST API, dashboard, analysis jobs).

Needs the ``service`` extra (``pip install "neuronmap[service]"``): FastAPI, uvicorn, httpx,
plotly (bundled offline in the dashboard) and Ray (for ``--executor ray``). Nothing here is
imported by ``import neuronmap``, and the names below load on first access so that
``neuronmap --help`` (which registers ``serve``) stays light.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from neuronmap.service import ServiceConfig, create_app
    >>> root = Path(tempfile.mkdtemp())
    >>> app = create_app(ServiceConfig(runs=root / "runs", tokens=root / "tokens.json"))
    >>> app.title
    'NeuronMap'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronmap.service.app import ServiceConfig, create_app
    from neuronmap.service.tokens import TokenStore

__all__ = ["ServiceConfig", "TokenStore", "create_app"]

_LAZY = {"ServiceConfig": "neuronmap.service.app", "create_app": "neuronmap.service.app",
         "TokenStore": "neuronmap.service.tokens"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'neuronmap.service' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
