"""Python client of ``neuronmap serve`` (httpx): typed methods that mirror the REST API.

Retries with exponential back-off on connection errors and 5xx answers (never on 4xx: those
are the caller's to fix), a timeout on every request, pagination handled for you, and errors
that carry the server's problem+json ``detail``.

Example:
    >>> from neuronmap.client import Client
    >>> client = Client("http://127.0.0.1:8000", token="nm_…")  # doctest: +SKIP
    >>> client.runs()[0]["id"]  # doctest: +SKIP
    'offline-eval'
    >>> client.run("offline-eval").history.head()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from neuronmap.errors import NeuronMapError

__all__ = ["Client", "ClientError", "Job", "RemoteRun"]

_RETRY_STATUS = {500, 502, 503, 504}


class ClientError(NeuronMapError, RuntimeError):
    """The server refused a request (4xx/5xx) or could not be reached.

    Attributes:
        status: HTTP status (``None`` when the server was not reached).
        problem: The server's RFC 9457 problem document, when it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = dict(problem or {})


def _history_frame(body: Mapping[str, Any]) -> pd.DataFrame:
    """Rebuild the long-format History exactly as ``read_history`` builds it."""
    from neuronmap.results import HISTORY_COLUMNS

    keys = body["keys"]
    rows = []
    for step, epoch, event, index, value in zip(body["step"], body["epoch"], body["event"], body["key_index"],
                                                body["value"], strict=True):
        k = keys[index]
        rows.append([step, epoch, event, k["analysis"], k["layer"], k["metric"],
                     float("nan") if value is None else float(value), k["key"]])
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return frame


