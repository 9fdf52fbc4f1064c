"""File manifests that bind a run folder's evidence to the audit trail.

The hash chain of ``audit.jsonl`` shows whether *its own lines* were edited; the numbers an
auditor reads live in other files (``metrics.jsonl``, tables, figures, ``config.json``). Each
``engine_run`` entry therefore carries a ``manifest``: ``{relative path: {"bytes": n,
"sha256": hex}}`` of the evidence files that run wrote or changed, and the ``run_end`` entry
written when the monitor closes carries every evidence file that changed since. Manifests are
part of the hashed entry, so they are chained like everything else.

Verification rebuilds the expected state (the latest recorded digest of each path wins, since
``config.json`` and ``run.json`` are rewritten legitimately) and compares it with the folder:

* a file whose bytes differ from its latest recorded digest is ``evidence`` tampering;
* ``metrics.jsonl`` is append-only: its first ``bytes`` must hash as recorded, and bytes after
  the last recorded length are reported too (a line appended there would override the values
  gates and cards read as "latest");
* a recorded file that is gone, and an evidence file that no manifest mentions, are reported.

Which files are evidence: :data:`SINGLETONS` plus everything under :data:`FOLDERS`. Not
evidence: ``report.html`` (a view re-rendered by ``neuronmap report``), ``artifacts/`` (copies
sent by other reporters), ``spool/`` (transient) and ``audit.jsonl`` itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["APPEND_ONLY", "FOLDERS", "SINGLETONS", "Digest", "changed_digests", "check_evidence",
           "digest_file", "evidence_files", "recorded_digests", "step_files"]

#: Evidence files at the top of a run folder.
SINGLETONS = ("metrics.jsonl", "history.csv", "config.json", "run.json", "tags.json", "failures.json")
#: Folders whose every file is evidence.
FOLDERS = ("reports", "tables", "figures", "texts")
#: Files that only grow: a digest covers the first ``bytes`` bytes.
APPEND_ONLY = ("metrics.jsonl",)
_CHUNK = 1 << 20
Digest = dict[str, Any]


def digest_file(path: Path, *, length: int | None = None) -> Digest:
    """``{"bytes": n, "sha256": hex}`` of a file (of its first ``length`` bytes when given)."""
    sha = hashlib.sha256()
    size = path.stat().st_size if length is None else length
    left = size
    with path.open("rb") as fh:
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                break
            sha.update(chunk)
            left -= len(chunk)
    return {"bytes": size - left, "sha256": sha.hexdigest()}


def evidence_files(run_dir: Path) -> list[str]:
    """Every evidence file of a run folder, as sorted POSIX paths relative to it."""
    out = [name for name in SINGLETONS if (run_dir / name).is_file()]
    for folder in FOLDERS:
        root = run_dir / folder
        if root.is_dir():
            out += [p.relative_to(run_dir).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(out)


def step_files(run_dir: Path, step: int) -> list[str]:
    """The files an engine run at ``step`` writes, plus the top-level evidence files."""
    out = [name for name in SINGLETONS if (run_dir / name).is_file()]
    report = run_dir / "reports" / f"{int(step)}.json"
    if report.is_file():
        out.append(report.relative_to(run_dir).as_posix())
    for folder in ("tables", "figures"):
        root = run_dir / folder / str(int(step))
        if root.is_dir():
            out += [p.relative_to(run_dir).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(out)


def changed_digests(run_dir: Path, paths: Iterable[str], recorded: Mapping[str, Digest]) -> dict[str, Digest]:
    """Digests of ``paths`` that differ from ``recorded`` (new files included)."""
    out: dict[str, Digest] = {}
    for rel in paths:
        file = run_dir / rel
        if not file.is_file():
            continue
        digest = digest_file(file)
        if recorded.get(rel) != digest:
            out[rel] = digest
    return out


def recorded_digests(entries: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Digest, int]]:
    """``path -> (latest digest, index of the entry that recorded it)`` over entries in order."""
    out: dict[str, tuple[Digest, int]] = {}
    for index, entry in enumerate(entries):
        manifest = entry.get("manifest")
        if isinstance(manifest, Mapping):
            for rel, digest in manifest.items():
                if isinstance(digest, Mapping):
                    out[str(rel)] = (dict(digest), index)
    return out


def check_evidence(run_dir: Path, entries: list[tuple[int, Mapping[str, Any]]]) -> tuple[list[tuple[int, str]], int]:
    """Compare the folder with the manifests of ``(line number, entry)`` pairs.

    Returns:
        ``(problems, files checked)``: each problem is ``(line, message)`` with the line of the
        entry that recorded the file (``0`` for a file no entry recorded).
    """
    latest = recorded_digests(entry for _, entry in entries)
    if not latest:
        return [], 0
    line_of = [lineno for lineno, _ in entries]
    problems: list[tuple[int, str]] = []
    for rel, (digest, index) in sorted(latest.items()):
        line, file = line_of[index], run_dir / rel
        what = _describe(entries[index][1])
        if not file.is_file():
            problems.append((line, f"evidence file {rel} is missing (recorded by {what})"))
            continue
        size = file.stat().st_size
        want = int(digest.get("bytes", -1))
        if rel in APPEND_ONLY:
            if size < want or digest_file(file, length=want)["sha256"] != digest.get("sha256"):
                problems.append((line, f"evidence file {rel} was edited: its first {want} bytes no longer match "
                                       f"the hash recorded by {what}"))
            elif size > want:
                problems.append((line, f"evidence file {rel} has {size - want} bytes after the last recorded "
                                       f"length ({what}): lines added there are not covered by the trail"))
        elif size != want or digest_file(file)["sha256"] != digest.get("sha256"):
            problems.append((line, f"evidence file {rel} no longer matches the hash recorded by {what}"))
    for rel in evidence_files(run_dir):
        if rel not in latest:
            problems.append((0, f"evidence file {rel} was never recorded in the trail (added after the last "
                                f"recorded run, or by someone else)"))
    return problems, len(latest)


def _describe(entry: Mapping[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == "engine_run":
        return f"the engine run at step {entry.get('step')} (seq {entry.get('seq')})"
    return f"the {kind} entry seq {entry.get('seq')}"
