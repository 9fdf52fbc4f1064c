"""Probe sets: the fixed, deterministic inputs NeuronMap runs the model on at every analysis.

A :class:`ProbeSet` holds model inputs (a mapping of tensors whose first dimension is the
example axis), per-example labels, sensitive-attribute columns and free metadata (concept
tags, template ids, the raw text) in one pandas frame. Because it is fixed, numbers computed
at different training steps are comparable, and :meth:`ProbeSet.fingerprint` identifies it in
the audit trail.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from neuronmap.errors import CorruptFileError, InvalidParameterError, ProbeSetError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

__all__ = ["ProbeSet"]

#: Key under which a bare tensor input is stored; such inputs are passed positionally.
POSITIONAL_KEY = "input"
LABEL_COLUMN = "label"
_FORMAT_VERSION = 1


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ProbeSetError(
            f"Probe-set input {name!r} must be a tensor or array-like; got {type(value).__name__}."
        ) from err


def _column(name: str, values: Any, n: int) -> np.ndarray:
    try:
        arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    except ValueError:  # ragged nesting (lists of different lengths): keep the cells, reported below
        arr = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            arr[i] = value
    if arr.ndim != 1:
        arr = arr.reshape(len(arr), -1)
        if arr.shape[1] != 1:
            raise ProbeSetError(f"{name} must be one value per example; got shape {tuple(arr.shape)}.")
        arr = arr[:, 0]
    if len(arr) != n:
        raise ProbeSetError(
            f"{name} has {len(arr)} entries but the probe set has {n} inputs; "
            "they must have one entry per input."
        )
    bad = _first_non_scalar(arr)
    if bad is not None:
        raise ProbeSetError(f"{name} must hold one scalar (number, string, bool, None) per example; row {bad[0]} "
                            f"holds a {bad[1]}. Store such values as one column per element, or as a string.")
    return arr


def _first_non_scalar(arr: np.ndarray) -> tuple[int, str] | None:
    """``(row, type name)`` of the first list/dict/array cell: the fingerprint and the saved
    format hold one scalar per cell, so such a column would fail later, at the first scheduled run."""
    if arr.dtype != object:
        return None
    for row, value in enumerate(arr):
        if not pd.api.types.is_scalar(value):
            return row, type(value).__name__
    return None


class ProbeSet:
    """A fixed set of model inputs with labels, sensitive groups and metadata.

    Args:
        inputs: A tensor (passed to the model positionally) or a mapping of tensors passed as
            keyword arguments (``input_ids``, ``attention_mask`` ...). The first dimension of
            every tensor is the example axis.
        labels: One label per example (class index or name), or ``None``.
        groups: Sensitive-attribute columns, e.g. ``{"gender": [...], "race": [...]}``.
        metadata: Free per-example columns (concept tags, template ids, text), a mapping of
            columns or a DataFrame.
        name: A short name for reports.
        description: Free text for the model card (what the set is, where it comes from).

    Raises:
        ProbeSetError: The set is empty or a column's length differs from the number of inputs.

    Example:
        >>> import torch
        >>> probe = ProbeSet.from_tensors(torch.randn(8, 4), labels=[0, 1] * 4,
        ...                               groups={"site": ["a"] * 4 + ["b"] * 4})
        >>> len(probe), probe.group_columns
        (8, ['site'])
    """

    def __init__(
        self,
        inputs: torch.Tensor | Mapping[str, Any],
        *,
        labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
        groups: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        metadata: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        name: str = "probe",
        description: str = "",
    ) -> None:
        if isinstance(inputs, Mapping):
            if not inputs:
                raise ProbeSetError("ProbeSet got an empty mapping of inputs; it needs at least one tensor.")
            self._positional = False
            tensors = {str(k): _as_tensor(str(k), v) for k, v in inputs.items()}
        else:
            self._positional = True
            tensors = {POSITIONAL_KEY: _as_tensor(POSITIONAL_KEY, inputs)}
        sizes = {k: (int(t.shape[0]) if t.ndim else 0) for k, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ProbeSetError(f"Probe-set inputs disagree on the number of examples: {sizes}.")
        n = next(iter(sizes.values()))
        if n == 0:
            raise ProbeSetError(
                "ProbeSet is empty: got 0 examples. A probe set needs at least one example "
                "(analyses with statistics need dozens)."
            )
        self.inputs: dict[str, torch.Tensor] = tensors
        self.name = name
        self.description = description

        frame = pd.DataFrame(index=pd.RangeIndex(n))
        group_columns: list[str] = []
        if metadata is not None:
            meta = metadata if isinstance(metadata, pd.DataFrame) else dict(metadata)
            for col in meta:
                frame[str(col)] = _column(f"metadata column {col!r}", meta[col], n)
        if groups is not None:
            grp = groups if isinstance(groups, pd.DataFrame) else dict(groups)
            for col in grp:
                frame[str(col)] = _column(f"group column {col!r}", grp[col], n)
                group_columns.append(str(col))
        if labels is not None:
            frame[LABEL_COLUMN] = _column("labels", labels, n)
        self.frame: pd.DataFrame = frame
        self.group_columns: list[str] = group_columns

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_tensors(cls, inputs: torch.Tensor | Mapping[str, Any], **kwargs: Any) -> ProbeSet:
        """Build a probe set from a tensor or a mapping of tensors (``input_ids`` ...).

        Keyword arguments are those of :class:`ProbeSet`.
        """
        return cls(inputs, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        tokenizer: Any,
        *,
        labels: Sequence[Any] | None = None,
        groups: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        metadata: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        max_length: int = 128,
        name: str = "probe",
        description: str = "",
    ) -> ProbeSet:
        """Tokenize ``texts`` once, padded to the longest text (at most ``max_length``).

        The texts are kept in the ``text`` metadata column (counterfactual analyses edit them).

        Args:
            texts: The sentences.
            tokenizer: A Hugging Face tokenizer (anything called like one that returns
                ``input_ids`` and ``attention_mask``).
            max_length: Truncation length in tokens.

        Example:
            >>> from neuronmap.testing import tiny_tokenizer
            >>> probe = ProbeSet.from_texts(["a b", "c"], tiny_tokenizer(), labels=[1, 0])
            >>> sorted(probe.inputs)
            ['attention_mask', 'input_ids']
        """
        texts = [str(t) for t in texts]
        if not texts:
            raise ProbeSetError("ProbeSet.from_texts got no texts; it needs at least one.")
        if max_length < 1:
            raise InvalidParameterError(f"max_length must be a positive int; got {max_length}.")
        encoded = tokenizer(
            texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        )
        inputs = {k: v for k, v in dict(encoded).items() if isinstance(v, torch.Tensor)}
        if metadata is None:
            meta = pd.DataFrame(index=pd.RangeIndex(len(texts)))
        else:
            meta = pd.DataFrame(dict(metadata) if isinstance(metadata, Mapping) else metadata)
            meta = meta.reset_index(drop=True)
        if "text" not in meta:
            meta.insert(0, "text", texts)
        return cls(inputs, labels=labels, groups=groups, metadata=meta, name=name, description=description)

    @classmethod
    def from_pandas(
        cls,
        df: pd.DataFrame,
        *,
        text_column: str = "text",
        tokenizer: Any,
        label_column: str | None = "label",
        group_columns: Sequence[str] = (),
        max_length: int = 128,
        name: str = "probe",
        description: str = "",
    ) -> ProbeSet:
        """Build a text probe set from a DataFrame; other columns become metadata.

        Raises:
            ProbeSetError: A named column is missing (the message lists the columns there are), or
                a column other than the text holds lists, dicts or arrays (the message names them).
        """
        needed = [text_column, *group_columns] + ([label_column] if label_column else [])
        missing = [c for c in needed if c not in df.columns]
        if label_column == "label" and "label" in missing and label_column not in df.columns:
            missing.remove("label")
            label_column = None
        if missing:
            raise ProbeSetError(
                f"Column(s) {missing} not found in the DataFrame; it has {list(df.columns)}."
            )
        df = df.reset_index(drop=True)
        found = {str(c): _first_non_scalar(df[c].to_numpy()) for c in df.columns if c != text_column}
        bad = {c: f"row {r[0]}: {r[1]}" for c, r in found.items() if r is not None}
        if bad:
            raise ProbeSetError(
                f"Column(s) {sorted(bad)} of the DataFrame hold non-scalar values ({bad}); every column but the "
                "text must hold one number, string, bool or None per row. Split them into one column per "
                "element or store them as strings."
            )
        used = {text_column, *group_columns} | ({label_column} if label_column else set())
        meta = df[[c for c in df.columns if c not in used]].copy()
        meta.insert(0, "text", df[text_column].astype(str).to_numpy())
        return cls.from_texts(
            df[text_column].astype(str).tolist(),
            tokenizer,
            labels=df[label_column].to_numpy() if label_column else None,
            groups={c: df[c].to_numpy() for c in group_columns},
            metadata=meta,
            max_length=max_length,
            name=name,
            description=description,
        )

    @classmethod
    def from_dataloader(
        cls, loader: DataLoader[Any] | Iterable[Any], *, max_examples: int | None = None, **kwargs: Any
    ) -> ProbeSet:
        """Collect the first ``max_examples`` examples of a data loader, in its order.

        Batches may be a tensor, a ``(inputs, labels)`` tuple or a mapping (a ``labels`` or
        ``label`` key becomes the labels). Use a loader without shuffling so the set is fixed.
        """
        if max_examples is not None and max_examples < 1:
            raise InvalidParameterError(f"max_examples must be a positive int or None; got {max_examples}.")
        chunks: dict[str, list[torch.Tensor]] = {}
        label_chunks: list[torch.Tensor] = []
        positional = True
        count = 0
        for batch in loader:
            labels = None
            if isinstance(batch, Mapping):
                positional = False
                batch = dict(batch)
                labels = batch.pop("labels", batch.pop("label", None))
                parts = {k: _as_tensor(k, v) for k, v in batch.items()}
            elif isinstance(batch, (tuple, list)):
                parts = {POSITIONAL_KEY: _as_tensor(POSITIONAL_KEY, batch[0])}
                labels = batch[1] if len(batch) > 1 else None
            else:
                parts = {POSITIONAL_KEY: _as_tensor(POSITIONAL_KEY, batch)}
            take = len(next(iter(parts.values())))
            if max_examples is not None:
                take = min(take, max_examples - count)
            for k, v in parts.items():
                chunks.setdefault(k, []).append(v[:take])
            if labels is not None:
                label_chunks.append(_as_tensor("labels", labels)[:take])
            count += take
            if max_examples is not None and count >= max_examples:
                break
        if count == 0:
            raise ProbeSetError("ProbeSet.from_dataloader got an empty loader; it needs at least one example.")
        inputs = {k: torch.cat(v) for k, v in chunks.items()}
        if label_chunks and "labels" not in kwargs:
            kwargs["labels"] = torch.cat(label_chunks)
        return cls(inputs if not positional else inputs[POSITIONAL_KEY], **kwargs)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.inputs.items()}
        return (
            f"ProbeSet(name={self.name!r}, n={len(self)}, inputs={shapes}, "
            f"labels={self.has_labels}, groups={self.group_columns})"
        )

    @property
    def positional(self) -> bool:
        """Whether the model takes the input positionally (``model(x)``) or by keyword."""
        return self._positional

    @property
    def has_labels(self) -> bool:
        return LABEL_COLUMN in self.frame

    @property
    def labels(self) -> np.ndarray | None:
        """The labels as an array, or ``None`` when the set has none."""
        return self.frame[LABEL_COLUMN].to_numpy() if self.has_labels else None

    @property
    def groups(self) -> pd.DataFrame:
        """The sensitive-attribute columns."""
        return self.frame[self.group_columns]

    @property
    def texts(self) -> list[str] | None:
        return self.frame["text"].astype(str).tolist() if "text" in self.frame else None

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return self.inputs.get("attention_mask")

    def column(self, name: str) -> np.ndarray:
        """One frame column by name (``label``, a group or a metadata column).

        Raises:
            ProbeSetError: No such column; the message lists the columns there are.
        """
        if name not in self.frame:
            raise ProbeSetError(
                f"Column {name!r} not found in probe set {self.name!r}; it has {list(self.frame.columns)}."
            )
        return self.frame[name].to_numpy()

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> ProbeSet:
        """A new probe set with the selected examples (in the given order)."""
        idx = np.arange(len(self))[indices] if isinstance(indices, slice) else np.asarray(indices, dtype=int)
        tidx = torch.as_tensor(idx, dtype=torch.long)
        new = object.__new__(ProbeSet)
        new.inputs = {k: v.index_select(0, tidx) for k, v in self.inputs.items()}
        new._positional = self._positional
        new.frame = self.frame.iloc[idx].reset_index(drop=True)
        new.group_columns = list(self.group_columns)
        new.name, new.description = self.name, self.description
        if len(new.frame) == 0:
            raise ProbeSetError("The selection is empty: a probe set needs at least one example.")
        return new

    def shard(self, rank: int, world_size: int) -> ProbeSet:
        """The contiguous slice of examples that rank ``rank`` of ``world_size`` processes."""
        bounds = np.linspace(0, len(self), world_size + 1).astype(int)
        return self.subset(slice(bounds[rank], bounds[rank + 1]))

    def batches(
        self, batch_size: int = 32, device: torch.device | str | None = None, *, trim: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the inputs in order, in batches, moved to ``device``.

        With ``trim`` (default), text batches are cut to their longest sequence (by the attention
        mask) so that short batches do not pay for padding; mask-aware reductions give the same
        result. Full token-level capture passes ``trim=False`` to keep one sequence length.

        Yields:
            A dict of tensors; a positional set yields ``{"input": tensor}``.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive int; got {batch_size!r}.")
        n = len(self)
        mask = self.attention_mask
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = {k: v[start:stop] for k, v in self.inputs.items()}
            if trim and mask is not None and mask.ndim == 2:
                keep = int(mask[start:stop].sum(dim=1).max().item()) or 1
                batch = {
                    k: (v[:, :keep] if v.ndim >= 2 and v.shape[1] == mask.shape[1] else v)
                    for k, v in batch.items()
                }
            if device is not None:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            yield batch

    # ------------------------------------------------------------------ identity and storage
    def fingerprint(self) -> str:
        """SHA-256 of the inputs (keys, dtypes, shapes, bytes) and of the frame (for audit trails)."""
        digest = hashlib.sha256()
        for key in sorted(self.inputs):
            t = self.inputs[key].contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        digest.update(self._frame_json().encode())
        return digest.hexdigest()

    def _frame_json(self) -> str:
        return json.dumps(
            {
                "columns": [str(c) for c in self.frame.columns],
                "data": self.frame.astype(object).where(self.frame.notna(), None).values.tolist(),
                "groups": self.group_columns,
                "positional": self._positional,
                "name": self.name,
                "description": self.description,
            },
            default=lambda o: o.item() if hasattr(o, "item") else str(o),
            sort_keys=True,
        )

    def save(self, path: str | Path) -> Path:
        """Write the probe set to one ``.npz`` file that loads without pickle."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        arrays: dict[str, np.ndarray] = {f"input__{k}": v.numpy() for k, v in self.inputs.items()}
        arrays["__meta__"] = np.frombuffer(
            json.dumps({"version": _FORMAT_VERSION, "frame": self._frame_json()}).encode(), dtype=np.uint8
        )
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeSet:
        """Read a probe set written by :meth:`save` (``allow_pickle=False``).

        Raises:
            FileNotFoundError: There is no file at ``path``.
            CorruptFileError: The file is truncated, corrupt or not a probe-set ``.npz``.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"No probe-set file at {str(path)!r} (write one with ProbeSet.save).")
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["__meta__"]).decode())
                inputs = {k[len("input__") :]: torch.from_numpy(data[k].copy())
                          for k in data.files if k.startswith("input__")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise CorruptFileError(f"Cannot read a probe set from {str(path)!r}: it is truncated, corrupt or not a "
                                   f"file written by ProbeSet.save ({type(err).__name__}: {err}).") from err
        frame_info = json.loads(meta["frame"])
        frame = pd.DataFrame(frame_info["data"], columns=frame_info["columns"])
        groups = frame_info["groups"]
        labels = frame.get(LABEL_COLUMN)
        other = frame[[c for c in frame.columns if c not in groups and c != LABEL_COLUMN]]
        return cls(
            inputs[POSITIONAL_KEY] if frame_info["positional"] else inputs,
            labels=None if labels is None else labels.to_numpy(),
            groups=frame[groups] if groups else None,
            metadata=other,
            name=frame_info["name"],
            description=frame_info["description"],
        )
