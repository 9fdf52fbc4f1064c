"""Headless Chromium driven over the DevTools protocol on a pipe (no websocket library, no driver).

``chromium --remote-debugging-pipe`` reads JSON commands on fd 3 and writes answers and events
on fd 4, each message ending in a NUL byte (the transport Puppeteer uses). One browser serves
every page of a test module, which costs one start instead of one per page, and pages can be
waited on (``wait_for``) and used (``evaluate`` a click) rather than dumped once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    """The browser answered a command with an error, went away, or a wait timed out."""


class Browser:
    """One headless Chromium with one page; ``with Browser(profile) as b: b.goto(url)``."""

    def __init__(self, profile: Path) -> None:
        if CHROMIUM is None:
            raise BrowserError("no chromium on PATH")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,1600", "about:blank"]
        # the protocol's fixed descriptors 3 and 4, set by bash (a preexec_fn is unsafe with threads;
        # dash takes single-digit descriptors only)
        wire = (f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-')
        self.proc = subprocess.Popen(["bash", "-c", wire, CHROMIUM, *flags], pass_fds=(to_browser_r, from_browser_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        #: ``Runtime.exceptionThrown`` and console errors, for failure messages.
        self.errors: list[str] = []
        threading.Thread(target=self._read, name="chromium-pipe", daemon=True).start()
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        self.send("Runtime.enable", session=True)
        self.send("Page.enable", session=True)

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                with self._lock:
                    for waiting in self._answers.values():
                        waiting.put({"error": {"message": "the browser closed the pipe"}})
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiting = self._answers.pop(message["id"], None)
                    if waiting is not None:
                        waiting.put(message)
                elif message.get("method") == "Runtime.exceptionThrown":
                    details = message["params"]["exceptionDetails"]
                    self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
                elif message.get("method") == "Runtime.consoleAPICalled" and message["params"]["type"] == "error":
                    self.errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                for a in message["params"]["args"]))

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False,
             timeout: float = 30.0) -> dict[str, Any]:
        """One protocol command; its ``result`` (raises :class:`BrowserError` on an error answer)."""
        ident = next(self._ids)
        waiting: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._lock:
            self._answers[ident] = waiting
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            answer = waiting.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer within {timeout:g} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll until the expression is truthy in the page (navigations in between are fine)."""
        deadline = time.monotonic() + timeout
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"  # nodes: no JSON
        while True:
            try:
                value = self.evaluate(probe)
            except BrowserError:  # the page is between documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                url = self.evaluate("location.href")
                raise BrowserError(f"{expression!r} still false after {timeout:g} s at {url}; "
                                   f"page errors: {self.errors[-5:]}")
            time.sleep(0.1)

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def login(self, base: str, token: str, next_path: str) -> None:
        """Sign in through the login page (token in the URL fragment) and land on ``next_path``."""
        from urllib.parse import quote

        self.goto(f"{base}/ui/login?next={quote(next_path, safe='')}#{token}")
        self.wait_for(f"location.pathname + location.search === {json.dumps(next_path)} "
                      "&& document.readyState === 'complete'")

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
