"""Ed25519 signatures of audit entries: a key pair per signer, beside the shared-key HMAC.

An HMAC (``NEURONMAP_AUDIT_KEY``) proves that *someone holding the shared key* wrote a line;
anyone who can check it can also forge it. An Ed25519 signature (RFC 8032) proves that the
holder of one private key wrote it, and anyone can check it with the public key alone, so the
public key can be printed in the model card and compared with the one the signer published.

Each signed entry carries ``signer`` (``alg``, base64 raw ``public_key``, ``key_id`` = first 16
hex digits of SHA-256 of the raw key) inside the hashed body, and ``signature`` (base64 over the
entry's ``hash``) outside it. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public);
``neuronmap audit keygen`` writes a pair. Needs ``pip install "neuronmap[audit]"``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from neuronmap.errors import InvalidParameterError

__all__ = [
    "SIGNING_KEY_ENV",
    "check_signature",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "sign_hash",
    "signer_info",
]

SIGNING_KEY_ENV = "NEURONMAP_AUDIT_SIGNING_KEY"


def _crypto() -> Any:
    from neuronmap._imports import CRYPTOGRAPHY_AVAILABLE

    CRYPTOGRAPHY_AVAILABLE.require("Ed25519 signatures of the audit trail")
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw_public_b64: str) -> str:
    """Short identifier of a public key: first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(base64.b64decode(raw_public_b64)).hexdigest()[:16]


def load_private_key(spec: Any) -> Any:
    """An Ed25519 private key from a key object, a PEM path, PEM bytes, or ``None`` (then the
    ``NEURONMAP_AUDIT_SIGNING_KEY`` path, if set).

    Raises:
        InvalidParameterError: The file is missing or holds no Ed25519 private key.
    """
    if spec is None:
        spec = os.environ.get(SIGNING_KEY_ENV) or None
        if spec is None:
            return None
    ed25519 = _crypto()
    if isinstance(spec, ed25519.Ed25519PrivateKey):
        return spec
    from cryptography.hazmat.primitives import serialization

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise InvalidParameterError(f"Signing key file {str(path)!r} does not exist; create a pair with "
                                        "`neuronmap audit keygen --out KEYDIR`.")
        spec = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(bytes(spec), password=None)
    except (ValueError, TypeError) as err:
        raise InvalidParameterError(f"The signing key is not an unencrypted PEM private key: {err}") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidParameterError(f"The signing key must be an Ed25519 key; got {type(key).__name__}.")
    return key


def signer_info(private_key: Any) -> dict[str, str]:
    """The ``signer`` field of entries signed with ``private_key``."""
    public = base64.b64encode(_raw_public(private_key.public_key())).decode()
    return {"alg": "ed25519", "public_key": public, "key_id": key_id(public)}


def sign_hash(private_key: Any, entry_hash: str) -> str:
    """Base64 Ed25519 signature of an entry's hash."""
    return base64.b64encode(private_key.sign(entry_hash.encode())).decode()


def check_signature(entry: Mapping[str, Any]) -> str | None:
    """``None`` when the entry's signature verifies against its ``signer`` key, else why not."""
    signer = entry.get("signer")
    if not isinstance(signer, Mapping) or signer.get("alg") != "ed25519":
        return "entry carries a signature but no Ed25519 'signer'"
    ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(str(signer.get("public_key"))))
        public.verify(base64.b64decode(str(entry.get("signature"))), str(entry["hash"]).encode())
    except (InvalidSignature, ValueError, TypeError):
        return f"Ed25519 signature does not verify with the entry's key {signer.get('key_id')}"
    return None


def load_public_keys(specs: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Trusted public keys (PEM files, or base64 raw keys) as base64 raw strings.

    Raises:
        InvalidParameterError: A file is missing or holds no Ed25519 public key.
    """
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    out: set[str] = set()
    for spec in specs:
        path = Path(spec)
        if not path.is_file():
            try:
                ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(str(spec), validate=True))
            except (ValueError, TypeError) as err:
                raise InvalidParameterError(f"Public key {str(spec)!r} is neither a PEM file nor a base64 "
                                            "Ed25519 key.") from err
            out.add(str(spec))
            continue
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as err:
            raise InvalidParameterError(f"{path} is not a PEM public key: {err}") from err
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise InvalidParameterError(f"{path} must hold an Ed25519 public key; got {type(key).__name__}.")
        out.add(base64.b64encode(_raw_public(key)).decode())
    return out


def generate_key_pair(out_dir: str | os.PathLike[str], name: str = "audit") -> tuple[Path, Path]:
    """Write ``<name>.pem`` (private, mode 0600) and ``<name>.pub.pem`` into ``out_dir``.

    Raises:
        InvalidParameterError: A key file of that name exists already (keys are never overwritten).
    """
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidParameterError(f"{path} exists already; keys are never overwritten. Choose --name.")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path
