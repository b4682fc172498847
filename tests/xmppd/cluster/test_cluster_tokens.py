"""Token revocations and password changes act on every node (xmppd/tokens.py, admin.py):
asked through node 1's admin socket, they reach node 2's in-memory revocation list, its
one-time passwords and its live sessions. Two real nodes, plain HTTP and XMPP clients."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from joserfc import jws
from joserfc.jwk import OctKey
from support import HEADER, RawClient, ServerProcess, run
from support_cluster import login, make_node, users

SECRET = "cluster-tokens-secret-of-32-bytes-or-more"
TOKENS = f"""
[auth.tokens.apps.app]
algorithm = "HS256"
key = "{SECRET}"
"""


def token(sub: str, jti: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 300, "jti": jti}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "app"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


def get(node: ServerProcess, path: str, headers: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}{path}",
        headers={"Accept": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return {"http": answer.status, **json.loads(answer.read())}
    except urllib.error.HTTPError as exc:
        return {"http": exc.code, "text": exc.read().decode()}


def longpoll(node: ServerProcess, tok: str, session: str | None = None) -> dict:
    query = f"/socket/longpoll?vsn=2.0.0&token={tok}"
    return get(node, query + (f"&token={session}" if session else ""))


def xmpp_login(node: ServerProcess, user: str, password: str) -> bytes:
    raw = RawClient(node)
    try:
        raw.starttls()
        raw.send(HEADER)
        raw.read_until("</stream:features>")
        raw.take()
        plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        return raw.read_until("xmpp-sasl'", timeout=5)
    finally:
        raw.close()


def test_revoke_tokens_on_one_node_reaches_every_node(tmp_path: Path, pg_url, prefix) -> None:
    n1, n2 = (make_node(tmp_path, pg_url, n, prefix, extra=TOKENS) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        revoked, kept = token("ann", "far-1"), token("ann", "far-2")
        password = get(n2, "/credentials", {"Authorization": f"Bearer {revoked}"})["password"]
        held = longpoll(n2, revoked)  # a live JSON-channel session on node 2 (410: its token)
        other = longpoll(n2, kept)
        assert held["status"] == 410 and other["status"] == 410, (held, other)
        time.sleep(0.5)  # both nodes up in each other's view

        done = n1.cli("revoke-tokens", "--jti", "far-1")
        assert done.returncode == 0, done.stderr
        assert "1 session(s) ended" in done.stdout, done.stdout  # the one on node 2
        gone = longpoll(n2, revoked, held["token"])
        assert gone["status"] == 403 and gone["reason"] == "token revoked", gone
        again = longpoll(n2, revoked)  # node 2 refuses the token itself from memory
        assert again["status"] == 403 and "revoked" in again["reason"], again
        refused = get(n2, "/credentials", {"Authorization": f"Bearer {revoked}"})
        assert refused["http"] == 403, refused
        assert b"<not-authorized" in xmpp_login(n2, "ann", password)  # its password died
        assert longpoll(n2, kept, other["token"])["status"] == 204  # the other token lives

        # Every token of the user, from node 2's admin socket: node 1 refuses them too.
        fresh = token("ann", "near-1")
        near = longpoll(n1, fresh)
        assert near["status"] == 410, near
        done = n2.cli("revoke-tokens", "--user", "ann@localhost")
        assert done.returncode == 0, done.stderr
        assert "2 session(s) ended" in done.stdout, done.stdout  # one on each node
        assert longpoll(n1, fresh, near["token"])["status"] == 403
        assert longpoll(n1, fresh)["status"] == 403
        assert longpoll(n2, kept, other["token"])["status"] == 403
    finally:
        n1.stop()
        n2.stop()


def test_passwd_ends_the_sessions_on_every_node(nodes) -> None:
    n1, n2 = nodes
    (alice,) = users(n1, "alice")

    async def scenario() -> None:
        far = await login(n2, alice, "far")
        near = await login(n1, alice, "near")
        changed = await asyncio.to_thread(
            n1.cli, "passwd", f"{alice}@localhost", "--password", "new secret"
        )
        assert changed.returncode == 0, changed.stderr
        assert "2 session(s)" in changed.stdout, changed.stdout
        for client in (far, near):
            await asyncio.wait_for(client.disconnected_event.wait(), 5)
            assert client.stream_errors == ["reset"]

    run(scenario())
