"""Load test of ``neuronmap serve``: concurrent clients reading a 10k-point run history.

A real server (``neuronmap serve`` in a subprocess, 127.0.0.1 only) serves one run whose
History has ``--steps`` × ``--keys`` points (default 100 × 100 = 10 000). ``--clients``
asyncio clients (default 50) each GET ``/api/v1/runs/bench/history`` in a loop for
``--duration`` seconds (default 60), each on its own keep-alive connection, and record the
latency of every complete response. Every response is read whole and checked: status 200 and
the full body (gunzipped when the server compressed it: clients send ``Accept-Encoding: gzip``
as browsers and httpx do; ``--identity`` asks for plain JSON), whose length must equal the
first answer's, which is parsed and must hold all ``steps × keys`` points. No ``If-None-Match``
is sent, so no answer is a 304.

The load generator is a minimal HTTP/1.1 client on asyncio streams (``--client raw``, the
default). ``--client httpx`` uses ``httpx.AsyncClient`` instead; on this 2-core machine its
connection pool costs about 4 ms of CPU per request at 50 connections, so with it the client,
not the server, saturates and the latencies measure mostly the client's own queue (the
first measurement, p95 2.6 s, was such a run).

Rows: p95 latency against the 200 ms target, p50 latency, throughput, and errors (target 0).

    python benchmarks/service_load.py [--clients 50] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, print_rows, write_json

P95_TARGET_MS = 200.0
PATH = "/api/v1/runs/bench/history"


def _make_run(root: Path, steps: int, keys: int) -> None:
    from neuronmap.reporters.local import LocalReporter

    reporter = LocalReporter(root, run_name="bench", render_html=False)
    layers = [f"encoder.layer.{i}" for i in range(max(1, keys // 10))]
    names = [f"neuronmap/bench/{layer}/m{j}" for layer in layers for j in range(10)][:keys]
    # seeded random values: as incompressible as real metrics (a regular pattern would gzip 80x)
    rng = random.Random(0)
    for step in range(steps):
        reporter.log_metrics({k: rng.random() for k in names}, step=step)
    reporter.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(url: str, token: str, clients: int, duration: float, *, gzip_ok: bool = True,
                client: str = "raw") -> tuple[list[float], int, int]:
    """Latencies (s) of complete answers, the error count and the points in one answer."""
    if client == "httpx":
        return await _load_httpx(url, token, clients, duration)
    host, port = url.split("//", 1)[1].split(":")
    request = (f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
               f"Accept: application/json\r\nAccept-Encoding: {'gzip' if gzip_ok else 'identity'}\r\n\r\n"
               ).encode()
    latencies: list[float] = []
    errors = 0
    first: dict[str, int] = {}
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                assert reader is not None
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                at = head.index(b"content-length:")
                body = await reader.readexactly(int(head[at + 15: head.index(b"\r\n", at)]))
                if b"content-encoding: gzip" in head:
                    body = zlib.decompress(body, 31)
                if head[9:12] != b"200" or b"connection: close" in head:
                    raise ValueError(f"answer {head[9:12].decode()}")
                if not first:
                    first.update(length=len(body), points=json.loads(body)["count"])
                elif len(body) != first["length"]:
                    raise ValueError(f"a {len(body)}-byte answer, the first had {first['length']}")
            except (OSError, ValueError, asyncio.IncompleteReadError, zlib.error):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - t0)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, first.get("points", 0)


async def _load_httpx(url: str, token: str, clients: int, duration: float) -> tuple[list[float], int, int]:
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
                    response = await client.get(PATH)
                    body = response.content
                    if response.status_code != 200:
                        errors += 1
                        continue
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if not points:
                    points = json.loads(body)["count"]

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, points


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator: minimal asyncio HTTP/1.1 (default) or httpx.AsyncClient")
    parser.add_argument("--identity", action="store_true", help="ask for plain JSON (no gzip)")
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
        options = {"gzip_ok": not args.identity, "client": args.client}
        asyncio.run(_load(url, token, 2, 1.0, **options))  # warm-up: first parse of the run, caches
        load_before = os.getloadavg()[0]
        cpu0, client0, t0 = _cpu_seconds(server.pid), time.process_time(), time.perf_counter()
        latencies, errors, points = asyncio.run(_load(url, token, args.clients, args.duration, **options))
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = _cpu_seconds(server.pid) - cpu0, time.process_time() - client0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    if points != args.steps * args.keys:
        raise SystemExit(f"the answers held {points} points, not {args.steps * args.keys}")
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms) if ms else float("nan")
    p95 = ms[int(0.95 * (len(ms) - 1))] if ms else float("nan")
    total = len(ms) + errors
    command = (f"python benchmarks/service_load.py --clients {args.clients} --duration {args.duration:g} "
               f"--steps {args.steps} --keys {args.keys}" + (" --client httpx" if args.client == "httpx" else "")
               + (" --identity" if args.identity else ""))
    p99 = ms[int(0.99 * (len(ms) - 1))] if ms else float("nan")
    print(f"client={args.client} gzip={not args.identity} requests={len(ms)} errors={errors} "
          f"p50={p50:.1f} ms p95={p95:.1f} ms p99={p99:.1f} ms throughput={len(ms) / elapsed:.1f}/s "
          f"server CPU {server_cpu:.1f} s, client CPU {client_cpu:.1f} s in {elapsed:.1f} s; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    what = f"{args.clients} clients reading a {points}-point history for {args.duration:g} s"
    rows = [
        Row("10", f"service: p95 latency, {what}", p95, P95_TARGET_MS, p95 / P95_TARGET_MS, "ms", "<= 1", command,
            {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "requests": total, "errors": errors,
             "client": args.client, "gzip": not args.identity, "server_cpu_s": server_cpu,
             "client_cpu_s": client_cpu, "load_average_before": load_before}),
        Row("10", "service: p50 latency (vs the p95 target)", p50, P95_TARGET_MS, p50 / P95_TARGET_MS, "ms", "",
            command),
        Row("10", "service: throughput (requests/s; baseline 1/s)", len(ms) / elapsed, 1.0, len(ms) / elapsed, "req/s",
            "", command),
        Row("10", f"service: errors out of {total} requests", float(errors), float(max(total, 1)),
            errors / max(total, 1), "", "<= 0", command),
    ]
    print_rows(rows, "Question 8: the service under load")
    write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
