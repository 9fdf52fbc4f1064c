"""Question 7: start-up cost: ``neuronmap --version`` and ``import neuronmap`` (issue 17, part 3).

Every measurement is a fresh interpreter (``subprocess.run``), so nothing is cached in
``sys.modules``; the OS file cache is warm after the first of ``--repeats`` rounds. Within a
round the commands run one after the other, so machine noise hits them alike; each row is the
median over rounds.

* ``neuronmap --version`` (the installed console script, else ``python -m``-style
  ``main(["--version"])``) against ``python -c pass``: target at most 0.3 s more.
* ``neuronmap --help``, the same way (no target: it imports the subcommand modules, which
  import pandas and jinja2 but neither torch nor scipy).
* ``import neuronmap`` against ``import torch``: the package itself must cost a small fraction
  of torch, because its analyses, metrics and reporters load on first use.
* ``import neuronmap; neuronmap.NeuronMap`` against ``import torch``: what a training script pays.

    python benchmarks/startup.py [--repeats 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, print_rows, write_json

COMMAND = "python benchmarks/startup.py"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("neuronmap")
    if script.exists():
        return [str(script)]
    found = shutil.which("neuronmap")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from neuronmap.cli import main; sys.exit(main())"]


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    py = sys.executable
    cases = {
        "pass": [py, "-c", "pass"],
        "version": [*_cli(), "--version"],
        "help": [*_cli(), "--help"],
        "torch": [py, "-c", "import torch"],
        "neuronmap": [py, "-c", "import neuronmap"],
        "engine": [py, "-c", "import neuronmap; neuronmap.NeuronMap"],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for cmd in cases.values():  # one unmeasured round: file cache warm for every case
        _wall(cmd)
    for _ in range(args.repeats):
        for name, cmd in cases.items():
            times[name].append(_wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    cmd = f"{COMMAND} --repeats {args.repeats}"

    rows = [
        Row("7", "`neuronmap --version` wall time, extra over `python -c pass`", med["version"] - med["pass"],
            0.3, (med["version"] - med["pass"]) / 0.3, "s", "<= 1", cmd,
            {"version_s": med["version"], "pass_s": med["pass"], "note": "ratio = extra seconds / 0.3 s budget"}),
        Row("7", "`neuronmap --help` wall time, extra over `python -c pass`", med["help"] - med["pass"],
            0.3, (med["help"] - med["pass"]) / 0.3, "s", "", cmd,
            {"help_s": med["help"], "pass_s": med["pass"], "note": "no target; pandas and jinja2 load"}),
        Row("7", "`import neuronmap` vs `import torch` (fresh interpreters)", med["neuronmap"], med["torch"],
            med["neuronmap"] / med["torch"], "s", "<= 0.25", cmd),
        Row("7", "`import neuronmap; neuronmap.NeuronMap` vs `import torch`", med["engine"], med["torch"],
            med["engine"] / med["torch"], "s", "", cmd),
    ]
    print_rows(rows, "Question 7: start-up (median wall time of fresh interpreters)")
    for name, values in times.items():
        print(f"# {name}: median {statistics.median(values):.3f} s over {len(values)} "
              f"(min {min(values):.3f}, max {max(values):.3f})")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
