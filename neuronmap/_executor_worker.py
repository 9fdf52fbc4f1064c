"""The background executor's worker process (see :mod:`neuronmap._executor` for the whole design).

What runs in the worker: the analyses that do not need the live model, on the activations
and model output handed off by the training process, with the thread pools capped; and what
the training process sends it: the monitored layers' parameter-free modules. The worker
starts from multiprocessing's fork server (``spawn`` where there is none), never from a
``fork`` of the training process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from neuronmap._failures import run_analysis
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult
from neuronmap.results import Report

if TYPE_CHECKING:
    from neuronmap.probe import ProbeSet
    from neuronmap.results import History

__all__ = ["run_recorded", "structure_modules"]

#: Environment variables the worker's native thread pools read at start.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _ModelStandIn(nn.Module):
    """The model as the worker sees it: the monitored layers' parameter-free modules, no weights."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self._layers = dict(modules)

    def get_submodule(self, target: str) -> nn.Module:
        if target in self._layers:
            return self._layers[target]
        raise AttributeError(f"The analysis worker holds no module {target!r} (it has no model, only activations).")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "This analysis calls the model, but it runs in NeuronMap's background worker, which has "
            "only the activations. Set `needs_model = True` on its class so that it runs on the "
            "training thread."
        )


def structure_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, bytes]:
    """Parameter-free ``torch.nn`` modules among ``layers`` of ``model``, pickled (what the worker may inspect)."""
    out: dict[str, bytes] = {}
    for layer in layers:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            continue
        stateless = next(iter(module.parameters()), None) is None and next(iter(module.buffers()), None) is None
        if stateless and not list(module.children()) and type(module).__module__.startswith("torch.nn"):
            # pickled now, on the training thread: the next capture will attach hooks to the
            # live module while the hand-off thread sends this message
            try:
                out[layer] = pickle.dumps(module)
            except Exception:  # a hook of someone else's (a closure) on the module: leave it out
                continue
    return out


def run_recorded(analysis: Analysis, ctx: AnalysisContext) -> AnalysisResult:
    """Run ``analysis``; a failure becomes a ``failed`` result (the engine's non-strict policy, unwarned)."""
    return run_analysis(analysis, ctx, warn=False)


# ---------------------------------------------------------------------------- worker process
def _context() -> Any:
    """``forkserver`` where the platform has it, else ``spawn``; never plain ``fork``.

    The fork server is a fresh single-threaded process that imports the analyses once (the
    preload), so a worker (and a restart after a crash) starts in tens of milliseconds instead of
    re-importing torch, scikit-learn and matplotlib for seconds.
    """
    global _PRELOAD_SET
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _PRELOAD_SET:
        # '__main__' is the default preload: classes of the user's script are found there
        context.set_forkserver_preload(["__main__", "neuronmap._executor_worker", "neuronmap.analyses"])
        _PRELOAD_SET = True
    return context


_PRELOAD_SET = False


def _cap_threads(threads: int) -> None:
    """Cap every thread pool the analyses may use (torch intra-op, BLAS through threadpoolctl)."""
    import torch

    # for the processes an analysis may start (joblib); this process' pools are capped below
    os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        pass


def _worker_main(jobs: Any, results: Any, init: dict[str, Any]) -> None:
    """The worker process: run the analyses of each message, send the results back, in order."""
    try:
        _serve(jobs, results, init)
    finally:
        # Everything it owes was sent through the pipe: skip the interpreter's teardown (seconds
        # with torch loaded), which close() would otherwise wait for.
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _serve(jobs: Any, results: Any, init: dict[str, Any]) -> None:
    import torch

    from neuronmap.capture.hooks import Activations
    from neuronmap.results import History

    _cap_threads(init["threads"])
    # Figures are drawn off-screen; a GUI backend in a worker without a display would fail.
    os.environ.setdefault("MPLBACKEND", "Agg")
    probe: ProbeSet = init["probe"]
    analyses: list[Analysis] = init["analyses"]
    history: History = History.from_records(init["history"])
    device = torch.device("cpu")
    while True:
        try:
            message = jobs.recv()
        except (EOFError, OSError):
            return  # the main process is gone
        if message is None:
            return
        results.send(("started", message["seq"]))
        ctx = AnalysisContext(
            model=_ModelStandIn({k: pickle.loads(v) for k, v in message["modules"].items()}),
            probe=probe,
            activations=Activations(message["arrays"], reduce=message["reduce"], outputs=message["outputs"]),
            step=message["step"], epoch=message["epoch"], event=message["event"], history=history,
            device=device, batch_size=init["batch_size"], random_state=init["random_state"],
        )
        out = {a.name: run_recorded(a, ctx) for a in analyses}
        history.append(Report(step=message["step"], epoch=message["epoch"], event=message["event"],
                              timestamp=message["started"], results=out))
        states = {a.name: a.state_dict() for a in analyses}
        try:
            results.send(("done", message["seq"], out, states))
        except Exception as err:  # a result that cannot cross the pipe (e.g. a figure holding a lambda)
            text = f"its result could not be sent back from the worker process ({type(err).__name__}: {err})"
            failed = {name: AnalysisResult(name, status="failed", error=text, duration_s=r.duration_s)
                      for name, r in out.items()}
            results.send(("done", message["seq"], failed, states))
