"""The admin API in tests: a running server with keys of every kind, httpx clients holding them."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import httpx
from support import HEADER, PASSWORDS, RawClient, ServerProcess

from xmppd.api.keys import hash_key

KEYS = {  # name -> (key, scopes)
    "ops": ("xak_ops-key-for-tests-0123456789abcdef", ["admin"]),
    "reader": ("xak_reader-key-for-tests-0123456789abc", ["read"]),
    "poster": ("xak_poster-key-for-tests-0123456789abc", ["post", "read"]),
}


def api_config(**settings: object) -> str:
    lines = ["[api]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    for name, (key, scopes) in KEYS.items():
        scope_list = ", ".join(f'"{s}"' for s in scopes)
        lines += [f"[api.keys.{name}]", f'hash = "{hash_key(key)}"', f"scopes = [{scope_list}]"]
    return "\n".join(lines) + "\n"


def start_server(base: Path, extra: str = "", **settings: object) -> ServerProcess:
    """A started server with alice, bob and carol, the API's `settings` and `extra` config."""
    settings.setdefault("requests_per_second", 1000.0)
    settings.setdefault("burst", 1000)
    proc = ServerProcess(base, extra_config=api_config(**settings) + extra)
    for user, password in PASSWORDS.items():
        proc.add_user(user, password)
    proc.start()
    wait_for_http(proc)
    return proc


def client(server: ServerProcess, key: str | None = "ops") -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[key][0]}"} if key else {}
    base = f"http://127.0.0.1:{server.http_port}/api/v1"
    return httpx.Client(base_url=base, headers=headers, timeout=20)


def wait_for_http(server: ServerProcess) -> None:
    """ServerProcess.start waits for the HTTPS port only."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", server.http_port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the plain HTTP port did not open")


def sasl_answer(server: ServerProcess, user: str, password: str, source: str | None = None) -> str:
    """STARTTLS then SASL PLAIN; the server's <success/> or <failure/> as text."""
    raw = RawClient(server, source=source)
    try:
        raw.starttls()
        raw.send(HEADER)
        raw.read_until("</stream:features>")
        raw.take()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        deadline = time.monotonic() + 10
        while b"<success" not in raw.buffer and b"ailure>" not in raw.buffer:
            assert time.monotonic() < deadline, raw.buffer
            raw.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = raw.sock.recv(65536)
            if not chunk:
                break
            raw.buffer += chunk
        return raw.buffer.decode(errors="replace")
    finally:
        raw.close()


def audit_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log_text().splitlines() if "xmppd.api.audit" in line]
