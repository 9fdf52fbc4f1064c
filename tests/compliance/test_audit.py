"""Audit trail: the recorded fields, the hash chain, HMAC signatures and the detection (and
naming) of every kind of tampering: edited, re-hashed, deleted, inserted, reordered, truncated."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import struct
import subprocess
import warnings
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.compliance._audit_verify import GENESIS, entry_hash
from neuronmap.compliance.audit import (
    AuditError,
    AuditTrail,
    environment_info,
    hash_json,
    hash_model,
    verify,
)
from neuronmap.errors import ReporterWarning
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe


def _trail(tmp_path: Path, n: int = 5, *, key: str | None = None) -> Path:
    trail = AuditTrail(tmp_path, key=key)
    for i in range(n):
        trail.append("note", summary={"i": i})
    return trail.path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _rewrite(line: str, *, rehash: bool, **changes: object) -> str:
    entry = json.loads(line)
    entry.update(changes)
    if rehash:
        entry["hash"] = entry_hash(entry)
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def _kinds(path: Path, **kwargs: object) -> list[tuple[int, str]]:
    return [(p.line, p.kind) for p in verify(path, **kwargs).problems]  # type: ignore[arg-type]


# ---------------------------------------------------------------- writing
def test_chain_links_every_entry(tmp_path: Path) -> None:
    path = _trail(tmp_path, 4)
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
    for entry in entries:
        body = {k: v for k, v in entry.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert entry["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert datetime.fromisoformat(entry["timestamp"]).utcoffset().total_seconds() == 0
        assert entry["user"] and entry["host"] and entry["versions"]["torch"] == torch.__version__
    result = verify(path)
    assert result.ok and result.entries == 4 and result.head == entries[-1]["hash"]


def test_hash_model_known_answer_and_order_independence() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    expected = hashlib.sha256(b"weight|torch.float32|(1, 1)|" + struct.pack("<f", 0.5)).hexdigest()
    assert hash_model(model) == expected

    a = nn.Sequential()
    a.add_module("x", nn.Linear(2, 2))
    a.add_module("y", nn.BatchNorm1d(2))
    b = nn.Sequential()
    b.add_module("y", nn.BatchNorm1d(2))
    b.add_module("x", nn.Linear(2, 2))
    b.load_state_dict(a.state_dict())
    assert hash_model(a) == hash_model(b)
    with torch.no_grad():
        b.x.weight[0, 0] += 1e-6
    assert hash_model(a) != hash_model(b)


def test_git_commit_and_dirty_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@e"}.items():
        monkeypatch.setenv(var, value)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f.txt").write_text("a")
    for cmd in (["git", "init", "-q"], ["git", "add", "f.txt"], ["git", "commit", "-q", "-m", "c"]):
        subprocess.run(cmd, cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True).stdout
    assert environment_info(repo)["git"] == {"commit": head.strip(), "dirty": False}
    (repo / "f.txt").write_text("b")
    assert environment_info(repo)["git"] == {"commit": head.strip(), "dirty": True}
    assert environment_info(tmp_path)["git"] is None


def test_engine_runs_are_recorded(tmp_path: Path) -> None:
    reporter = LocalReporter(tmp_path, run_name="r", render_html=False)
    probe = tiny_probe()
    monitor = nm.NeuronMap(probe, layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    trail = AuditTrail().attach(monitor)
    assert trail.path == reporter.run_dir / "audit.jsonl"
    model = tiny_mlp()
    report = monitor.run(model, step=7, epoch=1, event="validation_end")
    (entry,) = [json.loads(line) for line in _lines(trail.path)]
    assert entry["kind"] == "engine_run" and (entry["step"], entry["epoch"], entry["event"]) == (7, 1, "validation_end")
    assert entry["config_hash"] == hash_json(monitor.config())
    assert entry["probe_fingerprint"] == probe.fingerprint()
    assert entry["model_hash"] == hash_model(model)
    digest = {"step": 7, "epoch": 1, "event": "validation_end", "metrics": report.to_dict()["metrics"],
              "status": {"activation_stats": "ok"}}
    assert entry["results_hash"] == hash_json(digest)
    with torch.no_grad():
        model.net[0].weight.mul_(2)
    monitor.run(model, step=8)
    second = json.loads(_lines(trail.path)[1])
    assert second["model_hash"] != entry["model_hash"] and second["prev_hash"] == entry["hash"]


def test_attach_needs_a_run_folder() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[])
    with pytest.raises(nm.InvalidParameterError, match="needs a run folder"):
        AuditTrail().attach(monitor)


def test_unreadable_last_line_stops_appending_but_not_training(tmp_path: Path) -> None:
    path = _trail(tmp_path, 2)
    with path.open("a") as fh:
        fh.write("garbage\n")
    with pytest.raises(AuditError, match=r"last line \(3\) is not a valid audit entry"):
        AuditTrail(tmp_path).append("note")
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    AuditTrail(tmp_path).attach(monitor)
    with pytest.warns(ReporterWarning, match="could not append to the audit trail"):
        report = monitor.run(tiny_mlp(), step=0)
    assert report.results["activation_stats"].status == "ok"


# ---------------------------------------------------------------- tampering
def test_edited_line_is_named(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    lines[2] = _rewrite(lines[2], rehash=False, summary={"i": 99})
    _write(path, lines)
    assert _kinds(path) == [(3, "edited")]


def test_edited_and_rehashed_line_is_named(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    lines[1] = _rewrite(lines[1], rehash=True, summary={"i": 99})
    _write(path, lines)
    result = verify(path)
    assert [(p.line, p.kind) for p in result.problems] == [(2, "edited")]
    assert "line 3 still points to its original hash" in result.problems[0].message


@pytest.mark.parametrize(("index", "line"), [(0, 1), (2, 3)])  # named where the gap shows
def test_deleted_line_is_named(tmp_path: Path, index: int, line: int) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    del lines[index]
    _write(path, lines)
    result = verify(path)
    assert [(p.line, p.kind) for p in result.problems] == [(line, "deleted")]
    assert f"seq {index} deleted" in result.problems[0].message


def test_inserted_forged_line_is_named(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    forged = json.loads(lines[1])
    forged["summary"] = {"i": "forged"}
    forged["seq"] = 2
    forged["prev_hash"] = json.loads(lines[1])["hash"]
    forged["hash"] = entry_hash(forged)  # a well-formed entry that links to line 2
    lines.insert(2, json.dumps(forged))
    _write(path, lines)
    assert _kinds(path) == [(3, "inserted")]


def test_inserted_copy_and_garbage_are_named(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    lines.insert(3, lines[0])
    lines.insert(1, "{not json")
    _write(path, lines)
    assert _kinds(path) == [(2, "malformed"), (5, "inserted")]
    assert "a copy of line 1" in verify(path).problems[1].message


def test_reordered_lines_are_named(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(path, lines)
    kinds = _kinds(path)
    assert {kind for _, kind in kinds} == {"reordered"}
    assert {line for line, _ in kinds} >= {2, 3}


def test_truncation_is_caught_with_a_recorded_head(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    head = verify(path).head
    _write(path, _lines(path)[:-1])
    assert verify(path).ok  # the chain alone cannot see a missing tail
    assert _kinds(path, head=head) == [(4, "truncated")]


def test_hmac_signatures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONMAP_AUDIT_KEY", "s3cret")
    path = _trail(tmp_path, 3)
    entry = json.loads(_lines(path)[0])
    assert entry["hmac"] == hmac.new(b"s3cret", entry["hash"].encode(), hashlib.sha256).hexdigest()
    assert verify(path).ok and verify(path).signed
    # A forger who re-hashes the whole file but has no key is caught on every line he touched.
    lines = _lines(path)
    rewritten, prev = [], GENESIS
    for line in lines:
        e = json.loads(line)
        e["summary"], e["prev_hash"] = {"i": "forged"}, prev
        e["hash"] = prev = entry_hash(e)
        rewritten.append(json.dumps(e))
    _write(path, rewritten)
    assert _kinds(path) == [(1, "signature"), (2, "signature"), (3, "signature")]
    assert verify(path, key="wrong").problems[0].kind == "signature"
    monkeypatch.delenv("NEURONMAP_AUDIT_KEY")
    unsigned = verify(path)
    assert unsigned.ok and "no key was given" in unsigned.notes[0]


def test_verify_missing_trail(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No audit trail"):
        verify(tmp_path)


def test_no_warning_on_clean_runs(tmp_path: Path) -> None:
    reporter = LocalReporter(tmp_path, run_name="r", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    AuditTrail(reporter.run_dir).attach(monitor)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReporterWarning)
        monitor.run(tiny_mlp(), step=0)
    assert verify(reporter.run_dir).ok


# ---------------------------------------------------------------- evidence files


def _audited_run(tmp_path: Path) -> Path:
    reporter = LocalReporter(tmp_path, run_name="evidence", render_html=False)
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[reporter])
    AuditTrail(reporter.run_dir).attach(monitor)
    for step in (0, 5):
        monitor.run(tiny_mlp(), step=step)
    monitor.close()
    return reporter.run_dir


def test_manifests_chain_the_run_folder_and_its_end(tmp_path: Path) -> None:
    run = _audited_run(tmp_path)
    entries = [json.loads(line) for line in _lines(run / "audit.jsonl")]
    assert [e["kind"] for e in entries] == ["engine_run", "engine_run", "run_end"]
    recorded = {path for e in entries for path in e.get("manifest", {})}
    assert {"metrics.jsonl", "config.json", "run.json", "reports/0.json", "reports/5.json",
            "tables/5/activation_stats/summary.csv", "figures/0/activation_stats/health.png"} <= recorded
    run_json = entries[-1]["manifest"]["run.json"]  # the end time and status, written at close
    assert run_json["sha256"] == hashlib.sha256((run / "run.json").read_bytes()).hexdigest()
    assert entries[-1]["status"] == "FINISHED" and entries[0]["model_name"] == "TinyMLP"
    result = verify(run)
    assert result.verified and result.runs == 2 and result.files_checked == len(recorded)


def test_missing_added_and_edited_files_are_named(tmp_path: Path) -> None:
    run = _audited_run(tmp_path)
    (run / "figures" / "0" / "activation_stats" / "health.png").unlink()
    (run / "tables" / "9" / "fairness").mkdir(parents=True)
    (run / "tables" / "9" / "fairness" / "summary.csv").write_text("attribute,estimate\ngender,0.0\n")
    run_json = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**run_json, "status": "FAILED"}))
    problems = [str(p) for p in verify(run).problems]
    assert any("figures/0/activation_stats/health.png is missing" in p for p in problems)
    assert any("tables/9/fairness/summary.csv was never recorded" in p for p in problems)
    assert any("run.json no longer matches the hash recorded by the run_end entry" in p for p in problems)
    assert not verify(run).verified and verify(run, evidence=False).ok  # the chain itself is intact


def test_ed25519_signed_entries(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from neuronmap.compliance._audit_sign import generate_key_pair

    key = ed25519.Ed25519PrivateKey.generate()
    trail = AuditTrail(tmp_path, signing_key=key)
    entry = trail.append("note", summary={"text": "release"})
    assert entry["signer"]["alg"] == "ed25519" and len(entry["signer"]["key_id"]) == 16
    assert entry_hash(entry) == entry["hash"]  # the signature is outside the hashed body, the signer inside
    result = verify(tmp_path)
    assert result.ok and dict(result.signers) == {entry["signer"]["key_id"]: entry["signer"]["public_key"]}
    assert verify(tmp_path, public_keys=[entry["signer"]["public_key"]]).ok
    _, public = generate_key_pair(tmp_path / "keys", "other")
    assert [p.kind for p in verify(tmp_path, public_keys=[public]).problems] == ["signature"]
    AuditTrail(tmp_path).append("note")  # an unsigned entry where signatures are required
    assert [(p.line, p.kind) for p in verify(tmp_path, public_keys=[entry["signer"]["public_key"]]).problems] == \
        [(2, "signature")]
    with pytest.raises(nm.InvalidParameterError, match="exists already; keys are never overwritten"):
        generate_key_pair(tmp_path / "keys", "other")


def test_callbacks_keep_a_trail_beside_tracker_only_reporters(tmp_path: Path) -> None:
    """``reporters=[<a tracker>]`` in a callback: the default trail adds a local folder to hash."""
    from neuronmap.callbacks._common import attach_audit
    from neuronmap.reporters.base import BaseReporter

    class Tracker(BaseReporter):
        name = "tracker"

        def __init__(self) -> None:
            self.artifacts: list[str] = []

        def log_artifact(self, path: str | Path) -> None:
            self.artifacts.append(Path(path).name)

    tracker = Tracker()
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[tracker])
    attach_audit(monitor, True, root=tmp_path)
    attach_audit(monitor, True, root=tmp_path)  # idempotent: one trail, one folder
    tracker_again, local = monitor.reporters
    assert tracker_again is tracker and isinstance(local, LocalReporter)
    assert local.run_dir.parent == (tmp_path / "neuronmap-runs").absolute()
    monitor.run(tiny_mlp(), step=0)
    monitor.close()
    assert verify(local.run_dir).verified and tracker.artifacts == ["audit.jsonl"]
    silent = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[])
    attach_audit(silent, True, root=tmp_path / "none")
    assert silent.reporters == [] and not (tmp_path / "none").exists()
