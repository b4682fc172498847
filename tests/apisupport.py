"""The admin API in tests: a running server with keys of every kind, httpx clients holding them."""

from __future__ import annotations

from pathlib import Path

import httpx
from support import PASSWORDS, ServerProcess

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


def start_server(base: Path, **settings: object) -> ServerProcess:
    settings.setdefault("requests_per_second", 1000.0)
    settings.setdefault("burst", 1000)
    proc = ServerProcess(base, extra_config=api_config(**settings))
    for user, password in PASSWORDS.items():
        proc.add_user(user, password)
    proc.start()
    return proc


def client(server: ServerProcess, key: str | None = "ops") -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[key][0]}"} if key else {}
    base = f"http://127.0.0.1:{server.http_port}/api/v1"
    return httpx.Client(base_url=base, headers=headers, timeout=20)
