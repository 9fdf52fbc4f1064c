"""Bearer tokens for ``neuronmap serve``: created once, shown once, stored only as hashes.

A token reads ``nm_<id>_<secret>``: ``id`` (8 hex digits) names it in listings and logs,
``secret`` is 32 random bytes (``secrets.token_urlsafe``). The token file keeps, per token, its
id, name, scope, creation time and the SHA-256 of the whole token; a plain hash suffices
because the secret has 256 bits of entropy (a slow password hash protects *guessable*
secrets). The file is JSON, written atomically with mode 0600::

    {"tokens": [{"id": "3f2a9c01", "name": "ci", "scope": "read",
                 "sha256": "…", "created": "2026-01-01T00:00:00+00:00"}]}

Scopes: ``read`` (runs, histories, figures, cards, gates, audit verification, job status) and
``write`` (everything ``read`` may, plus submitting and cancelling analysis jobs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, get_args

from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["DEFAULT_TOKEN_FILE", "Scope", "TokenRecord", "TokenStore"]

Scope = Literal["read", "write"]
#: Where ``neuronmap token`` and ``neuronmap serve`` look when no ``--tokens`` is given.
DEFAULT_TOKEN_FILE = "neuronmap-tokens.json"
TOKEN_FILE_ENV = "NEURONMAP_TOKEN_FILE"


def default_token_file() -> Path:
    """``$NEURONMAP_TOKEN_FILE`` or ``./neuronmap-tokens.json``."""
    return Path(os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """One stored token (never the token itself)."""

    #: Short public id, the ``<id>`` part of ``nm_<id>_<secret>``.
    id: str
    #: A label chosen by whoever created it (``ci``, ``reviewer`` …).
    name: str
    scope: Scope
    #: SHA-256 (hex) of the whole token.
    sha256: str
    #: ISO-8601 UTC creation time.
    created: str

    def allows(self, needed: Scope) -> bool:
        """Whether this token's scope covers ``needed`` (``write`` implies ``read``)."""
        return self.scope == "write" or needed == "read"


class TokenStore:
    """The hashed tokens of one token file, re-read when the file changes.

    Args:
        path: The JSON token file (created on the first :meth:`create`).

    Example:
        >>> import tempfile, pathlib
        >>> store = TokenStore(pathlib.Path(tempfile.mkdtemp()) / "tokens.json")
        >>> token = store.create("read", name="ci")
        >>> store.verify(token).scope
        'read'
        >>> store.verify("nm_00000000_wrong") is None
        True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, TokenRecord] = {}

    def __repr__(self) -> str:
        return f"TokenStore(path={str(self.path)!r})"

    # ------------------------------------------------------------------ reading
    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._by_id = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = [TokenRecord(**item) for item in data.get("tokens", [])]
        except (OSError, ValueError, TypeError) as err:
            raise NeuronMapError(f"Token file {str(self.path)!r} is not a NeuronMap token file: {err}") from err
        self._by_id = {r.id: r for r in records}
        self._stamp = stamp

    def records(self) -> list[TokenRecord]:
        """Every stored token, oldest first."""
        self._reload()
        return sorted(self._by_id.values(), key=lambda r: (r.created, r.id))

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a presented token, or ``None`` if it is unknown or malformed."""
        parts = token.split("_")
        if len(parts) != 3 or parts[0] != "nm":
            return None
        self._reload()
        record = self._by_id.get(parts[1])
        if record is None or not hmac.compare_digest(record.sha256, _digest(token)):
            return None
        return record

    # ------------------------------------------------------------------ writing
    def create(self, scope: str, *, name: str = "") -> str:
        """Add a token and return it; only its hash is stored, so show it to the user now.

        Raises:
            InvalidParameterError: ``scope`` is not ``read`` or ``write``.
        """
        if scope not in get_args(Scope):
            raise InvalidParameterError(f"Token scope must be one of {list(get_args(Scope))}; got {scope!r}.")
        self._reload()
        token_id = secrets.token_hex(4)
        while token_id in self._by_id:
            token_id = secrets.token_hex(4)
        token = f"nm_{token_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = TokenRecord(token_id, name, scope, _digest(token), created)  # type: ignore[arg-type]
        self._write([*self.records(), record])
        return token

    def revoke(self, token_id: str) -> bool:
        """Remove a token by id; ``False`` if there was none."""
        kept = [r for r in self.records() if r.id != token_id]
        if len(kept) == len(self._by_id):
            return False
        self._write(kept)
        return True

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"tokens": [asdict(r) for r in records]}, fh, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None
        self._reload()
