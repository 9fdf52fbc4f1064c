"""``neuronmap token create | list | revoke`` and what a running server makes of them."""

from __future__ import annotations

import json
import stat

import httpx
import pytest

from neuronmap.cli import main
from neuronmap.errors import InvalidParameterError
from neuronmap.service.tokens import TokenStore


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["token", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_and_revoke_through_the_cli(tmp_path, capsys) -> None:
    tokens = tmp_path / "tokens.json"
    code, out, err = _cli(capsys, "create", "--scope", "write", "--name", "ci", "--tokens", str(tokens))
    assert code == 0 and "this is the only time the token is shown" in err
    token = out.strip()
    prefix, token_id, secret = token.split("_", 2)
    assert prefix == "nm" and len(token_id) == 8 and len(secret) >= 40
    stored = tokens.read_text()
    assert token not in stored and secret not in stored  # only the hash is kept
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert json.loads(stored)["tokens"][0]["id"] == token_id

    _cli(capsys, "create", "--scope", "read", "--name", "reviewer", "--tokens", str(tokens))
    code, listing, _ = _cli(capsys, "list", "--tokens", str(tokens))
    rows = {line.split()[0]: line.split() for line in listing.strip().splitlines()}
    assert code == 0 and len(rows) == 2 and secret not in listing
    assert rows[token_id][1] == "write" and rows[token_id][-1] == "ci"
    (other,) = set(rows) - {token_id}
    assert rows[other][1] == "read" and rows[other][-1] == "reviewer"

    code, out, _ = _cli(capsys, "revoke", token_id, "--tokens", str(tokens))
    assert code == 0 and out.strip() == f"revoked {token_id}"
    code, listing, _ = _cli(capsys, "list", "--tokens", str(tokens))
    assert token_id not in listing and "reviewer" in listing
    code, _, err = _cli(capsys, "revoke", token_id, "--tokens", str(tokens))
    assert code == 2 and f"No token with id '{token_id}'" in err and "neuronmap token list" in err


def test_a_bad_scope_is_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["token", "create", "--scope", "admin", "--tokens", str(tmp_path / "t.json")])
    assert exit_.value.code == 2 and "invalid choice: 'admin'" in capsys.readouterr().err
    with pytest.raises(InvalidParameterError, match=r"must be one of \['read', 'write'\]; got 'admin'"):
        TokenStore(tmp_path / "t.json").create("admin")


def test_a_running_server_honours_created_and_revoked_tokens(server, world, capsys) -> None:
    url = f"{server.url}/api/v1/whoami"
    code, out, _ = _cli(capsys, "create", "--scope", "read", "--name", "short-lived", "--tokens", str(world["tokens"]))
    token = out.strip()
    assert code == 0
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["name"] == "short-lived"  # no restart needed
    _cli(capsys, "revoke", token.split("_")[1], "--tokens", str(world["tokens"]))
    refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "not valid" in refused.json()["detail"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {world['read']}"}).status_code == 200
