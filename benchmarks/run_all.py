"""Run every benchmark question and print one table (``make bench``).

Each question is its own script, run in a fresh subprocess with ``--json``; its rows are
collected into one markdown table (every row with the command that reproduces it) and
written to ``benchmarks/results.json`` and ``benchmarks/results.md``. Every ratio is against
a baseline measured in the same script run, median of several repeats.

Questions (issue 10): 1 capture cost (``capture.py``), 2 idle callback overhead
(``callback_overhead.py``), 3 a full scheduled run by stage (``full_run.py``), 4 CKA
(``cka.py``), 5 probing (``probing.py``); 1p capture against nnsight and TransformerLens
(``capture_peers.py``, run with ``.venv-peers/bin/python`` where that environment exists).
Issue 17: 6 the cost of every built-in analysis at its defaults (``analysis_costs.py``),
7 start-up: ``neuronmap --version`` and ``import neuronmap`` (``startup.py``), 11 analyses off
the training loop: the training thread's time per background run over its capture, and a
Lightning fit's step time, background vs synchronous (``background.py``).
Issue 18: 8 the cost of the adversarial, regression, world-model and cross-lingual analyses
on MiniLM at their defaults (``analyses_iv.py``).
Issue 19: 10 the service under load (``service_load.py``: 50 clients, a 10k-point history, 60 s).
Issue 14: 9 the training loop with the tracker frozen vs answering (``hung_tracker.py``).

    python benchmarks/run_all.py                  # reduced sizes (minutes on 2 cores)
    python benchmarks/run_all.py --full           # the issue's sizes
    python benchmarks/run_all.py --only 1 3 4 --device cuda --out benchmarks/results-gpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# question -> (script, quick arguments, full arguments, takes --device)
QUESTIONS: dict[str, tuple[str, list[str], list[str], bool]] = {
    "1": ("capture.py", ["--n", "256", "--repeats", "5"], ["--n", "512", "--repeats", "5"], True),
    "2": ("callback_overhead.py", ["--repeats", "3"], ["--repeats", "5"], False),
    "3": ("full_run.py", ["--quick", "--repeats", "3"], ["--repeats", "3"], True),
    "4": ("cka.py", ["--quick", "--repeats", "3"], ["--repeats", "5"], True),
    "5": ("probing.py", ["--n", "300", "--repeats", "3"], ["--n", "1000", "--repeats", "3"], False),
    "6": ("analysis_costs.py", ["--in-process", "--repeats", "1"], ["--repeats", "3"], False),
    "7": ("startup.py", ["--repeats", "9"], ["--repeats", "15"], False),
    "8": ("analyses_iv.py", ["--repeats", "1"], ["--repeats", "3"], True),
    # the service under load: 50 clients reading a 10k-point history for 60 s (127.0.0.1 only)
    "10": ("service_load.py", ["--clients", "50", "--duration", "60"], ["--clients", "50", "--duration", "60"], False),
    # issue 17: NeuronMap(executor="background") against the synchronous engine
    "11": ("background.py", ["--repeats", "3", "--steps", "20", "--every", "10"],
           ["--repeats", "5", "--steps", "60", "--every", "20", "--fits", "3"], False),
    # issue 14: the training loop while the MLflow server is frozen vs answering
    "9": ("hung_tracker.py", ["--rounds", "3"], ["--rounds", "5"], False),
    # question 1 against nnsight and TransformerLens: needs .venv-peers (benchmarks/requirements-peers.txt)
    "1p": ("capture_peers.py", ["--n", "128", "--repeats", "3"], ["--n", "512", "--repeats", "3"], True),
}
# The peers live in their own virtual environment, so that they cannot change the main one.
PEERS_PYTHON = HERE.parent / ".venv-peers" / "bin" / "python"
DEFAULT_QUESTIONS = [q for q in QUESTIONS if q != "1p" or PEERS_PYTHON.exists()]
# --gpu-sizes (benchmarks/gpu.sh): the sizes for questions 1 and 4, a larger probe set for 3
GPU_ARGS: dict[str, list[str]] = {
    "1": ["--n", "512", "--repeats", "5"],
    "3": ["--quick", "--per-template", "150", "--repeats", "3"],
    "4": ["--repeats", "5"],
}


def _normalise(question: str, row: dict[str, Any]) -> dict[str, Any]:
    """One row of either JSON format (``_common.Row`` or ``cka.py``'s own) as table cells."""
    if "measured" in row:  # cka.py
        return {"question": question, "what": f"{row['name']}: {row['measured']}", "value": "", "baseline": "",
                "ratio": row["ratio"], "target": row["target"], "meets": "yes" if row["passed"] else "NO",
                "command": row["command"]}
    target = row.get("target") or ""
    meets = ""
    if target:
        op, bound = target.split(" ", 1)
        ok = row["ratio"] <= float(bound) if op == "<=" else row["ratio"] >= float(bound)
        meets = "yes" if ok else "NO"
    unit = row.get("unit", "")
    return {"question": question, "what": row["what"], "value": f"{row['value']:.4g} {unit}",
            "baseline": f"{row['baseline']:.4g} {unit}", "ratio": row["ratio"], "target": target, "meets": meets,
            "command": row["command"]}


def _run(question: str, *, full: bool, gpu: bool, device: str | None, timeout: float) -> tuple[list[dict[str, Any]], float]:
    script, quick_args, full_args, takes_device = QUESTIONS[question]
    path = HERE / script
    if not path.exists():
        return [_failure(question, f"{script} is not in benchmarks/ yet", script)], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        sized = GPU_ARGS.get(question, quick_args) if gpu else full_args if full else quick_args
        script_args = [*sized, *(["--device", device] if takes_device and device else [])]
        peers = question == "1p" and PEERS_PYTHON.exists()
        cmd = [str(PEERS_PYTHON) if peers else sys.executable, str(path), *script_args, "--json", str(out)]
        shown = " ".join([".venv-peers/bin/python" if peers else "python", f"benchmarks/{script}", *script_args])
        print(f"\n=== question {question}: {shown}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
        except subprocess.TimeoutExpired:
            return [_failure(question, f"timed out after {timeout:.0f} s", shown)], time.perf_counter() - t0
        elapsed = time.perf_counter() - t0
        print("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("|", "#", "row"))), flush=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return [_failure(question, f"exit {proc.returncode}: {tail}", shown)], elapsed
        rows = json.loads(out.read_text())["rows"]
    return [_normalise(question, r) for r in rows], elapsed


def _failure(question: str, why: str, command: str) -> dict[str, Any]:
    return {"question": question, "what": f"FAILED: {why}", "value": "", "baseline": "", "ratio": float("nan"),
            "target": "", "meets": "", "command": command}


def _markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| Q | measurement | value | baseline | ratio | target | meets | reproduce |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what = str(r["what"]).replace("|", "/")
        lines.append(f"| {r['question']} | {what} | {r['value']} | {r['baseline']} | {r['ratio']:.3g} | "
                     f"{r['target']} | {r['meets']} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (much longer)")
    parser.add_argument("--gpu-sizes", action="store_true", help="the sizes of benchmarks/gpu.sh")
    parser.add_argument("--only", nargs="+", choices=list(QUESTIONS), default=DEFAULT_QUESTIONS,
                        help="questions to run (default: all; 1p only where .venv-peers exists)")
    parser.add_argument("--device", default=None, help="passed to the scripts that take --device")
    parser.add_argument("--out", default=str(HERE / "results"), help="writes OUT.json and OUT.md")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per question")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from _common import machine

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    for question in args.only:
        got, durations[question] = _run(question, full=args.full, gpu=args.gpu_sizes, device=args.device, timeout=args.timeout)
        rows += got
    load_after = os.getloadavg()
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1-min)"
    header = (f"# NeuronMap benchmarks ({'GPU' if args.gpu_sizes else 'full' if args.full else 'quick'} sizes, device {args.device or 'default'})\n\nmachine: {machine()}; {load}; "
              f"seconds per question: " + ", ".join(f"Q{q} {s:.0f}" for q, s in durations.items()))
    text = _markdown(rows, header)
    out = Path(args.out)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine(), "load_average": [load_before, load_after], "full": args.full,
         "device": args.device, "durations_s": durations, "rows": rows}, indent=2, default=str))
    print("\n" + text)
    return 1 if any(str(r["what"]).startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
