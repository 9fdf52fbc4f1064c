"""Run the container image's steps without a container runtime, in a fresh virtual environment.

1. ``python -m venv`` (the image's ``python:3.11-slim`` interpreter stands in for this one),
2. ``docker/install.sh`` (the Dockerfile's RUN step),
3. ``neuronmap token create`` (what ``docker compose run neuronmap-token`` does),
4. ``docker/entrypoint.sh`` (the ENTRYPOINT) on 127.0.0.1 at a free port,
5. ``docker/healthcheck.py`` (the HEALTHCHECK) until it passes, then one authorised and one
   unauthorised request, and a clean stop.

    python scripts/image_smoke.py                       # installs from the package index
    SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    python scripts/image_smoke.py --offline-site "$SITE"                   # no network

``--wheel-cache DIR`` (with ``--offline-site``, as the test runs it) keeps the NeuronMap wheel
built from the current sources in ``DIR/<digest of the sources>/`` and hands that wheel to
``docker/install.sh`` instead of the source tree, so an unchanged checkout skips the build (a
few seconds); any change to the package, pyproject.toml or README.md builds a new one.

Prints one JSON line with what was checked; exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _sources_digest() -> str:
    digest = hashlib.blake2b(digest_size=10)
    files = [ROOT / "pyproject.toml", ROOT / "README.md",
             *(p for p in sorted((ROOT / "neuronmap").rglob("*")) if p.is_file() and "__pycache__" not in p.parts)]
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cached_wheel(cache: Path, build: Path, env: dict[str, str], report: dict[str, object]) -> Path:
    """The wheel of the current sources from ``cache``, built there first if needed."""
    folder = cache / _sources_digest()
    wheels = sorted(folder.glob("neuronmap-*.whl"))
    report["wheel_cached"] = bool(wheels)
    if not wheels:
        for old in cache.glob("*"):  # wheels of other sources are stale
            shutil.rmtree(old, ignore_errors=True)
        # built by this interpreter (the fresh venv has no pip before install.sh); the wheel is pure Python
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-index", "--no-build-isolation", "-w", str(folder), str(build)],
                       check=True, env=env, cwd=build.parent)
        wheels = sorted(folder.glob("neuronmap-*.whl"))
    return wheels[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the venv and data go (default: a temp folder)")
    parser.add_argument("--offline-site", default=None, metavar="DIR",
                        help="take dependencies from this site-packages instead of the index")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the healthcheck to pass")
    parser.add_argument("--wheel-cache", default=None, metavar="DIR",
                        help="reuse the NeuronMap wheel built from identical sources (needs --offline-site)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="neuronmap-image-"))
    venv, data = work / "venv", work / "data"
    (data / "runs").mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"workdir": str(work)}
    t0 = time.perf_counter()
    # offline, pip and setuptools come with the other dependencies (a venv's bundled setuptools is too old
    # to build wheels on its own, and nothing newer can be fetched)
    subprocess.run([sys.executable, "-m", "venv", *(["--without-pip"] if args.offline_site else []), str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    if args.offline_site:
        env["NEURONMAP_OFFLINE_SITE"] = args.offline_site
    build = work / "src"  # pip builds in the source tree; keep the checkout clean
    subprocess.run(["cp", "-r", str(ROOT / "neuronmap"), str(ROOT / "pyproject.toml"), str(ROOT / "README.md"),
                    str(ROOT / "constraints.txt"), str(ROOT / "docker"), "-t", str(work)], check=True)
    for name in ("neuronmap", "pyproject.toml", "README.md", "constraints.txt", "docker"):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(work / name, build / name)
    target = str(build)
    if args.wheel_cache:
        if not args.offline_site:
            raise SystemExit("--wheel-cache needs --offline-site (the index install builds from the source tree)")
        target = str(_cached_wheel(Path(args.wheel_cache), build, env, report))
    subprocess.run(["sh", str(build / "docker" / "install.sh"), str(python), target], check=True, env=env, cwd=work)
    report["install_s"] = round(time.perf_counter() - t0, 1)
    installed = subprocess.run([str(python), "-c", "import neuronmap, sys; print(neuronmap.__file__)"],
                               capture_output=True, text=True, check=True, env=env, cwd=work).stdout.strip()
    if not installed.startswith(str(venv)):
        raise SystemExit(f"neuronmap was imported from {installed}, not from the fresh environment {venv}")
    token = subprocess.run([str(venv / "bin" / "neuronmap"), "token", "create", "--scope", "read", "--tokens",
                            str(data / "tokens.json")],
                           capture_output=True, text=True, check=True, env=env).stdout.strip()
    port = _free_port()
    env.update(NEURONMAP_HOST="127.0.0.1", NEURONMAP_PORT=str(port), NEURONMAP_RUNS=str(data / "runs"),
               NEURONMAP_TOKEN_FILE=str(data / "tokens.json"))
    server = subprocess.Popen(["sh", str(build / "docker" / "entrypoint.sh")], env=env, cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + args.timeout
        healthy = False
        while time.monotonic() < deadline and server.poll() is None:
            check = subprocess.run([str(python), str(build / "docker" / "healthcheck.py")], env=env)
            if check.returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        report["healthy"] = healthy
        report["start_s"] = round(time.perf_counter() - t0 - float(report["install_s"]), 1)  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{port}/api/v1"
        report["runs_with_token"] = _status(f"{base}/runs", token) if healthy else None
        report["runs_without_token"] = _status(f"{base}/runs") if healthy else None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            out, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            out, _ = server.communicate()
    report["server_exit"] = server.returncode
    ok = report["healthy"] and report["runs_with_token"] == 200 and report["runs_without_token"] == 401
    report["ok"] = bool(ok)
    if not ok:
        report["server_log"] = out[-3000:]
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
