"""Disabled accounts (xmppd/accounts.py) on every login path of a real server: the admin
socket's `disable`/`enable`, SASL over TCP (SCRAM and PLAIN), the web client's password login
and the JSON channels; the flag survives a restart and goes with the account."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from phx import http_post, login
from support import ServerProcess, connect, run
from websockets.exceptions import InvalidStatus

from xmppd.admin import AdminError
from xmppd.transports.adminsock import request


@pytest.fixture()
def server(tmp_path: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path)
    for user in ("alice", "bob"):
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


def admin(server: ServerProcess, command: str, **args: Any) -> Any:
    return request(server.data_dir / "admin.sock", command, args)


async def channel_status(server: ServerProcess, token: str) -> int:
    url = f"ws://127.0.0.1:{server.http_port}/socket/websocket?token={token}&vsn=2.0.0"
    try:
        async with websockets.connect(url):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_disable_refuses_every_login_path_until_enabled(server: ServerProcess) -> None:
    async def main() -> None:
        token = login(server, "alice", "alice-pw")  # a web session token from before
        alice = await connect(server, "alice", "r", password="alice-pw")
        result = admin(server, "disable", jid="alice@localhost", reason="on holiday")
        assert result == {"jid": "alice@localhost", "disabled": True, "sessions_ended": 1}
        await asyncio.wait_for(alice.disconnected_event.wait(), 5)
        assert alice.stream_errors == ["not-authorized"]
        with pytest.raises(PermissionError):
            await connect(server, "alice", "r", password="alice-pw")
        status, _h, body = http_post(
            server, "/login", {"jid": "alice@localhost", "password": "alice-pw"}
        )
        assert status == 403 and "the account is disabled: on holiday" in str(body)
        status, _h, body = http_post(
            server, "/login", {"jid": "alice@localhost", "password": "wrong"}
        )
        assert status == 401  # a wrong password learns nothing
        assert await channel_status(server, token) == 403
        bob = await connect(server, "bob", "r", password="bob-pw")  # others are not affected
        await bob.close()
        with pytest.raises(AdminError) as refused:
            admin(server, "disable", jid="nobody@localhost")
        assert refused.value.code == "no-account"
        # the flag is stored: a restart keeps it
        server.stop()
        server.start()
        with pytest.raises(PermissionError):
            await connect(server, "alice", "r", password="alice-pw")
        assert admin(server, "enable", jid="alice@localhost")["was_disabled"] is True
        alice = await connect(server, "alice", "r", password="alice-pw")
        await alice.close()
        assert await channel_status(server, login(server, "alice", "alice-pw")) == 101

    run(main())


def test_deleting_a_disabled_account_drops_its_flag(server: ServerProcess) -> None:
    admin(server, "disable", jid="bob@localhost")
    admin(server, "deluser", jid="bob@localhost")
    admin(server, "adduser", jid="bob@localhost", password="new-pw")

    async def main() -> None:
        bob = await connect(server, "bob", "r", password="new-pw")  # a new bob is not disabled
        await bob.close()

    run(main())
