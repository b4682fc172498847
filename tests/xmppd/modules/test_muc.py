"""The muc module: where the service lives and how it is announced (the rooms themselves are
tested in tests/xmppd/muc/)."""

from __future__ import annotations

import pytest
from support import ServerProcess, connect, run


def test_custom_domain_is_served_and_listed(tmp_path) -> None:
    server = ServerProcess(tmp_path, '[modules.muc]\ndomain = "rooms.localhost"\nname = "Rooms"')
    server.add_user("alice", "pw")
    server.start()

    async def scenario() -> None:
        client = await connect(server, "alice", "r", password="pw")
        items = await client.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        assert ("rooms.localhost", None, "Rooms") in items["disco_items"]["items"]
        info = await client.plugin["xep_0030"].get_info(jid="rooms.localhost", timeout=5)
        assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
        # The default domain is not served now: no such server.
        with pytest.raises(Exception, match="remote-server-not-found"):
            await client.plugin["xep_0030"].get_info(jid="conference.localhost", timeout=5)
        await client.close()

    try:
        run(scenario())
    finally:
        server.stop()


def test_a_domain_served_twice_is_a_config_error(tmp_path) -> None:
    server = ServerProcess(tmp_path, '[modules.muc]\ndomain = "localhost"')
    with pytest.raises(RuntimeError, match="already served"):
        server.start()
