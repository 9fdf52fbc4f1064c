"""Every endpoint of ``neuronmap serve`` through the Python client, against a live uvicorn server."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pandas as pd
import pytest

from neuronmap.client import Client, ClientError
from neuronmap.results import History
from neuronmap.runs import read_history

GATES_PASS = """gates:
  - metric: neuronmap/activation_stats/*/dead_fraction
    max: 1.0
"""
GATES_FAIL = """gates:
  - metric: neuronmap/activation_stats/*/dead_fraction
    max: -1.0
"""
GATES_MISSING = """gates:
  - metric: neuronmap/nothing/*/here
    min: 0
"""


# ---------------------------------------------------------------------- service and auth
def test_health_needs_no_token_and_everything_else_does(server, world) -> None:
    anonymous = Client(server.url, retries=0)
    assert anonymous.health()["status"] == "ok"
    with pytest.raises(ClientError, match="needs a bearer token") as err:
        anonymous.runs()
    assert err.value.status == 401
    assert err.value.problem["type"].endswith("/unauthorized")
    bad = Client(server.url, token="nm_00000000_not-a-token", retries=0)
    with pytest.raises(ClientError, match="not valid") as err:
        bad.run("alpha").summary  # noqa: B018 - the request is the test
    assert err.value.status == 401


def test_write_scope_is_needed_for_jobs(reader, writer) -> None:
    assert reader.whoami()["scope"] == "read"
    with pytest.raises(ClientError, match="needs a token with scope 'write'") as err:
        reader.submit_job({"model": "tiny-bert"})
    assert err.value.status == 403
    assert writer.whoami()["scope"] == "write"


def test_errors_are_problem_json_without_stack_traces(server, world) -> None:
    r = httpx.get(f"{server.url}/api/v1/runs/nope/history", headers={"Authorization": f"Bearer {world['read']}"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert set(body) >= {"type", "title", "status", "detail"} and body["status"] == 404
    assert "Traceback" not in r.text and "File \"" not in r.text
    r = httpx.get(f"{server.url}/api/v1/runs?limit=0", headers={"Authorization": f"Bearer {world['read']}"})
    assert r.status_code == 422 and "limit" in r.json()["detail"]


def test_cors_is_off_by_default(server, world) -> None:
    r = httpx.get(f"{server.url}/api/v1/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_request_bodies_over_the_limit_are_refused(server, world) -> None:
    big = {"spec": {"model": "x" * 1_200_000}}
    r = httpx.post(f"{server.url}/api/v1/jobs", json=big, headers={"Authorization": f"Bearer {world['write']}"})
    assert r.status_code == 413 and "at most 1000000" in r.json()["detail"]


def test_openapi_schema_lists_the_versioned_api(server) -> None:
    paths = httpx.get(f"{server.url}/api/v1/openapi.json").json()["paths"]
    for path in ("/api/v1/runs", "/api/v1/runs/{run}/history", "/api/v1/runs/{run}/gate", "/api/v1/jobs",
                 "/api/v1/jobs/{job_id}/cancel", "/api/v1/compare", "/api/v1/runs/{run}/audit"):
        assert path in paths


# ---------------------------------------------------------------------- runs
def test_runs_are_listed_page_by_page_and_searchable(reader) -> None:
    ids = [r["id"] for r in reader.runs(page_size=1)]
    assert {"alpha", "beta"} <= set(ids)
    assert [r["id"] for r in reader.runs(query="alph")] == ["alpha"]
    assert {r["id"] for r in reader.runs(status="finished")} >= {"alpha", "beta"}
    assert reader.runs(status="RUNNING") == [] or all(r["status"] == "RUNNING" for r in reader.runs(status="RUNNING"))


def test_run_summary_and_findings(reader) -> None:
    summary = reader.run("alpha").summary
    assert summary["status"] == "FINISHED" and summary["steps"] == [0, 10] and summary["has_audit"]
    findings = reader.run("alpha").findings
    assert summary["findings_count"] == len(findings) > 0
    assert all({"severity", "text"} <= set(f) for f in findings)


def test_history_is_the_local_history_frame(reader, world) -> None:
    remote = reader.run("alpha").history
    local = History(read_history(world["runs"] / "alpha")).frame
    pd.testing.assert_frame_equal(remote, local)


def test_history_filters(reader, world) -> None:
    local = read_history(world["runs"] / "alpha")
    got = reader.history("alpha", analysis="activation_stats", layer="net.0", step_min=5)
    want = local[(local["analysis"] == "activation_stats") & (local["layer"] == "net.0") & (local["step"] >= 5)]
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    assert set(reader.history("alpha", metric="dead_fraction")["metric"]) == {"dead_fraction"}
    assert reader.history("alpha", key="no/such/key").empty


def test_history_pages_add_up_to_the_whole_history(reader, world) -> None:
    whole = reader.run("alpha").history
    pd.testing.assert_frame_equal(reader.history("alpha", page_size=7), whole)
    auth = {"Authorization": f"Bearer {world['read']}"}
    page = httpx.get(f"{reader.url}/api/v1/runs/alpha/history", params={"limit": 5, "offset": 5}, headers=auth).json()
    assert (page["count"], page["offset"], page["next_offset"], page["total"]) == (5, 5, 10, len(whole))
    last = httpx.get(f"{reader.url}/api/v1/runs/alpha/history", params={"limit": 5, "offset": len(whole) - 2},
                     headers=auth).json()
    assert last["count"] == 2 and last["next_offset"] is None


def test_history_answers_are_gzipped_and_revalidated_by_etag(server, world) -> None:
    url, auth = f"{server.url}/api/v1/runs/alpha/history", {"Authorization": f"Bearer {world['read']}"}
    packed = httpx.get(url, headers={**auth, "Accept-Encoding": "gzip"})
    plain = httpx.get(url, headers={**auth, "Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(packed.headers["content-length"]) < int(plain.headers["content-length"]) / 3
    assert packed.json() == plain.json() and packed.headers["etag"] == plain.headers["etag"]
    again = httpx.get(url, headers={**auth, "If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(url, headers={**auth, "If-None-Match": '"stale"'}).status_code == 200


def test_history_is_re_read_when_the_run_grows(reader, world) -> None:
    grow = world["runs"] / "growing"
    shutil.copytree(world["runs"] / "beta", grow)
    try:
        before = reader.run("growing").history
        with (grow / "metrics.jsonl").open("a") as fh:
            fh.write('{"step": 20, "epoch": null, "event": null, "time": "2026-01-01T00:00:00+00:00", '
                     '"metrics": {"neuronmap/activation_stats/net.0/mean": 0.5}}\n')
        after = reader.run("growing").history
        assert len(after) == len(before) + 1 and after.iloc[-1]["step"] == 20
        pd.testing.assert_frame_equal(after, History(read_history(grow)).frame)
    finally:
        shutil.rmtree(grow)


def test_figures_and_tables(reader, world) -> None:
    run = reader.run("alpha")
    figures = run.figures()
    assert figures and {"step", "name", "path"} <= set(figures[0])
    assert run.figure(figures[0]["path"]).startswith(b"\x89PNG")
    tables = run.tables()
    assert tables
    stored = pd.read_csv(world["runs"] / "alpha" / "tables" / tables[0]["path"])
    pd.testing.assert_frame_equal(run.table(tables[0]["path"]), stored, check_dtype=False)


def test_model_card_in_markdown_and_html(reader) -> None:
    md = reader.run("alpha").card("md")
    html = reader.run("alpha").card("html")
    assert md.lstrip().startswith(("---", "#")) and "activation_stats" in md
    assert "<html" in html.lower()
    with pytest.raises(ClientError, match="Unknown card template 'nope'") as err:
        reader.run("alpha").card("md", template="nope")
    assert err.value.status == 422


def test_gate_status_follows_the_cli_exit_codes(reader) -> None:
    run = reader.run("alpha")
    passed, failed, missing = run.gate(GATES_PASS), run.gate(GATES_FAIL), run.gate(GATES_MISSING)
    assert (passed["status"], passed["exit_code"]) == ("passed", 0)
    assert (failed["status"], failed["exit_code"]) == ("failed", 1)
    assert (missing["status"], missing["exit_code"]) == ("error", 2)
    assert run.gate([{"metric": "neuronmap/activation_stats/*/dead_fraction", "max": 1.0}])["exit_code"] == 0
    with_baseline = run.gate("gates:\n  - metric: neuronmap/activation_stats/net.0/dead_fraction\n"
                             "    baseline: {mode: absolute, margin: 1.0}\n", baseline="beta")
    assert with_baseline["baseline"] == "beta" and with_baseline["exit_code"] == 0


