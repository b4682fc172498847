"""The API's front door on a running server: off without keys, 401/403/404/405/413/415/422/429
answers with JSON bodies, the address allow-list, scopes, and the audit log."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from apisupport import KEYS, audit_lines, client, start_server, wait_for_http
from support import ServerProcess


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


def test_off_without_a_key(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start()
    try:
        wait_for_http(server)
        base = f"http://127.0.0.1:{server.http_port}"
        _error(httpx.get(f"{base}/api/v1/users"), 404, "not-found")
        _error(httpx.get(f"{base}/api/openapi.json"), 404, "not-found")
    finally:
        server.stop()


def test_refusals_have_json_bodies(api_server: ServerProcess) -> None:
    with client(api_server, key=None) as anonymous:
        body = _error(anonymous.get("/users"), 401, "unauthorized")
        assert "Bearer" in body["message"]
        answer = anonymous.get("/users", headers={"Authorization": "Bearer xak_wrong"})
        _error(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"].startswith("Bearer")
        basic = anonymous.get("/users", headers={"Authorization": f"Basic {KEYS['ops'][0]}"})
        _error(basic, 401, "unauthorized")
    with client(api_server, key="reader") as reader:
        assert reader.get("/users").status_code == 200
        body = _error(
            reader.post("/users", json={"jid": "x@localhost", "password": "p"}), 403, "forbidden"
        )
        assert "'users'" in body["message"]
    with client(api_server) as ops:
        _error(ops.get("/no/such/route"), 404, "not-found")
        _error(ops.get("/users/nobody@localhost"), 404, "not-found")
        _error(ops.get("/users/alice@elsewhere.example"), 404, "not-found")
        answer = ops.put("/users")
        _error(answer, 405, "method-not-allowed")
        assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
        bad = ops.post("/users", content=b"{nope", headers={"Content-Type": "application/json"})
        _error(bad, 400, "bad-json")
        text = ops.post("/users", content=b"jid=x", headers={"Content-Type": "text/plain"})
        _error(text, 415, "unsupported-media-type")
        assert (
            _error(ops.post("/users", json={"jid": "x@localhost"}), 422, "invalid")["field"]
            == "password"
        )
        unknown = ops.post("/users", json={"jid": "x@localhost", "password": "p", "admin": True})
        assert _error(unknown, 422, "invalid")["field"] == "admin"
        typed = ops.post("/users", json={"jid": 5, "password": "p"})
        assert _error(typed, 422, "invalid")["field"] == "jid"
        assert (
            _error(ops.get("/users", params={"limit": "many"}), 422, "invalid")["field"] == "limit"
        )
        assert _error(ops.get("/users", params={"limt": "5"}), 422, "invalid")["field"] == "limt"
        assert _error(ops.get("/users/not-a-jid"), 422, "bad-jid")["field"] == "jid"
        big = ops.post("/users", json={"jid": "x@localhost", "password": "p" * 70000})
        _error(big, 413, "too-big")


def test_audit_log_names_the_key(api_server: ServerProcess) -> None:
    with client(api_server) as ops:
        assert (
            ops.post("/users", json={"jid": "audited@localhost", "password": "pw-1"}).status_code
            == 201
        )
        assert ops.get("/users/audited@localhost").status_code == 200  # reads are not audited
        assert ops.delete("/users/audited@localhost").status_code == 200
    lines = [line for line in audit_lines(api_server) if "audited@localhost" in line]
    assert len(lines) == 2, lines
    assert "key=ops POST /api/v1/users: created audited@localhost" in lines[0]
    assert "key=ops DELETE /api/v1/users/audited@localhost: deleted audited@localhost" in lines[1]


def test_allow_list_and_rate_limit(tmp_path: Path) -> None:
    server = start_server(tmp_path, allow=["127.0.0.2/32"], requests_per_second=1.0, burst=3)
    try:
        with client(server) as loopback:
            _error(loopback.get("/users"), 403, "address-not-allowed")
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        base = f"http://127.0.0.1:{server.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {KEYS['ops'][0]}"}
        with httpx.Client(base_url=base, headers=headers, transport=transport) as allowed:
            assert [allowed.get("/stats").status_code for _ in range(3)] == [200] * 3
            limited = allowed.get("/stats")
            _error(limited, 429, "rate-limited")
            assert int(limited.headers["retry-after"]) >= 1
            time.sleep(1.2)
            assert allowed.get("/stats").status_code == 200
    finally:
        server.stop()
