"""Sessions live no longer than their host-app token (issue 18.5): they end at its `exp`, and a
host app revokes tokens by `jti` or by user through `server.tokens`, which ends their live
sessions at once and survives a restart. An in-process server (to call `server.tokens`), real
sockets, and real clients: the `phoenix` npm client (tests/web/token_life.mjs) and urllib."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import trio
from joserfc import jws
from joserfc.jwk import OctKey
from support import HEADER, RawClient, free_port

from xmppd.config import load
from xmppd.server import Server

WEB = Path(__file__).resolve().parents[1] / "web"
SECRET = "token-lifetime-test-secret-of-32-bytes"


def token(sub: str, ttl: float = 300, **extra: object) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": time.time() + ttl, **extra}
    key = OctKey.import_key(SECRET)
    return jws.serialize_compact({"alg": "HS256", "kid": "app"}, json.dumps(claims), key)


@asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[Server]:
    """An in-process server with plain HTTP on a free port (server.ports['http'])."""
    http, https = free_port(), free_port()
    text = f"""
[server]
domain = "localhost"
data_dir = "{data_dir}"
demo_account = false
[c2s]
interfaces = ["127.0.0.1"]
port = {free_port()}
direct_tls_port = {free_port()}
[http]
interfaces = ["127.0.0.1"]
plain_interfaces = ["127.0.0.1"]
port = {http}
tls_port = {https}
[auth.tokens.apps.app]
algorithm = "HS256"
key = "{SECRET}"
"""
    config_file = data_dir.parent / "xmppd.toml"  # for the CLI's admin verbs
    config_file.write_text(text)
    server = Server(load(config_file))
    server.config_file = config_file  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        server.http_port = http  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            server.stop()


class Phoenix:
    """tests/web/token_life.mjs: one JSON line per event of the phoenix.js socket."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc, self.buffer = proc, b""

    @classmethod
    async def start(cls, server: Server, transport: str, topic: str, *tokens: str) -> Phoenix:
        endpoint = f"ws://127.0.0.1:{server.http_port}/socket"  # type: ignore[attr-defined]
        cmd = ["node", str(WEB / "token_life.mjs"), endpoint, transport, topic, *tokens]
        proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, cwd=WEB)
        return cls(proc)

    async def line(self, timeout: float = 10) -> dict:
        assert self.proc.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self.buffer:
                chunk = await self.proc.stdout.receive_some()
                assert chunk, f"node exited: {self.buffer!r}"
                self.buffer += chunk
        text, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(text)

    async def until(self, key: str, timeout: float = 10) -> dict:
        with trio.fail_after(timeout):
            while True:
                event = await self.line(timeout)
                if key in event:
                    return event

    async def exited(self) -> int:
        with trio.fail_after(10):
            return await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def http_get(server: Server, path: str, headers: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{server.http_port}{path}"  # type: ignore[attr-defined]

    def fetch() -> dict:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return {"http": answer.status, **json.loads(answer.read())}
        except urllib.error.HTTPError as exc:
            return {"http": exc.code, "text": exc.read().decode()}

    return await trio.to_thread.run_sync(fetch)


async def longpoll(server: Server, tok: str, session: str | None = None) -> dict:
    query = f"/socket/longpoll?vsn=2.0.0&token={tok}"
    return await http_get(server, query + (f"&token={session}" if session else ""))


# ---- the end at exp -------------------------------------------------------------------------


async def test_phoenix_websocket_closes_at_exp_and_reconnects_with_a_fresh_token(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "data") as server:
        exp = time.time() + 2
        short = token("ann", ttl=2, exp=exp)
        node = await Phoenix.start(server, "websocket", "user:ann@localhost", short, token("ann"))
        try:
            assert await node.line() == {"joined": 1}
            closed = await node.until("close", timeout=6)
            closed_at = time.time()
            assert closed == {"close": {"code": 4001, "reason": "token expired"}}
            assert exp <= closed_at < exp + 2.5, closed_at - exp
            # phoenix.js reconnects with what `params` returns now: a fresh token
            assert await node.until("joined") == {"joined": 2}
            assert len(server.tokens.sessions) == 1  # the expired one is gone
            assert await node.exited() == 0
        finally:
            node.kill()
        refused = await longpoll(server, short)
        assert refused["status"] == 403 and "expired" in refused["reason"]


async def test_longpoll_session_ends_at_exp(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        exp = time.time() + 2
        short = token("lp", exp=exp)
        opened = await longpoll(server, short)
        assert opened["status"] == 410
        held = await longpoll(server, short, opened["token"])  # waits up to 10 s for frames
        answered_at = time.time()
        assert held == {"http": 200, "status": 403, "reason": "token expired"}
        assert exp <= answered_at < exp + 2.5, answered_at - exp
        again = await longpoll(server, short, opened["token"])  # gone; the app token is dead
        assert again["status"] == 403 and "expired" in again["reason"]
        assert not server.tokens.sessions
        # and the phoenix client: error 403, close 1008, then a reconnect with a fresh token
        exp = time.time() + 2
        short = token("lp", exp=exp)
        node = await Phoenix.start(server, "longpoll", "user:lp@localhost", short, token("lp"))
        try:
            assert await node.line() == {"joined": 1}
            assert await node.until("error", timeout=6) == {"error": "403"}
            assert await node.line() == {"close": {"code": 1008, "reason": "forbidden"}}
            assert exp <= time.time() < exp + 2.5
            assert await node.until("joined") == {"joined": 2}
            assert await node.exited() == 0
        finally:
            node.kill()


# ---- revocation -----------------------------------------------------------------------------


def xmpp_login(server: Server, user: str, password: str) -> bytes:
    """SASL PLAIN over STARTTLS, as Converse.js does with a /credentials password."""
    shim = SimpleNamespace(
        port=server.ports["c2s"], ca_file=str(server.config.data_dir / "certs/self-signed.crt")
    )
    raw = RawClient(shim)  # type: ignore[arg-type]
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


async def credentials(server: Server, tok: str) -> dict:
    return await http_get(server, "/credentials", {"Authorization": f"Bearer {tok}"})


async def test_revoke_by_jti_ends_the_live_session_and_refuses_the_token(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        revoked, kept = token("ann", jti="t-1"), token("ann", jti="t-2")
        password = (await credentials(server, revoked))["password"]
        node = await Phoenix.start(server, "websocket", "user:ann@localhost", revoked)
        other = await longpoll(server, kept)
        try:
            assert await node.line() == {"joined": 1}
            assert len(server.tokens.sessions) == 2
            assert await server.tokens.revoke(jti="t-1") == 1
            start = trio.current_time()
            closed = await node.until("close", timeout=5)
            assert trio.current_time() - start < 2
            assert closed == {"close": {"code": 4003, "reason": "token revoked"}}
            assert await node.exited() == 0
        finally:
            node.kill()
        refused = await longpoll(server, revoked)
        assert refused["status"] == 403 and "revoked" in refused["reason"]
        assert (await credentials(server, revoked))["http"] == 403
        answer = await trio.to_thread.run_sync(xmpp_login, server, "ann", password)
        assert b"<not-authorized" in answer  # its one-time password died with it
        # the other token and its session live on
        assert (await longpoll(server, kept, other["token"]))["status"] == 204
        assert len(server.tokens.sessions) == 1


async def test_revoke_by_user_ends_all_their_sessions(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        issued = int(time.time())
        ann = token("ann", iat=issued)
        password = (await credentials(server, ann))["password"]
        ws = await Phoenix.start(server, "websocket", "user:ann@localhost", ann)
        poll = await longpoll(server, token("ann"))  # no iat: counts as issued long ago
        bob = await longpoll(server, token("bob", iat=issued))
        bob_password = (await credentials(server, token("bob")))["password"]
        try:
            assert await ws.line() == {"joined": 1}
            ended = await server.tokens.revoke(user="ann@localhost")
            assert ended == 2
            held = await longpoll(server, ann, poll["token"])
            assert held == {"http": 200, "status": 403, "reason": "token revoked"}
            closed = await ws.until("close", timeout=5)
            assert closed == {"close": {"code": 4003, "reason": "token revoked"}}
        finally:
            ws.kill()
        for tok in (ann, token("ann"), token("ann", iat=issued - 10)):
            answer = await longpoll(server, tok)
            assert answer["status"] == 403 and "revoked" in answer["reason"]
        answer = await trio.to_thread.run_sync(xmpp_login, server, "ann", password)
        assert b"<not-authorized" in answer
        # tokens issued after the revocation work; bob was not touched
        fresh = await longpoll(server, token("ann", iat=int(time.time()) + 1))  # next second
        assert fresh["status"] == 410
        assert (await longpoll(server, token("bob"), bob["token"]))["status"] == 204
        answer = await trio.to_thread.run_sync(xmpp_login, server, "bob", bob_password)
        assert b"<success" in answer


async def test_revocations_survive_a_restart_until_they_lapse(tmp_path: Path) -> None:
    data = tmp_path / "data"
    by_id, by_user = token("ann", jti="gone"), token("bob", iat=int(time.time()) - 5)
    async with running(data) as server:
        await server.tokens.revoke(jti="gone")
        await server.tokens.revoke(user="bob@localhost")
        await server.tokens.revoke(jti="short", until=time.time() + 0.5)
    await trio.sleep(0.6)
    async with running(data) as server:
        for tok in (by_id, by_user):
            answer = await longpoll(server, tok)
            assert answer["status"] == 403 and "revoked" in answer["reason"]
        assert (await longpoll(server, token("ann", jti="short")))["status"] == 410
        assert (await longpoll(server, token("carol")))["status"] == 410
        store = server.db.for_host("localhost").map("token-revocations")  # type: ignore[union-attr]
        assert sorted(await store.get_all("jti")) == ["gone"]  # the lapsed one was dropped


# ---- refresh on the open socket ---------------------------------------------------------------


async def test_refresh_token_extends_the_open_session(tmp_path: Path, monkeypatch) -> None:
    async with running(tmp_path / "data") as server:
        for transport in ("websocket", "longpoll"):
            first_exp = time.time() + 2
            second_exp = time.time() + 4
            refreshes = [
                token("someone-else", exp=second_exp),  # another user: refused
                token("ann", exp=time.time() - 1),  # expired: refused
                token("ann", exp=second_exp),
            ]
            monkeypatch.setenv("REFRESH", ",".join(refreshes))
            short = token("ann", exp=first_exp)
            node = await Phoenix.start(server, transport, "user:ann@localhost", short)
            try:
                assert await node.line() == {"joined": 1}
                replies = [(await node.until("refresh"))["refresh"] for _ in refreshes]
                assert [r["status"] for r in replies] == ["error", "error", "ok"]
                assert "another user" in replies[0]["response"]["reason"]
                assert "expired" in replies[1]["response"]["reason"]
                assert replies[2]["response"] == {"exp": second_exp}
                await trio.sleep(first_exp + 0.5 - time.time())  # the first token is over
                assert len(server.tokens.sessions) == 1, transport
                closed = await node.until("close", timeout=5)  # and the second one ends it
                assert second_exp <= time.time() < second_exp + 2.5
                code = {"websocket": 4001, "longpoll": 1008}[transport]
                assert closed["close"]["code"] == code
                assert await node.exited() == 0
            finally:
                node.kill()


async def test_the_revoke_tokens_verb_acts_on_the_running_server(tmp_path: Path) -> None:
    """`xmppd revoke-tokens` reaches the server through its admin socket (docs/admin.md)."""
    async with running(tmp_path / "data") as server:
        ann = token("ann", jti="cli-1")
        poll = await longpoll(server, ann)
        cmd = [sys.executable, "-m", "xmppd", "revoke-tokens", "--jti", "cli-1"]
        cmd += ["-c", str(server.config_file)]  # type: ignore[attr-defined]
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr
        assert (
            done.stdout.decode().strip() == "revoked (via the running server), 1 session(s) ended"
        )
        held = await longpoll(server, ann, poll["token"])
        assert held["status"] == 403 and held["reason"] == "token revoked"
        assert "cli-1" in server.tokens.verifier.revocations.jtis
