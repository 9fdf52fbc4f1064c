"""``neuronmap replay RUN_DIR``: deliver what a run left in its spool, after its process ended.

A tracker that was down (or hung past ``close_timeout``) when training ended leaves its calls
in ``<run_dir>/spool/<i>-<reporter>/``. Each such folder holds ``reporter.json``, which says
how to rebuild the reporter (see :mod:`neuronmap.reporters._spool`); this command rebuilds
it, delivers the calls in their original order and ends the tracker run with the status the
training process recorded when it closed (``FINISHED``, ``FAILED``, ``KILLED``). A process that
died before it could close (killed, out of memory) recorded none: the run folder's
``run.json`` status is used when it is final, else ``KILLED``.

Exit status: 0 when every spool was delivered (or was empty), 1 when a tracker still does
not answer (nothing is lost: run the command again later), 2 for a bad run folder.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["ReplayOutcome", "replay_run"]

_FINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class ReplayOutcome:
    """What replaying one spool folder did."""

    #: The spool folder.
    folder: Path
    #: ``delivered``, ``empty``, ``unreachable`` (try again later) or ``no-spec`` (replay from Python).
    status: str
    #: Calls delivered.
    delivered: int = 0
    #: Calls still waiting.
    left: int = 0
    #: Status the tracker run was closed with, when it was.
    closed_with: str | None = None
    #: A sentence for people.
    detail: str = ""


def replay_run(run_dir: str | Path, *, retry_after: float = 1.0) -> list[ReplayOutcome]:
    """Deliver every spool of ``run_dir`` into its tracker and close the tracker runs.

    Args:
        run_dir: A run folder with a ``spool/`` folder.
        retry_after: Passed to the :class:`~neuronmap.reporters.SpooledReporter` of each spool.

    Returns:
        One :class:`ReplayOutcome` per spool folder.

    Raises:
        InvalidParameterError: ``run_dir`` is not a run folder.
    """
    from neuronmap.reporters._spool import SpooledReporter, _read_done, _read_jsonl

    root = Path(run_dir)
    if not root.is_dir():
        raise InvalidParameterError(f"Run folder {str(root)!r} does not exist.")
    spool_root = root / "spool"
    if not spool_root.is_dir():
        return []
    outcomes = []
    for folder in sorted(p for p in spool_root.iterdir() if p.is_dir()):
        done = _read_done(folder)
        waiting = [e for e in _read_jsonl(folder / "spool.jsonl") if e["seq"] > done]
        if not waiting:
            outcomes.append(ReplayOutcome(folder, "empty", detail="nothing to deliver"))
            continue
        spec_path = folder / "reporter.json"
        if not spec_path.exists():
            outcomes.append(ReplayOutcome(
                folder, "no-spec", left=len(waiting),
                detail=f"{len(waiting)} call(s) wait, but this reporter cannot describe itself (no reporter.json); "
                       "deliver them from Python: SpooledReporter(reporter, spool_dir=FOLDER).deliver()",
            ))
            continue
        reporter = _rebuild(json.loads(spec_path.read_text(encoding="utf-8")), spec_path)
        recorded = [e["args"][0] for e in waiting if e["method"] == "close" and e.get("args")]
        spooled = SpooledReporter(reporter, spool_dir=folder, retry_after=retry_after)
        if not spooled.deliver():
            outcomes.append(ReplayOutcome(
                folder, "unreachable", delivered=len(waiting) - spooled.pending, left=spooled.pending,
                detail=f"the tracker still does not answer; {spooled.pending} call(s) wait (run this again later)",
            ))
            continue
        status = recorded[-1] if recorded else _fallback_status(root)
        if not recorded:  # the process died before closing: end the run for it
            reporter.close(status)
        outcomes.append(ReplayOutcome(folder, "delivered", delivered=len(waiting), closed_with=status,
                                      detail=f"delivered {len(waiting)} call(s); run closed as {status}"))
    return outcomes


def _rebuild(body: dict[str, Any], path: Path) -> Any:
    try:
        # reporter.json is data, not code: it names an installed class (nothing is loaded from
        # the run folder), and only a class with from_replay_spec() is built from it
        module_name, _, qualname = str(body["class"]).partition(":")
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        spec = body["spec"]
    except (KeyError, ValueError, ImportError, AttributeError) as err:
        raise NeuronMapError(f"{path} does not describe a reporter NeuronMap can rebuild ({err}).") from err
    build = getattr(cls, "from_replay_spec", None)
    if build is None:
        raise NeuronMapError(f"{path} names {body['class']}, which has no from_replay_spec(); replay it from Python.")
    return build(spec)


def _fallback_status(run_dir: Path) -> str:
    from neuronmap._files import read_json

    status = str(read_json(run_dir / "run.json").get("status", ""))
    return status if status in _FINAL else "KILLED"
