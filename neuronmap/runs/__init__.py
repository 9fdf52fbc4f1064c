"""Run folders: the layout NeuronMap writes (:mod:`neuronmap.runs.folder`) and reading a run
back from a folder, a W&B run folder or MLflow (:mod:`neuronmap.runs.source`).

Every reporter that writes a run folder and every reader (the HTML report, model cards, gates,
the CLI, the service) goes through these two modules; :mod:`neuronmap._files` (crash-safe JSON
and JSON lines) is the layer beneath them.
"""

from __future__ import annotations

from neuronmap.runs.folder import (
    CONFIG_FILE,
    DEFAULT_ROOT,
    FAILURES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    REPORT_FILE,
    REPORTS_DIR,
    RUN_FILE,
    TAGS_FILE,
    figure_path,
    iter_reports,
    latest_files,
    latest_report,
    new_run_name,
    read_history,
    read_object,
    safe_name,
    table_path,
    text_path,
)

__all__ = ["CONFIG_FILE", "DEFAULT_ROOT", "FAILURES_FILE", "HISTORY_FILE", "METRICS_FILE", "REPORTS_DIR",
           "REPORT_FILE", "RUN_FILE", "TAGS_FILE", "figure_path", "iter_reports", "latest_files", "latest_report",
           "new_run_name", "read_history", "read_object", "safe_name", "table_path", "text_path"]
