"""``neuronmap serve`` and ``neuronmap token``.

``serve`` binds 127.0.0.1 by default: exposing the service on a network is a decision (``--host
0.0.0.0``, as the container image does, behind its own network boundary).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from neuronmap.errors import NeuronMapError

__all__ = ["add_parser"]

_SERVE_EPILOG = """examples:
  neuronmap token create --scope read --name reviewer
  neuronmap serve --runs ./neuronmap-runs
  neuronmap serve --runs /data/runs --model-root /models --executor ray     # RAY_ADDRESS=head:6379
  neuronmap serve --runs ./neuronmap-runs --mlflow http://127.0.0.1:5000

then: curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/api/v1/runs
      or open http://127.0.0.1:8000/ui/login#$TOKEN"""


def add_parser(sub: Any) -> None:
    """Register ``serve`` and ``token`` on the ``neuronmap`` subparsers."""
    p = sub.add_parser("serve", help="serve the REST API and dashboard over run folders (and MLflow)",
                       epilog=_SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="neuronmap-runs", metavar="DIR", help="folder of run folders")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tokens", default=None, metavar="FILE",
                   help="token file (default $NEURONMAP_TOKEN_FILE or ./neuronmap-tokens.json)")
    p.add_argument("--mlflow", default=None, metavar="URI", help="also browse the runs of this MLflow tracking URI")
    p.add_argument("--model-root", action="append", default=[], metavar="DIR",
                   help="folder jobs may read models and probe sets from (repeatable; none: no jobs)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where jobs run: local worker processes, or a Ray cluster (RAY_ADDRESS)")
    p.add_argument("--workers", type=int, default=1, help="jobs at once for the local executor")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT", help="default $RAY_ADDRESS")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin (CORS is off unless given)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser("token", help="create, list or revoke API tokens (stored hashed)")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--scope", choices=["read", "write"], required=True)
    c.add_argument("--name", default="", help="a label (ci, reviewer …)")
    c.add_argument("--tokens", default=None, metavar="FILE")
    c.set_defaults(handler=_cmd_token_create)
    ls = tsub.add_parser("list", help="list token ids, names and scopes")
    ls.add_argument("--tokens", default=None, metavar="FILE")
    ls.set_defaults(handler=_cmd_token_list)
    rv = tsub.add_parser("revoke", help="revoke a token by id")
    rv.add_argument("id")
    rv.add_argument("--tokens", default=None, metavar="FILE")
    rv.set_defaults(handler=_cmd_token_revoke)


def _store(path: str | None) -> Any:
    from neuronmap.service.tokens import TokenStore, default_token_file

    return TokenStore(Path(path) if path else default_token_file())


def _cmd_token_create(args: argparse.Namespace) -> int:
    store = _store(args.tokens)
    print(store.create(args.scope, name=args.name))
    import sys

    print(f"(stored hashed in {store.path}; this is the only time the token is shown)", file=sys.stderr)
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    for r in _store(args.tokens).records():
        print(f"{r.id}  {r.scope:5}  {r.created}  {r.name}")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    if not _store(args.tokens).revoke(args.id):
        raise NeuronMapError(f"No token with id {args.id!r}; `neuronmap token list` shows the ids.")
    print(f"revoked {args.id}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from neuronmap._imports import RequirementCache

    for module in ("fastapi", "uvicorn"):
        RequirementCache(module, "service").require("neuronmap serve")
    import uvicorn

    from neuronmap.service.app import ServiceConfig, create_app
    from neuronmap.service.tokens import default_token_file

    config = ServiceConfig(
        runs=Path(args.runs), tokens=Path(args.tokens) if args.tokens else default_token_file(),
        model_roots=[Path(r) for r in args.model_root],
        mlflow_uri=args.mlflow or os.environ.get("NEURONMAP_MLFLOW_URI"),
        executor=args.executor, workers=args.workers, ray_address=args.ray_address,
        max_body_bytes=args.max_body_bytes, cors_origins=list(args.cors_origin),
    )
    if not config.tokens.exists():
        import sys

        print(f"neuronmap serve: no token file at {config.tokens} yet; every request but /api/v1/health will "
              "get 401 until you run `neuronmap token create`.", file=sys.stderr)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level,
                proxy_headers=False, server_header=False)
    return 0
