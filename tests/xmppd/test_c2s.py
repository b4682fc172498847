"""Login and chat with real slixmpp clients against a real server process."""

from __future__ import annotations

import asyncio
import datetime

import pytest
import slixmpp
from support import BindRefused, RawClient, ServerProcess, connect, run


def test_starttls_scram_sha256_login_and_messages_to_full_and_bare(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await connect(server, "alice", "laptop")
        bob = await connect(server, "bob", "phone")
        assert alice.boundjid.full == "alice@localhost/laptop"
        assert alice.is_connected()
        alice.send_message(mto="bob@localhost/phone", mbody="to your phone", mtype="chat")
        got = await bob.next_message()
        assert got["body"] == "to your phone"
        assert got["from"].full == "alice@localhost/laptop"  # stamped by the server
        bob.send_message(mto="alice@localhost", mbody="to your account", mtype="chat")
        got = await alice.next_message()
        assert got["body"] == "to your account"
        assert got["from"].full == "bob@localhost/phone"
        await alice.close()
        await bob.close()

    run(scenario())


# slixmpp has no tls-server-end-point binding: the -PLUS variants are covered by the sans-IO tests.
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-512", "PLAIN"])
def test_other_mechanisms(server: ServerProcess, mech: str) -> None:
    async def scenario() -> None:
        client = await connect(server, "carol", mech=mech, presence=False)
        assert client.boundjid.bare == "carol@localhost"
        await client.close()

    run(scenario())


def test_direct_tls_login(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await connect(server, "carol", "direct", direct_tls=True)
        assert client.boundjid.full == "carol@localhost/direct"
        await client.close()

    run(scenario())


def test_wrong_password_is_refused(server: ServerProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(PermissionError):
            await connect(server, "alice", password="wrong", timeout=10)

    run(scenario())


def test_server_generates_a_resource(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await connect(server, "carol", presence=False)
        assert client.boundjid.bare == "carol@localhost"
        assert client.boundjid.resource  # chosen by the server
        await client.close()

    run(scenario())


def test_bind_conflict_replaces_the_old_session(server: ServerProcess) -> None:
    async def scenario() -> None:
        first = await connect(server, "alice", "same")
        second = await connect(server, "alice", "same")
        await asyncio.wait_for(first.disconnected_event.wait(), 5)
        assert "conflict" in first.stream_errors
        # The new session owns the resource: messages reach it.
        bob = await connect(server, "bob", "conflict-test")
        bob.send_message(mto="alice@localhost/same", mbody="who is there?", mtype="chat")
        assert (await second.next_message())["body"] == "who is there?"
        await second.close()
        await bob.close()

    run(scenario())


def test_message_to_missing_account_bounces(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await connect(server, "alice", "bounce")
        alice.send_message(mto="nobody@localhost", mbody="hello?", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error"
        assert error["error"]["condition"] == "service-unavailable"
        assert error["from"].bare == "nobody@localhost"
        await alice.close()

    run(scenario())


def test_message_to_gone_resource_goes_to_the_account(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await connect(server, "alice", "desk")
        bob = await connect(server, "bob", "gone-test")
        bob.send_message(mto="alice@localhost/closed-laptop", mbody="fallback", mtype="chat")
        assert (await alice.next_message())["body"] == "fallback"
        await alice.close()
        await bob.close()

    run(scenario())


def test_iq_to_unknown_namespace_gets_service_unavailable(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await connect(server, "carol", "iq-test", presence=False)
        iq = client.make_iq_get(queryxmlns="urn:example:unknown", ito="localhost")
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await iq.send(timeout=5)
        assert raised.value.condition == "service-unavailable"
        # Same for an iq to another account's bare JID, answered by the server on its behalf.
        iq = client.make_iq_get(queryxmlns="urn:example:unknown", ito="bob@localhost")
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await iq.send(timeout=5)
        assert raised.value.condition == "service-unavailable"
        await client.close()

    run(scenario())


def test_disco_ping_version_time(server: ServerProcess) -> None:
    async def scenario() -> None:
        client = await connect(server, "carol", "disco", presence=False)
        info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        features = info["disco_info"]["features"]
        for feature in ("urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time"):
            assert feature in features
        assert ("server", "im", None, "xmppd") in info["disco_info"]["identities"]
        rtt = await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        assert rtt < 5
        version = await client.plugin["xep_0092"].get_version("localhost", timeout=5)
        assert version["software_version"]["name"] == "xmppd"
        entity_time = await client.plugin["xep_0202"].get_entity_time("localhost", timeout=5)
        # slixmpp appends its own "Z" when parsing <utc/>, so read the raw element.
        utc = entity_time.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
        stamp = datetime.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S%z")
        assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 60
        await client.close()

    run(scenario())


def test_shutdown_tells_clients(tmp_path) -> None:
    server = ServerProcess(tmp_path)
    server.add_user("alice", "alice-secret")
    server.start()

    async def scenario() -> None:
        alice = await connect(server, "alice", "shutdown")
        server.proc.terminate()
        await asyncio.wait_for(alice.disconnected_event.wait(), 10)
        assert alice.stream_errors == ["system-shutdown"]

    try:
        run(scenario())
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.stop()


def test_resource_limit_per_account(tmp_path) -> None:
    """A bind beyond `limits.resources_per_account` fails with resource-constraint; replacing
    an existing resource is still allowed (RFC 6120 §7.6.2.1, §7.7.2.2)."""
    server = ServerProcess(tmp_path, "[limits]\nresources_per_account = 2\n")
    server.add_user("alice", "alice-secret")
    server.start()
    clients = [RawClient(server) for _ in range(4)]
    try:
        assert clients[0].login("alice", resource="one") == "alice@localhost/one"
        assert clients[1].login("alice", resource="two") == "alice@localhost/two"
        with pytest.raises(BindRefused) as refused:
            clients[2].login("alice", resource="three")
        assert b"<resource-constraint" in refused.value.args[0]
        assert b'type="wait"' in refused.value.args[0]
        # Same resource again: the new session replaces the old one, within the limit.
        assert clients[3].login("alice", resource="two") == "alice@localhost/two"
        assert b"<conflict" in clients[1].read_to_close()
    finally:
        for client in clients:
            client.close()
        server.stop()
