"""Profanity (Debian's console XMPP client, driven through tmux) against our server: STARTTLS
login with the self-signed certificate, a mutual subscription with a slixmpp client, seeing it
come online, and a message each way."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
from interop.profanity import Profanity, missing_tools
from support import ServerProcess, connect, run

if missing_tools() and not os.environ.get("CI"):
    # scripts/test installs both (CI runs it), so in CI a missing tool fails instead.
    pytestmark = pytest.mark.skip(
        reason=f"{' and '.join(missing_tools())} not installed (scripts/test installs them)"
    )

PASSWORD = {"alice": "alice-profanity", "bob": "bob-slixmpp"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("profanity-server"))
    for user, password in PASSWORD.items():
        proc.add_user(user, password)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def profanity(tmp_path: Path) -> Iterator[Profanity]:
    client = Profanity(tmp_path)
    yield client
    # pytest shows captured output for failing tests only: the screen explains the failure.
    print(f"profanity's last screen:\n{client.screen()}")
    client.close()


async def bob_online(server: ServerProcess, resource: str) -> slixmpp.ClientXMPP:
    bob = await connect(server, "bob", resource, password=PASSWORD["bob"], presence=False)
    await bob.get_roster(timeout=5)  # an interested resource: gets roster pushes
    bob.send_presence()
    return bob


def test_profanity_subscribes_sees_contact_online_and_chats(
    server: ServerProcess, profanity: Profanity
) -> None:
    async def scenario() -> None:
        alice_full = await profanity.login(
            "alice@localhost", PASSWORD["alice"], "127.0.0.1", server.port
        )
        bob = await bob_online(server, "slix")
        # slixmpp approves requests and asks back by default (auto_authorize/auto_subscribe);
        # profanity asks first and approves bob's request: a mutual ("both") subscription.
        assert bob.auto_authorize and bob.auto_subscribe
        profanity.type("/sub request bob@localhost")
        await profanity.wait_for(r"Received authorization request from bob@localhost")
        profanity.type("/sub allow bob@localhost")
        await asyncio.wait_for(subscribed_both(bob, "alice@localhost"), 10)

        # bob comes online with a new resource: profanity shows it.
        await bob.close()
        bob = await bob_online(server, "desk")
        await profanity.wait_for(r"bob@localhost \(desk\) is online")

        # A message from slixmpp shows in profanity...
        bob.send_message(mto="alice@localhost", mbody="hello from slixmpp", mtype="chat")
        window = await profanity.wait_for(r"<< chat message: bob@localhost/desk \(win (\d+)\)")
        profanity.type(f"/win {window.group(1)}")
        await profanity.wait_for(r"bob@localhost/desk: hello from slixmpp")
        # ...and profanity's answer reaches slixmpp.
        profanity.type("hello back from profanity")
        reply = await bob.next_message(timeout=20)
        assert reply["body"] == "hello back from profanity"
        assert reply["from"].full == alice_full
        await bob.close()

    run(scenario())


async def subscribed_both(client: slixmpp.ClientXMPP, jid: str) -> None:
    while client.client_roster[jid]["subscription"] != "both":
        await asyncio.sleep(0.05)
