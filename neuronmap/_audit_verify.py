"""Verification of a hash-chained audit trail: which line was edited, deleted, inserted or moved.

Every entry stores ``seq`` (its position when written), ``prev_hash`` (the previous entry's
``hash``) and ``hash`` (SHA-256 of its canonical JSON without ``hash``/``hmac``). Verification
recomputes each hash, then follows the chain through the *stored* hashes so that one edit is
reported once, at the edited line, instead of at every line after it:

* ``edited``: a line's content no longer matches its hash, or it was re-hashed and the next
  line still points to its original hash;
* ``deleted``: a line's predecessor is missing and ``seq`` jumps over the gap;
* ``inserted``: a line that the chain skips (the next line points past it) and no chained line
  points to, or a verbatim copy of another line;
* ``reordered``: a line whose predecessor appears later in the file, or at a different place;
* ``malformed``: a line that is not a JSON entry; ``signature``: a missing or wrong HMAC;
  ``truncated``: the last hash differs from a head hash kept elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["GENESIS", "AuditProblem", "AuditVerification", "ProblemKind", "entry_hash", "verify"]

GENESIS = "0" * 64
ProblemKind = Literal["malformed", "edited", "deleted", "inserted", "reordered", "signature", "truncated"]
_REQUIRED = ("seq", "prev_hash", "hash")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of an entry's canonical JSON without its ``hash`` and ``hmac`` fields."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "hmac")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    """One sign of tampering."""

    #: 1-based line number in ``audit.jsonl``.
    line: int
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of :func:`verify`."""

    path: Path
    #: Valid entries read.
    entries: int
    #: Everything wrong, in line order; empty when the trail is intact.
    problems: tuple[AuditProblem, ...]
    #: Hash of the last entry (keep it elsewhere to detect truncation later).
    head: str | None
    #: Whether HMAC signatures were checked.
    signed: bool
    #: Remarks that are not tampering (e.g. signatures present but no key to check them).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            sig = ", HMAC verified" if self.signed else ""
            return f"audit trail OK: {self.entries} entries{sig}, head {self.head}"
        return f"audit trail TAMPERED ({len(self.problems)} problems):\n" + "\n".join(f"  {p}" for p in self.problems)