def test_gate_config_errors_are_422_and_never_read_server_files(reader) -> None:
    with pytest.raises(ClientError, match=r"line \d+: invalid YAML") as err:
        reader.run("alpha").gate("gates:\n  - metric: [unclosed\n")
    assert err.value.status == 422
    with pytest.raises(ClientError) as err:
        reader.run("alpha").gate("/etc/passwd")  # a path on the server must be taken as YAML text
    assert err.value.status == 422 and "root" not in str(err.value)


def test_gate_recording_to_the_audit_trail_needs_write(reader) -> None:
    with pytest.raises(ClientError) as err:
        reader.run("alpha").gate(GATES_PASS, record=True)
    assert err.value.status == 403


def test_audit_verification(reader, world) -> None:
    ok = reader.run("alpha").audit()
    assert ok["ok"] and ok["entries"] >= 2 and ok["problems"] == []
    tampered = world["runs"] / "tampered"
    if not tampered.exists():
        shutil.copytree(world["runs"] / "alpha", tampered)
        lines = (tampered / "audit.jsonl").read_text().splitlines()
        lines[0] = lines[0].replace('"kind":', '"edited":1,"kind":', 1)
        (tampered / "audit.jsonl").write_text("\n".join(lines) + "\n")
    bad = reader.run("tampered").audit()
    assert not bad["ok"] and bad["problems"][0]["line"] == 1
    with pytest.raises(ClientError, match="no audit trail") as err:
        reader.run("beta").audit()
    assert err.value.status == 404