class Client:
    """A connection to one NeuronMap server.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:8000``.
        token: Bearer token (default ``NEURONMAP_TOKEN``).
        timeout: Seconds per request (connect and read).
        retries: Extra attempts after a connection error or a 5xx answer.
        backoff: First back-off in seconds; doubled after each retry.

    Example:
        >>> Client("http://127.0.0.1:1", token="x", retries=0).url
        'http://127.0.0.1:1'
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.2, transport: Any = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        token = token or os.environ.get("NEURONMAP_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request with retries; return the ``httpx.Response`` of a 2xx answer.

        Raises:
            ClientError: A 4xx/5xx answer (with the server's ``detail``), or no answer after the retries.
        """
        import httpx

        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if last:
                    raise ClientError(f"Cannot reach {self.url} ({method} {path}) after {self.retries + 1} "
                                      f"attempt(s): {type(err).__name__}: {err}") from err
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUS or last:
                    raise self._error(method, path, response)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _error(method: str, path: str, response: Any) -> ClientError:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        detail = problem.get("detail") if isinstance(problem, dict) else None
        return ClientError(f"{method} {path} -> {response.status_code}: {detail or response.text[:200]}",
                           status=response.status_code, problem=problem if isinstance(problem, dict) else None)

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def _pages(self, path: str, page_size: int = 100, **params: Any) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = self._get(path, limit=page_size, offset=offset, **params)
            yield from page["items"]
            offset = page["next_offset"]

    # ------------------------------------------------------------------ service
    def health(self) -> dict[str, Any]:
        """``GET /health`` (no token needed)."""
        return self._get("/health")

    def whoami(self) -> dict[str, Any]:
        return self._get("/whoami")

    # ------------------------------------------------------------------ runs
    def runs(self, *, query: str | None = None, status: str | None = None,
             page_size: int = 100) -> list[dict[str, Any]]:
        """Every run (all pages), newest first, optionally filtered."""
        return list(self._pages("/runs", page_size, q=query, status=status))

    def run(self, run_id: str) -> RemoteRun:
        """A handle on one run (nothing is fetched until you ask)."""
        return RemoteRun(self, run_id)

    def history(self, run_id: str, *, analysis: str | None = None, layer: str | None = None,
                metric: str | None = None, key: str | None = None, step_min: int | None = None,
                step_max: int | None = None, page_size: int | None = None) -> pd.DataFrame:
        """The run's long-format History (the same DataFrame as the local ``History.frame``).

        Filters are applied on the server, so only the matching points travel. By default the
        whole (filtered) history comes in one gzipped answer; ``page_size`` fetches it that many
        rows at a time instead (smaller answers, more requests).
        """
        filters = {"analysis": analysis, "layer": layer, "metric": metric, "key": key, "step_min": step_min,
                   "step_max": step_max}
        if page_size is None:
            return _history_frame(self._get(f"/runs/{run_id}/history", **filters))
        pages: list[pd.DataFrame] = []
        offset: int | None = 0
        while offset is not None:
            body = self._get(f"/runs/{run_id}/history", limit=page_size, offset=offset, **filters)
            pages.append(_history_frame(body))
            offset = body.get("next_offset")
        return pd.concat(pages, ignore_index=True) if len(pages) > 1 else pages[0]

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Metric deltas between two runs, and CKA where both stored activations."""
        return self._get("/compare", a=a, b=b)

    # ------------------------------------------------------------------ jobs
    def submit_job(self, spec: Mapping[str, Any] | str, *, run_name: str | None = None) -> Job:
        """Queue an analysis job (write scope); ``spec`` is what ``neuronmap analyze`` reads."""
        body = self.request("POST", "/jobs", json={"spec": spec if isinstance(spec, str) else dict(spec),
                                                   "run_name": run_name}).json()
        return Job(self, body["id"], body)

    def job(self, job_id: str) -> Job:
        return Job(self, job_id, self._get(f"/jobs/{job_id}"))

    def jobs(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        return list(self._pages("/jobs", page_size))


@dataclass
class RemoteRun:
    """One run on the server; each attribute is one request."""

    client: Client
    id: str

    @property
    def summary(self) -> dict[str, Any]:
        return self.client._get(f"/runs/{self.id}")

    @property
    def findings(self) -> list[dict[str, Any]]:
        return self.client._get(f"/runs/{self.id}/findings")["findings"]

    @property
    def history(self) -> pd.DataFrame:
        """The whole History; use :meth:`Client.history` to filter on the server."""
        return self.client.history(self.id)

    def figures(self) -> list[dict[str, Any]]:
        return self.client._get(f"/runs/{self.id}/figures")["items"]

    def figure(self, path: str) -> bytes:
        """PNG bytes of one figure (``path`` from :meth:`figures`)."""
        return self.client.request("GET", f"/runs/{self.id}/figures/{path}").content

    def tables(self) -> list[dict[str, Any]]:
        return self.client._get(f"/runs/{self.id}/tables")["items"]

    def table(self, path: str) -> pd.DataFrame:
        body = self.client._get(f"/runs/{self.id}/tables/{path}")
        return pd.DataFrame(body["data"], columns=body["columns"])

    def card(self, fmt: str = "md", *, template: str = "default") -> str:
        return self.client.request("GET", f"/runs/{self.id}/card", params={"format": fmt, "template": template}).text

    def gate(self, config: str | list[Any] | Mapping[str, Any], *, baseline: str | None = None,
             record: bool = False) -> dict[str, Any]:
        """Evaluate gate checks; ``["exit_code"]`` is what ``neuronmap gate`` would exit with."""
        payload = {"config": config if isinstance(config, (str, list)) else dict(config), "baseline": baseline,
                   "record": record}
        return self.client.request("POST", f"/runs/{self.id}/gate", json=payload).json()

    def audit(self, *, head: str | None = None) -> dict[str, Any]:
        return self.client._get(f"/runs/{self.id}/audit", head=head)


class Job:
    """An analysis job on the server."""

    def __init__(self, client: Client, job_id: str, record: Mapping[str, Any]) -> None:
        self.client = client
        self.id = job_id
        self.record = dict(record)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return str(self.record["status"])

    def refresh(self) -> Job:
        self.record = self.client._get(f"/jobs/{self.id}")
        return self

    def logs(self, offset: int = 0) -> str:
        return self.client._get(f"/jobs/{self.id}/logs", offset=offset)["text"]

    def cancel(self) -> Job:
        self.record = self.client.request("POST", f"/jobs/{self.id}/cancel").json()
        return self

    def wait(self, timeout: float = 300.0, poll: float = 0.2) -> Job:
        """Poll until the job is ``succeeded``, ``failed`` or ``cancelled``.

        Raises:
            TimeoutError: Still pending after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.refresh().status not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Job {self.id} is still {self.status} after {timeout:.0f} s.")
            time.sleep(poll)
        return self
