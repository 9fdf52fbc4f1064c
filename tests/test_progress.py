"""neuronmap._progress: bars only where someone watches (a TTY), never changing what is iterated."""

from __future__ import annotations

import io

import pytest

from neuronmap._progress import progress, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_stderr_is_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.delenv("NEURONMAP_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", stream)
    assert not progress_enabled()
    assert list(progress(range(5), desc="x")) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""


def test_bar_on_a_tty_and_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("NEURONMAP_PROGRESS", raising=False)
    assert progress_enabled()
    assert list(progress(iter("abc"), desc="letters", total=3)) == ["a", "b", "c"]
    assert "letters" in terminal.getvalue()
    monkeypatch.setenv("NEURONMAP_PROGRESS", "0")
    assert not progress_enabled()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.setenv("NEURONMAP_PROGRESS", "1")
    assert progress_enabled()
    assert list(progress(range(3), desc="forced", enabled=False)) == [0, 1, 2]
