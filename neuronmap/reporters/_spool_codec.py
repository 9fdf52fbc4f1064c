"""How a spooled call's arguments are written: JSON, with files beside it (no pickle).

Part of the spool (:mod:`neuronmap.reporters._spool`, whose docstring documents the folder
layout): figures become PNG files, tables CSV files, paths copies, reports JSON with their
figures and tables as files; non-finite floats are ``{"$float": "nan"}`` so every line is
strict JSON. Decoding gives back objects a reporter accepts: a figure that shows the PNG, the
DataFrame read from its CSV.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap.reporters.base import render_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__: list[str] = []


class _Codec:
    """JSON encoding of call arguments; files under ``<spool_dir>/files/<seq>/``."""

    def __init__(self, spool_dir: Path, seq: int, *, folder: str = "spool") -> None:
        self.root = spool_dir
        # rejected calls keep their files apart: "files/" is emptied once the spool drains
        self.folder = Path("files" if folder == "spool" else f"{folder}-files") / str(seq)
        self._count = 0

    def _new_file(self, suffix: str) -> tuple[Path, str]:
        self._count += 1
        rel = self.folder / f"{self._count}{suffix}"
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        return self.root / rel, rel.as_posix()

    def encode_args(self, args: Sequence[Any]) -> list[Any]:
        return [self.encode(a) for a in args]

    def decode_args(self, args: Sequence[Any]) -> list[Any]:
        return [self.decode(a) for a in args]

    def encode(self, value: Any) -> Any:
        import pandas as pd

        from neuronmap.results import Report

        if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": str(value)}
        if isinstance(value, Mapping):
            return {str(k): self.encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.encode(v) for v in value]
        if isinstance(value, Path):
            if not value.exists():  # kept as a name: the tracker will reject it, not the spool
                return {"$missing": str(value)}
            path, rel = self._new_file("")
            path.mkdir()
            dest = path / value.name
            shutil.copytree(value, dest) if value.is_dir() else shutil.copy2(value, dest)
            return {"$path": f"{rel}/{value.name}"}
        if isinstance(value, pd.DataFrame):
            path, rel = self._new_file(".csv")
            keep_index = not isinstance(value.index, pd.RangeIndex)
            value.to_csv(path, index=keep_index)
            return {"$table": rel, "index": keep_index}
        if isinstance(value, Report):
            return {"$report": self._encode_report(value)}
        if hasattr(value, "savefig"):
            path, rel = self._new_file(".png")
            # fixed geometry (no bbox cropping), so the PNG is exactly dpi * size pixels
            path.write_bytes(render_png(value, dpi=value.dpi, tight=False))
            return {"$figure": rel, "dpi": float(value.dpi)}
        if hasattr(value, "item"):  # numpy / torch scalars
            return self.encode(value.item())
        return str(value)

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$float" in value:
            return float(value["$float"])
        if "$path" in value:
            return self.root / value["$path"]
        if "$missing" in value:
            return Path(value["$missing"])
        if "$table" in value:
            import pandas as pd

            return pd.read_csv(self.root / value["$table"], index_col=0 if value["index"] else None)
        if "$figure" in value:
            return _figure_from_png(self.root / value["$figure"], dpi=value["dpi"])
        if "$report" in value:
            return self._decode_report(value["$report"])
        return {k: self.decode(v) for k, v in value.items()}

    def _encode_report(self, report: Report) -> dict[str, Any]:
        return {
            "step": report.step, "epoch": report.epoch, "event": report.event, "timestamp": report.timestamp,
            "probe_fingerprint": report.probe_fingerprint, "timings": self.encode(dict(report.timings)),
            "results": {
                name: {
                    "metrics": self.encode(dict(r.metrics)), "status": r.status, "error": r.error,
                    "notes": list(r.notes), "duration_s": r.duration_s,
                    "tables": {k: self.encode(t) for k, t in r.tables.items()},
                    "figures": {k: self.encode(f) for k, f in r.figures.items()},
                }
                for name, r in report.results.items()
            },
        }

    def _decode_report(self, data: Mapping[str, Any]) -> Report:
        from neuronmap.analyses.base import AnalysisResult
        from neuronmap.results import Report

        results = {
            name: AnalysisResult(
                name, metrics=self.decode(r["metrics"]), status=r["status"], error=r["error"],
                notes=tuple(r["notes"]), duration_s=r["duration_s"],
                tables={k: self.decode(t) for k, t in r["tables"].items()},
                figures={k: self.decode(f) for k, f in r["figures"].items()},
            )
            for name, r in data["results"].items()
        }
        return Report(
            step=data["step"], epoch=data["epoch"], event=data["event"], timestamp=data["timestamp"],
            results=results, probe_fingerprint=data["probe_fingerprint"], timings=self.decode(data["timings"]),
        )


def _figure_from_png(path: Path, *, dpi: float) -> Figure:
    """A figure of the PNG's exact pixel size that shows the PNG (no pyplot involved)."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    image = imread(path)
    height, width = image.shape[:2]
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.imshow(image, interpolation="none")
    axes.set_axis_off()
    return figure
