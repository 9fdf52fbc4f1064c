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
* ``malformed``: a line that is not a JSON entry; ``signature``: a missing or wrong HMAC or
  Ed25519 signature, or an entry not signed by a trusted key;
  ``truncated``: the last hash differs from a head hash kept elsewhere;
* ``evidence``: a file of the run folder (metrics, tables, figures, reports, config, run.json)
  no longer matches the digest its entry's ``manifest`` recorded, is missing, or was never
  recorded (see :mod:`neuronmap.compliance._audit_evidence`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["GENESIS", "RUN_KINDS", "AuditProblem", "AuditVerification", "ProblemKind", "entry_hash", "verify"]

GENESIS = "0" * 64
ProblemKind = Literal["malformed", "edited", "deleted", "inserted", "reordered", "signature", "truncated",
                      "evidence"]
#: Entry kinds that record an evaluation of the model (what "verified" needs at least one of).
RUN_KINDS = ("engine_run",)
_REQUIRED = ("seq", "prev_hash", "hash")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of an entry's canonical JSON without its ``hash``, ``hmac`` and ``signature`` fields."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "hmac", "signature")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    """One sign of tampering."""

    #: 1-based line number in ``audit.jsonl`` (0: no line, e.g. a file no entry recorded).
    line: int
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.kind}: {self.message}"


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
    #: Engine runs (evaluations of the model) recorded.
    runs: int = 0
    #: Evidence files whose recorded digests were compared with the run folder.
    files_checked: int = 0
    #: Whether the run folder's files were checked (the trail carries manifests).
    evidence_checked: bool = False
    #: Ed25519 signers of the entries: ``key_id -> base64 public key``.
    signers: tuple[tuple[str, str], ...] = ()
    #: Whether every entry was required to carry a signature by a trusted public key.
    trusted_keys: bool = False

    @property
    def ok(self) -> bool:
        """No problem found (the chain, signatures and, where recorded, the evidence files)."""
        return not self.problems

    @property
    def verified(self) -> bool:
        """What a card may call "verified": intact, files checked, at least one run recorded."""
        return self.ok and self.evidence_checked and self.runs > 0

    def __str__(self) -> str:
        if self.ok:
            sig = ", HMAC verified" if self.signed else ""
            sig += f", Ed25519 signatures of {', '.join(k for k, _ in self.signers)} verified" if self.signers else ""
            files = (f", {self.files_checked} evidence files match" if self.evidence_checked
                     else ", evidence files NOT checked (no manifests in the trail)")
            verdict = "OK" if self.verified else "chain OK but NOT VERIFIED"
            return (f"audit trail {verdict}: {self.entries} entries, {self.runs} engine runs{files}{sig}, "
                    f"head {self.head}")
        return f"audit trail TAMPERED ({len(self.problems)} problems):\n" + "\n".join(f"  {p}" for p in self.problems)


def verify(path: str | os.PathLike[str], *, key: str | bytes | None = None, head: str | None = None,
           public_keys: Iterable[str | os.PathLike[str]] | None = None, evidence: bool = True) -> AuditVerification:
    """Check a trail's hashes, chain, signatures and the run folder's files, naming every bad one.

    Args:
        path: ``audit.jsonl`` or the run folder holding it.
        key: HMAC key; default ``NEURONMAP_AUDIT_KEY``. With a key, unsigned lines are problems.
        head: The last entry's hash as recorded elsewhere; detects removed trailing lines.
        public_keys: Trusted Ed25519 public keys (PEM paths or base64); with any, every entry
            must be signed by one of them. Without, signatures present are still checked.
        evidence: Recompute the digests of the evidence files recorded in the entries'
            manifests (metrics, tables, figures, reports, config, run.json) from the folder.

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
    trusted = None
    if public_keys is not None:
        from neuronmap.compliance._audit_sign import load_public_keys

        trusted = load_public_keys(public_keys) or None
    problems: list[AuditProblem] = []
    entries: dict[int, dict[str, Any]] = {}
    first_line_of: dict[str, int] = {}
    signers: dict[str, str] = {}
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
        problems += _check_ed25519(lineno, entry, trusted, signers)
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
    notes: list[str] = []
    if signed_seen and key_bytes is None:
        notes.append("entries carry HMAC signatures but no key was given (set NEURONMAP_AUDIT_KEY to check them)")
    if signers and trusted is None:
        notes.append(f"Ed25519 signatures verify with the keys in the entries ({', '.join(signers)}); pass "
                     "--public-key with the signer's published key to require it")
    checked, files = False, 0
    if evidence:
        from neuronmap.compliance._audit_evidence import check_evidence

        found, files = check_evidence(file.parent, [(i, entries[i]) for i in order])
        checked = files > 0
        problems += [AuditProblem(line, "evidence", message) for line, message in found]
    runs = sum(1 for e in entries.values() if e.get("kind") in RUN_KINDS)
    return AuditVerification(file, len(entries), tuple(sorted(problems, key=lambda p: p.line)), last_hash,
                             key_bytes is not None, tuple(notes), runs=runs, files_checked=files,
                             evidence_checked=checked, signers=tuple(sorted(signers.items())),
                             trusted_keys=trusted is not None)


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or any(k not in entry for k in _REQUIRED):
        return None
    if not (isinstance(entry["hash"], str) and isinstance(entry["prev_hash"], str)
            and isinstance(entry["seq"], int)):
        return None
    return entry


def _check_signature(lineno: int, entry: dict[str, Any], key: bytes) -> list[AuditProblem]:
    expected = hmac.new(key, entry["hash"].encode(), hashlib.sha256).hexdigest()
    if "hmac" not in entry:
        return [AuditProblem(lineno, "signature", "entry is not signed (no 'hmac') although a key is set")]
    if not hmac.compare_digest(str(entry["hmac"]), expected):
        return [AuditProblem(lineno, "signature",
                             "HMAC does not match: the line was forged or signed with another key")]
    return []


def _check_ed25519(lineno: int, entry: dict[str, Any], trusted: set[str] | None,
                   signers: dict[str, str]) -> list[AuditProblem]:
    if "signature" not in entry:
        if trusted is not None:
            return [AuditProblem(lineno, "signature", "entry has no Ed25519 signature although trusted public keys "
                                                      "were given")]
        return []
    from neuronmap.compliance._audit_sign import check_signature

    error = check_signature(entry)
    if error is not None:
        return [AuditProblem(lineno, "signature", error)]
    signer = entry["signer"]
    if trusted is not None and signer.get("public_key") not in trusted:
        return [AuditProblem(lineno, "signature", f"signed by key {signer.get('key_id')}, which is not among the "
                                                  "trusted public keys")]
    signers[str(signer.get("key_id"))] = str(signer.get("public_key"))
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
