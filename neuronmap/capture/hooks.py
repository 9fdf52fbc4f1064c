"""Hook-based activation capture.

:class:`ActivationCapture` attaches forward hooks to the selected modules for the duration
of a ``with`` block and removes them in ``finally``; hooks the user attached are never
touched. Each hook extracts the hidden-state tensor from the module's output (tuples, dicts
and ``ModelOutput`` included), reduces it over tokens on the model's device and copies only
the reduced tensor to the host. :func:`capture_activations` runs a whole probe set through.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from neuronmap.capture.checks import check_device, check_max_bytes
from neuronmap.capture.forward import (
    describe_output,
    extract_tensor,
    forward,
    model_device,
    output_logits,
    probe_batches,
)
from neuronmap.capture.layers import resolve_layers
from neuronmap.capture.reduce import Reduction, check_reduction, reduce_tokens
from neuronmap.errors import (
    CorruptFileError,
    ForwardError,
    InvalidParameterError,
    MemoryBudgetError,
    NeuronMapError,
)
from neuronmap.probe import ProbeSet

# extract_tensor and model_device lived here before capture.forward; they stay importable from here.
__all__ = ["ActivationCapture", "Activations", "capture_activations", "extract_tensor", "model_device", "to_numpy"]

CaptureWhat = Literal["output", "input"]


class Activations(Mapping[str, np.ndarray]):
    """Captured activations: layer name -> array ``[n, d]`` (``[n, t, d]`` for ``reduce="none"``).

    Attributes:
        reduce: The reduction that produced the arrays.
        outputs: The model's top-level output (e.g. logits ``[n, classes]``) when requested.
    """

    def __init__(
        self, arrays: Mapping[str, np.ndarray], *, reduce: str = "mean", outputs: np.ndarray | None = None
    ) -> None:
        self._arrays = dict(arrays)
        self.reduce = reduce
        self.outputs = outputs

    def __getitem__(self, layer: str) -> np.ndarray:
        try:
            return self._arrays[layer]
        except KeyError:
            from neuronmap.errors import LayerNotFoundError

            raise LayerNotFoundError(
                f"Layer {layer!r} was not captured; captured layers: {list(self._arrays)}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in list(self._arrays.items())[:4])
        more = " ..." if len(self._arrays) > 4 else ""
        return f"Activations(reduce={self.reduce!r}, {{{shapes}{more}}})"

    @property
    def layers(self) -> list[str]:
        return list(self._arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` (no pickle): one array per layer plus ``__outputs__``."""
        path = Path(path)
        arrays = {f"layer:{k}": v for k, v in self._arrays.items()}
        if self.outputs is not None:
            arrays["__outputs__"] = self.outputs
        arrays["__reduce__"] = np.frombuffer(self.reduce.encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        """Read activations written by :meth:`save` (``allow_pickle=False``).

        Raises:
            FileNotFoundError: There is no file at ``path``.
            CorruptFileError: The file is truncated, corrupt or not an activations ``.npz``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No activations file at {str(path)!r} (write one with Activations.save or "
                                    "`neuronmap extract`).")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k[len("layer:") :]: data[k] for k in data.files if k.startswith("layer:")}
                outputs = data["__outputs__"] if "__outputs__" in data.files else None
                reduce = bytes(data["__reduce__"]).decode() if "__reduce__" in data.files else "mean"
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, AttributeError) as err:
            # np.load raises whichever its reader hits first; one error type names the file instead
            raise CorruptFileError(
                f"Cannot read activations from {str(path)!r}: it is truncated, corrupt or not an "
                f"activations .npz written by Activations.save ({type(err).__name__}: {err})."
            ) from err
        if not arrays:
            raise CorruptFileError(f"{str(path)!r} holds no activations (no 'layer:' arrays); it is not a file "
                                   "written by Activations.save.")
        return cls(arrays, reduce=reduce, outputs=outputs)


class ActivationCapture:
    """Capture (reduced) activations of selected modules while the block runs.

    Args:
        model: The model to hook.
        layers: Layer selectors (see :func:`neuronmap.capture.resolve_layers`).
        reduce: Reduction over tokens, done on the device (see :func:`reduce_tokens`).
        capture: ``"output"`` (the module's output) or ``"input"`` (its first input).
        output_index: Which element of a tuple output (int) or key of a dict output (str)
            holds the hidden state; by default the first tensor / ``last_hidden_state``.
        dtype: dtype of the stored tensors.
        capture_model_output: Also keep the model's own top-level output (e.g. logits).

    Example:
        >>> import torch
        >>> from neuronmap.testing import tiny_mlp
        >>> model = tiny_mlp()
        >>> with ActivationCapture(model, ["net.*"]) as cap:
        ...     _ = model(torch.randn(4, 8))
        >>> {k: tuple(v.shape) for k, v in cap.collect().items()}["net.0"]
        (4, 16)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        *,
        reduce: Reduction = "mean",
        capture: CaptureWhat = "output",
        output_index: int | str | None = None,
        dtype: torch.dtype = torch.float32,
        capture_model_output: bool = False,
    ) -> None:
        if capture not in ("output", "input"):
            raise InvalidParameterError(f"capture must be 'output' or 'input'; got {capture!r}.")
        self.model = model
        self.layer_names = resolve_layers(model, layers)
        self.reduce = check_reduction(reduce)
        self.capture = capture
        self.output_index = output_index
        self.dtype = dtype
        self.capture_model_output = capture_model_output
        self.attention_mask: torch.Tensor | None = None
        self._store: dict[str, list[torch.Tensor]] = {}
        self._outputs: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- hook plumbing -------------------------------------------------------
    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A snapshot of ``tensor`` (later in-place ops must not change what was captured)."""
        tensor = tensor.detach()
        on_gpu = tensor.device.type == "cuda"
        if tensor.device.type == "cpu" or (on_gpu and self.reduce != "none"):
            # Reduced tensors are small ([batch, d]): on a GPU they stay there until collect(),
            # which moves each layer across in one pinned, non-blocking copy instead of one per batch.
            return tensor.to(self.dtype, copy=True)
        # Token-level tensors leave the GPU batch by batch, so GPU memory stays bounded; the
        # copy to host is itself the snapshot.
        return _to_host(tensor.to(self.dtype), copy=False)

    def _record(self, name: str, module: nn.Module, value: Any) -> None:
        hidden = extract_tensor(value, self.output_index)
        if hidden is None:
            raise InvalidParameterError(
                f"Module {name!r} ({type(module).__name__}) {self.capture} holds no tensor: got "
                f"{describe_output(value)}. Select another layer, or set output_index to the element "
                "(int) or key (str) that holds the hidden state."
            )
        reduced = reduce_tokens(hidden, self.reduce, self.attention_mask)
        self._store.setdefault(name, []).append(self._keep(reduced))

    def _make_hook(self, name: str) -> Any:
        if self.capture == "output":

            def hook(module: nn.Module, args: Any, output: Any) -> None:
                self._record(name, module, output)

            return hook

        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            value = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), kwargs)
            self._record(name, module, value)

        return pre_hook

    def __enter__(self) -> ActivationCapture:
        modules = dict(self.model.named_modules())
        try:
            for name in self.layer_names:
                hook = self._make_hook(name)
                if self.capture == "output":
                    handle = modules[name].register_forward_hook(hook)
                else:
                    handle = modules[name].register_forward_pre_hook(hook, with_kwargs=True)
                self._handles.append(handle)
            if self.capture_model_output:

                def top_hook(module: nn.Module, args: Any, output: Any) -> None:
                    logits = output_logits(output, hidden_fallback=False)
                    if logits is not None:
                        self._outputs.append(self._keep(logits))

                self._handles.append(self.model.register_forward_hook(top_hook))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object attached (and only those)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- results -------------------------------------------------------------
    def clear(self) -> None:
        self._store.clear()
        self._outputs.clear()

    def collect(self) -> dict[str, torch.Tensor]:
        """Concatenate what was captured so far, per layer (padding token axes if needed), on the CPU."""
        _sync_cuda(t for chunks in self._store.values() for t in chunks)  # reduce="none" copies
        joined = {name: _to_host(_concat(chunks), copy=False) for name, chunks in self._store.items()}
        _sync_cuda(joined.values())
        return joined

    def collect_outputs(self) -> torch.Tensor | None:
        if not self._outputs:
            return None
        _sync_cuda(self._outputs)
        joined = _to_host(_concat(self._outputs), copy=False)
        _sync_cuda([joined])
        return joined

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for chunks in self._store.values() for t in chunks)


def _to_host(tensor: torch.Tensor, *, copy: bool) -> torch.Tensor:
    """``tensor`` on the CPU; from a GPU through pinned memory, without waiting for the copy.

    Callers pass the results to :func:`_sync_cuda` before reading them.
    """
    if tensor.device.type == "cuda":
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)
    if tensor.device.type != "cpu":
        return tensor.cpu()
    return tensor.clone() if copy else tensor


def _sync_cuda(tensors: Iterable[torch.Tensor]) -> None:
    """Wait for the non-blocking copies into pinned host memory (one synchronisation in all)."""
    if torch.cuda.is_available() and any(t.is_pinned() for t in tensors):
        torch.cuda.synchronize()


def _concat(chunks: list[torch.Tensor]) -> torch.Tensor:
    if len(chunks) == 1:
        return chunks[0]
    if chunks[0].ndim >= 3 and len({c.shape[1] for c in chunks}) > 1:
        width = max(c.shape[1] for c in chunks)
        chunks = [torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[1])) for c in chunks]
    return torch.cat(chunks)


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run_probe(
    model: nn.Module,
    probe: ProbeSet,
    capture: ActivationCapture,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
) -> None:
    """Run every probe batch through ``model`` inside ``capture`` (eval mode, no grad).

    The model's training mode is restored afterwards; a forward that raises is re-raised as
    :class:`ForwardError` naming the batch, with the original error chained.
    """
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    trim, bar = capture.reduce != "none", _capture_bar if progress else None
    try:
        with capture:
            # Not held in a variable: an exception frees the loop's iterator, which ends its no_grad.
            for i, batch in enumerate(probe_batches(probe, batch_size, device, trim=trim, no_grad=True, progress=bar)):
                capture.attention_mask = batch.get("attention_mask")
                try:
                    forward(model, batch, positional=probe.positional)
                except NeuronMapError:
                    raise
                except Exception as err:
                    shapes = {k: tuple(v.shape) for k, v in batch.items()}
                    raise ForwardError(
                        f"{type(model).__name__} raised {type(err).__name__} on probe batch {i} "
                        f"(inputs {shapes} on {device}): {err}"
                    ) from err
                if i == 0 and max_bytes is not None and capture.reduce == "none":
                    _check_budget(capture, len(probe), len(next(iter(batch.values()))), max_bytes)
    finally:
        model.train(was_training)


def _capture_bar(batches: Iterable[dict[str, torch.Tensor]], total: int) -> Iterable[dict[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, desc="capture", unit="batch")


def _check_budget(capture: ActivationCapture, n: int, first_batch: int, max_bytes: int) -> None:
    estimate = capture.nbytes() / max(first_batch, 1) * n
    if estimate > max_bytes:
        shapes = {k: tuple(v[0].shape[1:]) for k, v in capture._store.items()}
        raise MemoryBudgetError(
            f"reduce='none' would hold about {_format_bytes(estimate)} of activations for {n} "
            f"examples x {len(shapes)} layers (per-example shapes {dict(list(shapes.items())[:3])}"
            f"{' ...' if len(shapes) > 3 else ''}), over max_bytes={_format_bytes(max_bytes)}. "
            "Use reduce='mean', 'first', 'last' or 'max' (one vector per example), select fewer "
            "layers, use a smaller probe set, or raise max_bytes."
        )


def capture_activations(
    model: nn.Module,
    probe: ProbeSet,
    *,
    layers: str | Sequence[str],
    reduce: Reduction = "mean",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    max_bytes: int = 2**30,
    capture: CaptureWhat = "output",
    output_index: int | str | None = None,
    with_outputs: bool = False,
    progress: bool = False,
) -> Activations:
    """Run the probe set through ``model`` and return the (reduced) activations of ``layers``.

    Args:
        model: Any ``nn.Module``; it is put in eval mode and its training mode restored.
        probe: The probe set.
        layers: Layer selectors.
        reduce: ``mean`` | ``first`` | ``last`` | ``max`` | ``none`` (see :func:`reduce_tokens`).
        batch_size: Examples per forward pass.
        device: Where to run; default: the model's device (probe batches are moved there).
        dtype: dtype of the returned arrays.
        max_bytes: Budget for ``reduce="none"``; checked after the first batch from its size.
        capture: ``"output"`` or ``"input"`` of each module.
        output_index: Element/key of tuple/dict outputs holding the hidden state.
        with_outputs: Also return the model's top-level output as ``Activations.outputs``.
        progress: Show a progress bar.

    Returns:
        :class:`Activations` mapping each layer name to a numpy array.

    Raises:
        LayerNotFoundError: A selector matches no module.
        MemoryBudgetError: ``reduce="none"`` would exceed ``max_bytes``.
        ForwardError: The model raised on a probe batch (hooks are removed first).

    Example:
        >>> import torch
        >>> from neuronmap.testing import tiny_mlp
        >>> acts = capture_activations(tiny_mlp(), ProbeSet(torch.randn(10, 8)), layers="net.*")
        >>> acts["net.1"].shape
        (10, 16)
    """
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise InvalidParameterError(f"dtype must be a floating torch dtype; got {dtype}.")
    device = check_device(device)
    max_bytes = check_max_bytes(max_bytes)  # type: ignore[assignment]
    cap = ActivationCapture(
        model,
        layers,
        reduce=reduce,
        capture=capture,
        output_index=output_index,
        dtype=dtype,
        capture_model_output=with_outputs,
    )
    run_probe(model, probe, cap, batch_size=batch_size, device=device, max_bytes=max_bytes, progress=progress)
    as_numpy = {k: to_numpy(v) for k, v in cap.collect().items()}
    outputs = cap.collect_outputs()
    return Activations(
        {name: as_numpy[name] for name in cap.layer_names if name in as_numpy},
        reduce=reduce,
        outputs=None if outputs is None else to_numpy(outputs),
    )


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A captured CPU tensor as a numpy array (half precision widened to float32, which numpy lacks)."""
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()
