"""Run one job folder's ``spec.yaml`` with ``neuronmap analyze``'s own code.

The local executor runs ``python -m neuronmap.service._job_runner JOB_DIR`` in a child process
(so that cancelling can stop it and a crash cannot take the server down) and reads its standard
output: lines ``NEURONMAP-PROGRESS <fraction> <stage>`` and ``NEURONMAP-RESULT <run folder>``
are protocol, everything else is log. The Ray executor calls :func:`run_job` in a Ray worker.

``python -m neuronmap.service._job_runner --standby`` is the same child started ahead of its
job: it imports the analysis stack (torch, scipy, scikit-learn, NeuronMap's engine: seconds of
CPU) and then waits for one job folder on its standard input (end of input: it exits). The
local executor keeps one such process ready, so a submitted job starts at once.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback
from pathlib import Path

__all__ = ["main", "run_job"]

PROGRESS = "NEURONMAP-PROGRESS"
RESULT = "NEURONMAP-RESULT"


def _progress(fraction: float, stage: str) -> None:
    print(f"{PROGRESS} {fraction:.2f} {stage}", flush=True)


def _run(job_dir: Path) -> Path:
    _progress(0.05, "reading the spec")
    from neuronmap.cli.config import load_config, run_config

    config = load_config(job_dir / "spec.yaml")
    _progress(0.15, "loading the model and probe set, running the analyses")
    run_dir = run_config(config)
    _progress(1.0, "done")
    return Path(run_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process; exit 0 with a result line, or 1 with one error line."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--standby"]:
        import neuronmap.cli.config
        import neuronmap.engine  # noqa: F401 - imported ahead of the job, which is the point

        line = sys.stdin.readline()
        if not line.strip():
            return 0  # the server stopped (or no longer needs this process)
        args = [line.strip()]
    try:
        run_dir = _run(Path(args[0]))
    except Exception as err:  # one line for the job record; the traceback goes to the job's log
        traceback.print_exc()
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 1
    print(f"{RESULT} {run_dir}", flush=True)
    return 0


def run_job(job_dir: str) -> dict[str, str]:
    """Run a job in this process (a Ray worker); returns the run folder and the captured log.

    Raises:
        RuntimeError: The analysis failed; the message is its one-line error plus the log.
    """
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            run_dir = _run(Path(job_dir))
        except Exception as err:
            traceback.print_exc()
            raise RuntimeError(f"{type(err).__name__}: {err}\n--- log ---\n{buffer.getvalue()}") from None
    return {"run_dir": str(run_dir), "log": buffer.getvalue()}


if __name__ == "__main__":
    sys.exit(main())
