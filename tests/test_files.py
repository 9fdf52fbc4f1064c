"""Crash-safe run-folder files (neuronmap/_files.py): torn JSONL lines, atomic writes, run names."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from neuronmap._files import (
    append_jsonl,
    check_run_name,
    read_json,
    read_jsonl,
    read_jsonl_numbered,
    write_json_atomic,
    write_text_atomic,
)
from neuronmap.errors import InvalidParameterError, TornLineWarning
from neuronmap.reporters import LocalReporter
from neuronmap.runs import read_history

TORN = '{"step": 0, "metrics": {"a": 1.0}}\n{"step": 1, "metrics": {"a": 2.'


def test_append_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(TORN)
    append_jsonl(path, {"step": 2, "metrics": {"a": 3.0}})
    lines = path.read_text().split("\n")
    assert lines == ['{"step": 0, "metrics": {"a": 1.0}}', '{"step": 1, "metrics": {"a": 2.',
                     '{"step": 2, "metrics": {"a": 3.0}}', ""]
    with pytest.warns(TornLineWarning, match=r"Skipped 1 unreadable line of .*m\.jsonl \(line 2\)"):
        records = read_jsonl(path)
    assert [r["step"] for r in records] == [0, 2]


def test_append_to_a_clean_or_missing_file_adds_no_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2}, fsync=True)
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn: no warning
        assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_torn_lines_are_counted_and_numbered(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    # a torn multi-byte character (not UTF-8) and a cut JSON object, among good records and blank lines
    path.write_bytes(b'{"a": 1}\n{"a": "\xc3\n\n{"a": 2}\n{"a": 3, "b\n{"a": 4}')
    with pytest.warns(TornLineWarning, match=r"Skipped 2 unreadable lines .* \(line 2, 5\)") as caught:
        numbered = list(read_jsonl_numbered(path))
    assert len(caught) == 1
    assert numbered == [(1, {"a": 1}), (4, {"a": 2}), (6, {"a": 4})]


def test_read_history_skips_the_torn_record_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(TORN)
    with pytest.warns(TornLineWarning, match="line 2"):
        frame = read_history(tmp_path)
    assert frame["step"].tolist() == [0] and frame["value"].tolist() == [1.0]


def test_read_history_rejects_json_that_is_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "metrics": {"a": 1}}\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"line 2 of .*metrics\.jsonl is not a metrics record"):
        read_history(tmp_path)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json_atomic(target, {"status": "RUNNING"})
    write_json_atomic(target, {"status": "FINISHED", "ended": "now"})
    assert json.loads(target.read_text()) == {"ended": "now", "status": "FINISHED"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    write_json_atomic(target, {"lr": 0.1})
    with pytest.raises(TypeError):  # not JSON-serialisable: fails before the target is touched
        write_json_atomic(target, {"bad": object()}, default=None)
    assert json.loads(target.read_text()) == {"lr": 0.1}
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=r"a-file/x\.json"):  # names the target, not a temp file
        write_text_atomic(blocker / "x.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "config.json"]


def test_local_reporter_json_files_are_atomic_and_readable_after_a_torn_write(tmp_path: Path) -> None:
    rep = LocalReporter(tmp_path, run_name="r", render_html=False)
    rep.log_params({"lr": 0.1})
    (rep.run_dir / "tags.json").write_text('{"team": "nl')  # torn by an older, non-atomic writer
    with pytest.warns(TornLineWarning, match="tags.json"):
        rep.set_tags({"stage": "dev"})
    assert read_json(rep.run_dir / "tags.json") == {"stage": "dev"}
    assert read_json(rep.run_dir / "config.json") == {"lr": 0.1}
    assert not [p for p in rep.run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["ok", "bert-lr3e-5", "run_01.final", "ümlaut run"])
def test_good_run_names(name: str) -> None:
    assert check_run_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "  ", ".", "..", "../../x", "a/b", "a\\b", "/abs", "tab\there", "nl\nx", "bell\x07", "del\x7f", 3],
)
def test_bad_run_names_are_rejected_naming_the_value(name: object) -> None:
    with pytest.raises(InvalidParameterError, match=r"The 'run_name' must be a single folder name.*Got") as info:
        check_run_name(name)
    assert repr(name) in str(info.value)


def test_local_reporter_cannot_escape_its_root(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with pytest.raises(InvalidParameterError, match=r"Got '\.\./\.\./x' instead"):
        LocalReporter(root, run_name="../../x")
    with pytest.raises(InvalidParameterError, match="run_name"):
        LocalReporter(root, run_name=os.path.abspath(tmp_path / "elsewhere"))
    assert not root.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    # an explicit run_dir is the caller's own path: allowed anywhere
    assert LocalReporter(run_dir=tmp_path / "mine", render_html=False).run_dir == tmp_path / "mine"
