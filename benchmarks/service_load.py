"""Load test of ``neuronmap serve``: concurrent clients reading a 10k-point run history.

A real server (``neuronmap serve`` in a subprocess, 127.0.0.1 only) serves one run whose
History has ``--steps`` × ``--keys`` points (default 100 × 100 = 10 000). ``--clients``
asyncio clients (httpx, default 50) each GET ``/api/v1/runs/bench/history`` in a loop for
``--duration`` seconds (default 60) and record the latency of every complete response.

Rows: p95 latency against the 200 ms target, p50 latency, throughput, and errors (target 0).

    python benchmarks/service_load.py [--clients 50] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, print_rows, write_json

P95_TARGET_MS = 200.0


def _make_run(root: Path, steps: int, keys: int) -> None:
    from neuronmap.reporters.local import LocalReporter

    reporter = LocalReporter(root, run_name="bench", render_html=False)
    layers = [f"encoder.layer.{i}" for i in range(max(1, keys // 10))]
    names = [f"neuronmap/bench/{layer}/m{j}" for layer in layers for j in range(10)][:keys]
    for step in range(steps):
        reporter.log_metrics({k: float(step + i) / 100 for i, k in enumerate(names)}, step=step)
    reporter.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(url: str, token: str, clients: int, duration: float) -> tuple[list[float], int, int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    points = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 limits=limits) as client:
        end = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors, points
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    response = await client.get("/api/v1/runs/bench/history")
                    body = response.content
                    if response.status_code != 200:
                        errors += 1
                        continue
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if not points:
                    import json

                    points = json.loads(body)["count"]

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from neuronmap.service.tokens import TokenStore

    work = Path(tempfile.mkdtemp(prefix="neuronmap-load-"))
    _make_run(work / "runs", args.steps, args.keys)
    token = TokenStore(work / "tokens.json").create("read", name="load-test")
    port = _free_port()
    cli = Path(sys.executable).parent / "neuronmap"
    server = subprocess.Popen([str(cli), "serve", "--runs", str(work / "runs"), "--tokens", str(work / "tokens.json"),
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start within 60 s")
            time.sleep(0.2)
        asyncio.run(_load(url, token, 2, 1.0))  # warm-up: first parse of the run, caches
        t0 = time.perf_counter()
        latencies, errors, points = asyncio.run(_load(url, token, args.clients, args.duration))
        elapsed = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms) if ms else float("nan")
    p95 = ms[int(0.95 * (len(ms) - 1))] if ms else float("nan")
    total = len(ms) + errors
    command = (f"python benchmarks/service_load.py --clients {args.clients} --duration {args.duration:g} "
               f"--steps {args.steps} --keys {args.keys}")
    what = f"{args.clients} clients reading a {points}-point history for {args.duration:g} s"
    rows = [
        Row("8", f"service: p95 latency, {what}", p95, P95_TARGET_MS, p95 / P95_TARGET_MS, "ms", "<= 1", command,
            {"p50_ms": p50, "p95_ms": p95, "requests": total, "errors": errors}),
        Row("8", "service: p50 latency (vs the p95 target)", p50, P95_TARGET_MS, p50 / P95_TARGET_MS, "ms", "", command),
        Row("8", "service: throughput (requests/s; baseline 1/s)", len(ms) / elapsed, 1.0, len(ms) / elapsed, "req/s",
            "", command),
        Row("8", f"service: errors out of {total} requests", float(errors), float(max(total, 1)),
            errors / max(total, 1), "", "<= 0", command),
    ]
    print_rows(rows, "Question 8: the service under load")
    write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
