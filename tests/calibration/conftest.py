"""Calibration suite: seeded simulations of every p-value and interval NeuronMap reports.

Each test runs at two sizes. The *fast* size runs in ``make test`` (a few dozen replications,
with tolerances that are honest for that size: the binomial 99 % band of the observed rate).
The *full* size is marked ``calibration`` and skipped unless pytest gets ``--calibration``
(``make calibration``); its measured rates are written to ``docs/calibration/results.json``
and rendered into the table of ``docs/statistics-and-similarity.md`` (see ``_record.py``).
"""

from __future__ import annotations

import pytest
from calibration._record import RECORDER, full_size


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--calibration", action="store_true", default=False,
        help="run the full-size calibration simulations (tests marked 'calibration') and regenerate "
             "the calibration table of docs/statistics-and-similarity.md",
    )  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_size(config):
        return
    skip = pytest.mark.skip(reason="full-size calibration: run with --calibration (make calibration)")
    for item in items:
        if item.get_closest_marker("calibration") is not None:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if full_size(session.config) and exitstatus in (0, 1):
        RECORDER.write_full()


@pytest.fixture(params=["fast", pytest.param("full", marks=pytest.mark.calibration)])
def size(request: pytest.FixtureRequest) -> str:
    """``"fast"`` (in ``make test``) or ``"full"`` (``make calibration``)."""
    return str(request.param)
