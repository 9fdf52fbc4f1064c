"""A run folder survives its process being killed in the middle of a write.

A real child process logs through LocalReporter and is SIGKILLed by the operating system in the
middle of writing one ``metrics.jsonl`` record (after half of its bytes reached the file), the
way an out-of-memory killer or a pre-empted node ends a training job. A new LocalReporter then
resumes the same folder, and ``neuronmap report`` and ``neuronmap gate`` must read it: the torn
record reported, nothing else lost, ``report.html`` rendered.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neuronmap.cli import main
from neuronmap.errors import TornLineWarning
from neuronmap.reporters import LocalReporter
from neuronmap.runs import read_history

ACC = "neuronmap/probing/net.1/accuracy"
LOSS = "neuronmap/activation_stats/net.1/mean"

# The child logs steps 0 and 1, then dies while writing step 2: its file object writes the first
# half of the line, flushes it to the file, and the process is SIGKILLed before the rest.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import neuronmap._files as files
    from neuronmap.reporters import LocalReporter

    rep = LocalReporter(run_dir=sys.argv[1], render_html=False)
    for step in (0, 1):
        rep.log_metrics({"%(acc)s": 0.80 + step / 100, "%(loss)s": float(step)}, step=step)

    real_open = open

    class KilledMidWrite:
        def __init__(self, fh):
            self.fh = fh
        def __getattr__(self, name):
            return getattr(self.fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.fh.close()
        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    files.open = lambda *a, **k: KilledMidWrite(real_open(*a, **k))
    rep.log_metrics({"%(acc)s": 0.99, "%(loss)s": 2.0}, step=2)
    print("not reached")
""") % {"acc": ACC, "loss": LOSS}


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("crash") / "run"
    child = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "not reached" not in child.stdout
    text = (run_dir / "metrics.jsonl").read_text()
    assert text.count("\n") == 2 and not text.endswith("\n")  # two records, then half of the third

    resumed = LocalReporter(run_dir=run_dir, render_interval_s=0)
    with pytest.warns(TornLineWarning, match="line 3"):
        resumed.log_metrics({ACC: 0.85, LOSS: 3.0}, step=3)
        resumed.close()
    return run_dir


def test_the_resumed_folder_keeps_every_complete_record(killed_then_resumed: Path) -> None:
    lines = (killed_then_resumed / "metrics.jsonl").read_text().split("\n")
    assert len(lines) == 5 and lines[-1] == ""  # step 3 went onto a line of its own
    with pytest.warns(TornLineWarning, match=r"Skipped 1 unreadable line .* \(line 3\)"):
        history = read_history(killed_then_resumed)
    acc = history[history["key"] == ACC].set_index("step")["value"]
    assert acc.to_dict() == {0: 0.80, 1: 0.81, 3: 0.85}
    assert sorted(set(history["step"])) == [0, 1, 3]
    assert (killed_then_resumed / "report.html").stat().st_size > 0
    assert "FINISHED" in (killed_then_resumed / "run.json").read_text()


def test_neuronmap_report_renders_and_reports_the_torn_record(killed_then_resumed: Path, capsys) -> None:
    (killed_then_resumed / "report.html").unlink()
    assert main(["report", str(killed_then_resumed)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("report.html")
    assert err.count("\n") == 1 and "neuronmap report: warning: Skipped 1 unreadable line" in err
    assert "Traceback" not in err
    page = (killed_then_resumed / "report.html").read_text()
    assert "probing" in page and "accuracy" in page


def test_neuronmap_gate_reads_the_folder(killed_then_resumed: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "gates.yaml"
    config.write_text(f"gates:\n  - metric: {ACC}\n    min: 0.8\n    when: all\n")
    assert main(["gate", str(killed_then_resumed), "--config", str(config), "--no-audit",
                 "--json", str(tmp_path / "gate.json")]) == 0
    out, err = capsys.readouterr()
    assert "3/3 steps pass" in out and "1 passed" in out
    assert "warning: Skipped 1 unreadable line" in err and "(line 3)" in err
    config.write_text(f"gates:\n  - metric: {ACC}\n    min: 0.9\n")
    assert main(["gate", str(killed_then_resumed), "--config", str(config), "--no-audit"]) == 1