def test_compare_gives_deltas_and_cka_from_stored_activations(reader, world) -> None:
    result = reader.compare("alpha", "beta")
    a = read_history(world["runs"] / "alpha").drop_duplicates("key", keep="last").set_index("key")["value"]
    b = read_history(world["runs"] / "beta").drop_duplicates("key", keep="last").set_index("key")["value"]
    row = next(m for m in result["metrics"] if m["key"] == "neuronmap/activation_stats/net.0/dead_fraction")
    assert row["delta"] == pytest.approx(b[row["key"]] - a[row["key"]])
    cka = result["cka"]
    assert cka["available"] and cka["rows"] == cka["columns"]
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in cka["diagonal"].values())
    assert np.asarray(cka["matrix"]).shape == (len(cka["rows"]), len(cka["columns"]))


# ---------------------------------------------------------------------- path traversal
@pytest.mark.parametrize("path", [
    "/runs/..%2F..%2Fetc/history", "/runs/%2E%2E/history", "/runs/.jobs/history", "/runs/..",
    "/runs/alpha/figures/..%2F..%2F..%2Fetc%2Fpasswd", "/runs/alpha/figures/../metrics.jsonl",
    "/runs/alpha/tables/%2E%2E/%2E%2E/config.json", "/runs/alpha/figures/%2Fetc%2Fpasswd",
    "/runs/alpha/tables/0/..%5C..%5Cconfig.csv",
])
def test_path_traversal_is_impossible(server, world, path) -> None:
    r = httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {world['read']}"})
    assert r.status_code == 404, r.text
    assert "root:" not in r.text and "metrics" not in r.text.split('"detail"')[0]


def test_a_symlink_out_of_the_runs_root_is_not_a_run(server, world, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.jsonl").write_text('{"step": 0, "metrics": {"secret": 1.0}}\n')
    link = world["runs"] / "escape"
    link.symlink_to(outside, target_is_directory=True)
    try:
        r = httpx.get(f"{server.url}/api/v1/runs/escape/history", headers={"Authorization": f"Bearer {world['read']}"})
        assert r.status_code == 404
    finally:
        link.unlink()


# ---------------------------------------------------------------------- client behaviour
def test_client_retries_5xx_with_backoff_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"status": "ok"})

    client = Client("http://neuronmap.test", token="t", retries=3, backoff=0.01, transport=httpx.MockTransport(handler))
    assert client.health() == {"status": "ok"} and len(calls) == 3


def test_client_gives_up_on_an_unreachable_server_with_a_clear_error() -> None:
    from _service import free_port

    client = Client(f"http://127.0.0.1:{free_port()}", token="t", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ClientError, match=r"Cannot reach .* after 3 attempt\(s\)"):
        client.health()
