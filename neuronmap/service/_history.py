"""The history endpoint's answers, encoded once and served as bytes.

A run's History is parsed once per change of ``metrics.jsonl`` (:class:`~neuronmap.service._runs.RunStore`);
this module keeps, per run and filter, the JSON body already encoded (orjson when installed),
its gzip twin and an ETag, so that a repeated ``GET /runs/{run}/history`` costs a dictionary
lookup and a socket write: no DataFrame work, no JSON encoding and no thread hop on the event
loop. An entry is dropped when its run is re-read (the cache holds the parsed run it came from
and compares identities), and the cache keeps at most ``size`` entries.

Sizes and costs for a 10k-point history of random values (``benchmarks/service_load.py``, 2
cores): 351 kB of JSON, 91 kB gzipped; turning the frame into columns takes about 80 ms, JSON
encoding 17 ms, gzip a few ms, all once per change of the run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from neuronmap.service._runs import encode_history, filter_history

__all__ = ["EncodedHistory", "HistoryCache", "dumps"]

#: Bodies smaller than this go uncompressed (gzip's header costs more than it saves).
_GZIP_MIN_BYTES = 1024

def _plain(value: Any) -> Any:
    """numpy scalars (a History's epoch column may hold them) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


try:  # orjson: faster than json on the mixed lists of a body, and optional
    import orjson

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes (orjson when installed)."""
        return orjson.dumps(obj, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes (orjson when installed)."""
        return json.dumps(obj, separators=(",", ":"), default=_plain).encode()


@dataclass(frozen=True)
class EncodedHistory:
    """One answer of the history endpoint, ready to send."""

    #: The parsed run it was encoded from (its identity says whether the entry is current).
    source: Any
    #: The JSON body.
    body: bytes
    #: The same body gzipped (``None`` when too small to be worth it).
    gzipped: bytes | None
    #: A strong validator for ``If-None-Match`` (quoted, as sent in the header).
    etag: str

    @classmethod
    def build(cls, source: Any, body: dict[str, Any]) -> EncodedHistory:
        raw = dumps(body)
        packed = gzip.compress(raw, compresslevel=6, mtime=0) if len(raw) >= _GZIP_MIN_BYTES else None
        etag = '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"'
        return cls(source, raw, packed if packed is not None and len(packed) < len(raw) else None, etag)

    def response(self, headers: Any) -> Any:
        """The Starlette response for a request with these headers (304, gzip or plain JSON)."""
        from starlette.responses import Response

        common = {"ETag": self.etag, "Vary": "Accept-Encoding", "Cache-Control": "private, no-cache"}
        if self.etag in _tags(headers.get("if-none-match", "")):
            return Response(status_code=304, headers=common)
        if self.gzipped is not None and "gzip" in headers.get("accept-encoding", "").lower():
            return Response(self.gzipped, media_type="application/json",
                            headers={**common, "Content-Encoding": "gzip"})
        return Response(self.body, media_type="application/json", headers=common)


def _tags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


class HistoryCache:
    """Encoded history answers by (run, filters), current while their parsed run is.

    Example:
        >>> import pandas as pd
        >>> from neuronmap.runs.source import LoadedRun
        >>> frame = pd.DataFrame({"step": [0], "epoch": [None], "event": [None], "analysis": ["a"],
        ...                       "layer": ["l"], "metric": ["m"], "value": [1.0], "key": ["neuronmap/a/l/m"]})
        >>> cache = HistoryCache()
        >>> run = LoadedRun("r", frame)
        >>> first = cache.get_or_build(run, "r", {})
        >>> cache.get(run, "r", {}) is first
        True
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], EncodedHistory] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(name: str, query: dict[str, Any]) -> tuple[Any, ...]:
        return (name, *sorted(query.items()))

    def get(self, source: Any, name: str, query: dict[str, Any]) -> EncodedHistory | None:
        """The cached answer if it was encoded from ``source`` (the run as parsed now)."""
        key = self._key(name, query)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit.source is not source:
                return None
            self._entries.move_to_end(key)
            return hit

    def get_or_build(self, source: Any, name: str, query: dict[str, Any]) -> EncodedHistory:
        """The answer for a filter (``analysis``, ``layer``, ``metric``, ``key``, ``step_min``,
        ``step_max``, ``limit``, ``offset``), encoding it if needed (CPU work: call off the event loop)."""
        hit = self.get(source, name, query)
        if hit is not None:
            return hit
        filters = {k: query.get(k) for k in ("analysis", "layer", "metric", "key", "step_min", "step_max")}
        frame = filter_history(source.frame, **filters)
        total = len(frame)
        offset, limit = int(query.get("offset") or 0), query.get("limit")
        if offset or limit is not None:
            frame = frame.iloc[offset: None if limit is None else offset + int(limit)]
        end = offset + len(frame)
        body = {"run": name, **encode_history(frame), "total": total, "offset": offset,
                "next_offset": end if end < total else None}
        entry = EncodedHistory.build(source, body)
        key = self._key(name, query)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return entry