def verify(path: str | os.PathLike[str], *, key: str | bytes | None = None, head: str | None = None) -> AuditVerification:
    """Check a trail's hashes, chain and (with a key) HMAC signatures, naming every bad line.

    Args:
        path: ``audit.jsonl`` or the run folder holding it.
        key: HMAC key; default ``NEURONMAP_AUDIT_KEY``. With a key, unsigned lines are problems.
        head: The last entry's hash as recorded elsewhere; detects removed trailing lines.

    Returns:
        An :class:`AuditVerification` (``.ok``, ``.problems``).

    Raises:
        FileNotFoundError: There is no audit trail at ``path``.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "audit.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"No audit trail at {file}; audit trails are written by AuditTrail(run_dir).")
    key_bytes = key.encode() if isinstance(key, str) else key
    if key_bytes is None and os.environ.get("NEURONMAP_AUDIT_KEY"):
        key_bytes = os.environ["NEURONMAP_AUDIT_KEY"].encode()
    problems: list[AuditProblem] = []
    entries: dict[int, dict[str, Any]] = {}
    first_line_of: dict[str, int] = {}
    signed_seen = False
    # bytes that are not UTF-8 (a binary file, a torn multi-byte character) make malformed lines
    text = file.read_bytes().decode("utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        entry = _parse(raw)
        if entry is None:
            problems.append(AuditProblem(lineno, "malformed", f"not a JSON audit entry: {raw[:80]!r}"))
            continue
        if entry["hash"] in first_line_of:
            problems.append(AuditProblem(lineno, "inserted", f"a copy of line {first_line_of[entry['hash']]}"))
            continue
        first_line_of[entry["hash"]] = lineno
        entries[lineno] = entry
        if entry_hash(entry) != entry["hash"]:
            problems.append(AuditProblem(lineno, "edited", f"content of entry seq {entry['seq']} "
                                                           f"({entry.get('kind')}) no longer matches its hash"))
        signed_seen = signed_seen or "hmac" in entry
        if key_bytes is not None:
            problems += _check_signature(lineno, entry, key_bytes)
    problems += _check_chain(entries, first_line_of)
    if not text.strip():
        problems.append(AuditProblem(0, "truncated", f"{file} holds no entries: AuditTrail writes the first entry "
                                                     "when it creates the file, so every entry was removed (or the "
                                                     "file was not written by AuditTrail)"))
    order = sorted(entries)
    last_hash = entries[order[-1]]["hash"] if order else None
    if head is not None and head != last_hash:
        where = order[-1] if order else 0
        problems.append(AuditProblem(where, "truncated", f"the last entry's hash is {last_hash}, but the recorded "
                                                         f"head is {head}: entries were removed from the end or added"))
    notes = ("entries carry HMAC signatures but no key was given (set NEURONMAP_AUDIT_KEY to check them)",) \
        if signed_seen and key_bytes is None else ()
    return AuditVerification(file, len(entries), tuple(sorted(problems, key=lambda p: p.line)), last_hash,
                             key_bytes is not None, notes)


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or any(k not in entry for k in _REQUIRED):
        return None
    if not isinstance(entry["hash"], str) or not isinstance(entry["prev_hash"], str) or not isinstance(entry["seq"], int):
        return None
    return entry


def _check_signature(lineno: int, entry: dict[str, Any], key: bytes) -> list[AuditProblem]:
    expected = hmac.new(key, entry["hash"].encode(), hashlib.sha256).hexdigest()
    if "hmac" not in entry:
        return [AuditProblem(lineno, "signature", "entry is not signed (no 'hmac') although a key is set")]
    if not hmac.compare_digest(str(entry["hmac"]), expected):
        return [AuditProblem(lineno, "signature", "HMAC does not match: the line was forged or signed with another key")]
    return []


def _check_chain(entries: dict[int, dict[str, Any]], line_of: dict[str, int]) -> list[AuditProblem]:
    order = sorted(entries)
    pred: dict[int, int | None] = {}
    for i in order:
        prev = entries[i]["prev_hash"]
        pred[i] = 0 if prev == GENESIS else line_of.get(prev)
    inserted = _inserted_lines(order, pred)
    problems = [AuditProblem(k, "inserted", f"entry seq {entries[k]['seq']} is not part of the chain: the next "
                                            "chained line points past it") for k in sorted(inserted)]
    chained = [i for i in order if i not in inserted]
    for position, i in enumerate(chained):
        expected = chained[position - 1] if position else 0
        p, seq = pred[i], entries[i]["seq"]
        if p == expected:
            continue
        if p is None:
            before = entries[expected]["seq"] if expected else -1
            if expected and seq == before + 1:
                problems.append(AuditProblem(expected, "edited", f"entry seq {before} was re-hashed: line {i} still "
                                                                 "points to its original hash (or line "
                                                                 f"{i} itself was forged)"))
            else:
                gap = f"seq {before + 1}" + (f" to {seq - 1}" if seq - 1 > before + 1 else "")
                problems.append(AuditProblem(i, "deleted", f"the entry before this one is missing ({gap} deleted; "
                                                           f"this line has seq {seq})"))
        else:
            where = "the start of the trail" if p == 0 else f"line {p}"
            problems.append(AuditProblem(i, "reordered", f"entry seq {seq} belongs right after {where}, "
                                                         f"not after line {expected or 'the start'}"))
    return problems


def _inserted_lines(order: list[int], pred: dict[int, int | None]) -> set[int]:
    """Lines the chain skips and that no chained line points to (found by fixpoint)."""
    inserted: set[int] = set()
    while True:
        referenced = {p for i, p in pred.items() if i not in inserted and p}
        found = set(inserted)
        for i in order:
            p = pred[i]
            if i in inserted or p is None or p >= i:
                continue
            found |= {k for k in order if p < k < i and k not in referenced}
        if found == inserted:
            return inserted
        inserted = found
