"""The calibration table in the docs is the rendering of the last full-size run's results."""

from __future__ import annotations

import json

from calibration._record import RESULTS, doc_table, render_table


def test_docs_table_is_generated_from_the_recorded_results() -> None:
    rows = json.loads(RESULTS.read_text())
    assert rows, "docs/calibration/results.json is empty; run `make calibration`"
    # rows outside their range stay in the table, marked "no" in its Pass column
    assert doc_table() == render_table(rows)
