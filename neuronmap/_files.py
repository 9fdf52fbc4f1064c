"""Crash-safe files of a run folder: JSON Lines appends and reads, atomic JSON writes, run names.

A training process can be killed at any instant, in the middle of a write. Three rules keep a
run folder readable afterwards:

* **Appends start on a new line.** A process killed mid-append leaves a torn last line with no
  ``"\\n"``; the next append (a resumed run) first writes the missing newline, so the new record
  is not glued onto the torn one and lost with it.
* **Readers skip torn lines.** A line that is not valid JSON (a record cut short, or a torn line
  that a resumed run has since appended after) is skipped with one
  :class:`~neuronmap.errors.TornLineWarning` per read that names the file, the count and the
  line numbers; every other record is kept. A line that *is* JSON but not a record of the
  expected shape is a real error and left to the caller.
* **Whole-file writes are atomic.** ``config.json``, ``run.json``, ``reports/<step>.json`` ...
  are written to a temporary file in the same folder, flushed to disk (``fsync``) and moved over
  the target with :func:`os.replace`, which is atomic on POSIX and Windows: a reader sees the
  old file or the new one, never half of one.

Run names become folder names, so they are checked (:func:`check_run_name`) before anything
is created: no path separators, no ``.``/``..``, no absolute paths, no control characters.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from neuronmap.errors import InvalidParameterError, TornLineWarning

__all__ = ["append_jsonl", "check_run_name", "read_json", "read_jsonl", "read_jsonl_numbered",
           "write_json_atomic", "write_text_atomic"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_run_name(name: object, *, parameter: str = "run_name") -> str:
    """Return ``name`` if it is a safe single folder name, else raise.

    Args:
        name: The proposed run name.
        parameter: How the caller's user spelled the setting (named in the error).

    Raises:
        InvalidParameterError: ``name`` is not a string, is empty, is ``.`` or ``..``, holds
            ``/`` or ``\\``, is absolute, or holds a control character.

    Example:
        >>> check_run_name("bert-lr3e-5")
        'bert-lr3e-5'
        >>> check_run_name("../x")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        InvalidParameterError: ...
    """
    allowed = ("a single folder name: not empty, not '.' or '..', without '/', '\\\\' or control "
               "characters (e.g. 'bert-lr3e-5')")
    if not isinstance(name, str):
        raise InvalidParameterError(f"The {parameter!r} must be {allowed}. Got {type(name).__name__} {name!r}.")
    drive = os.name == "nt" and ":" in name  # 'C:x' is relative to a drive, outside the root
    if name.strip() in ("", ".", "..") or "/" in name or "\\" in name or os.path.isabs(name) \
            or _CONTROL.search(name) or drive:
        raise InvalidParameterError(f"The {parameter!r} must be {allowed}. Got {name!r} instead.")
    return name


def append_jsonl(path: str | os.PathLike[str], record: Any, *, fsync: bool = False, **dumps: Any) -> None:
    """Append ``record`` as one JSON line, first ending a torn last line with ``"\\n"``.

    Args:
        path: The ``.jsonl`` file (created when missing; its folder must exist).
        record: Anything :func:`json.dumps` accepts with ``dumps``.
        fsync: Flush the line to disk before returning (for records that must survive a crash).
        **dumps: Keyword arguments of :func:`json.dumps` (``default=``, ``allow_nan=`` ...).
    """
    line = json.dumps(record, **dumps)
    with open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        # One write call per record, so that concurrent appenders (O_APPEND) do not interleave.
        fh.write((line + "\n").encode("utf-8"))
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def read_jsonl_numbered(path: str | os.PathLike[str], *, warn: bool = True,
                        stacklevel: int = 2) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each JSON line of ``path``, skipping torn lines.

    Blank lines are ignored. Lines that are not JSON (or not UTF-8) are skipped and, when
    ``warn``, reported after the last line in one :class:`~neuronmap.errors.TornLineWarning`.
    A missing file yields nothing.
    """
    file = Path(path)
    if not file.exists():
        return
    torn: list[int] = []
    for number, raw in enumerate(file.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            torn.append(number)
            continue
        yield number, value
    if torn and warn:
        warnings.warn(_torn_message(file, torn), TornLineWarning, stacklevel=stacklevel)


def read_jsonl(path: str | os.PathLike[str], *, warn: bool = True) -> list[Any]:
    """Every parsed JSON line of ``path`` (torn lines skipped, see :func:`read_jsonl_numbered`).

    Example:
        >>> import tempfile, warnings
        >>> path = Path(tempfile.mkdtemp()) / "m.jsonl"
        >>> _ = path.write_text('{"step": 0}\\n{"step": 1, "metr')   # killed mid-write
        >>> append_jsonl(path, {"step": 2})                          # the resumed run
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     records = read_jsonl(path)
        >>> records, len(caught)
        ([{'step': 0}, {'step': 2}], 1)
    """
    values = []
    for _, value in read_jsonl_numbered(path, warn=warn, stacklevel=3):  # a loop, not a comprehension:
        values.append(value)  # the warning's stacklevel must not depend on how Python frames it
    return values


def _torn_message(file: Path, torn: list[int]) -> str:
    shown = ", ".join(map(str, torn[:10])) + (f" and {len(torn) - 10} more" if len(torn) > 10 else "")
    noun = "line" if len(torn) == 1 else "lines"
    return (f"Skipped {len(torn)} unreadable {noun} of {file} (line {shown}): a record cut short, most likely by "
            "a process killed while writing it; every other record was read.")


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (temporary file, fsync, :func:`os.replace`).

    Raises:
        OSError: The folder cannot be written (the target is left as it was).
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:  # name the file the caller asked for, not the temporary one
        raise type(err)(err.errno, err.strerror, str(target)) from err
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Any, **dumps: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (default: indented, sorted keys, ``default=str``)."""
    options: dict[str, Any] = {"indent": 2, "default": str, "sort_keys": True} | dumps
    write_text_atomic(path, json.dumps(data, **options))


def read_json(path: str | os.PathLike[str], default: Mapping[str, Any] | None = None) -> Any:
    """The JSON in ``path``; ``default`` (an empty dict) when the file is missing or unreadable.

    An unreadable file (written before writes were atomic, or edited by hand) is reported with a
    :class:`~neuronmap.errors.TornLineWarning` rather than stopping the reader.
    """
    file = Path(path)
    if not file.exists():
        return dict(default or {})
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.warn(f"Skipped {file}: it is not valid JSON ({err}); read as empty.", TornLineWarning, stacklevel=2)
        return dict(default or {})
