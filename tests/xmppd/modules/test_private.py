"""Private XML storage (XEP-0049) with real clients: store, fetch, errors, limits, durability."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from support import Client, ServerProcess, connect, run

PRIVATE = "jabber:iq:private"
PREFS = "exodus:prefs"
USERS = ["alice", "bob"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("private"),
        "[modules.private]\nmax_size = 1024\nmax_namespaces = 2\n",
    )
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login(server: ServerProcess, user: str) -> Client:
    return await connect(server, user, "r", password=f"{user}-pw", presence=False)


def element(namespace: str, name: str, text: str | None = None) -> ET.Element:
    el = ET.Element(f"{{{namespace}}}{name}")
    el.text = text
    return el


async def private(
    client: Client, type_: str, *children: ET.Element, to: str | None = None
) -> ET.Element:
    """A jabber:iq:private get or set; the result's <query/>."""
    iq = client.make_iq_get(ito=to) if type_ == "get" else client.make_iq_set(ito=to)
    query = ET.SubElement(iq.xml, f"{{{PRIVATE}}}query")
    query.extend(children)
    result = await iq.send(timeout=5)
    return result.xml.find(f"{{{PRIVATE}}}query")


async def error_of(request: Any) -> str:
    with pytest.raises(IqError) as raised:
        await request
    return raised.value.iq["error"]["condition"]


def prefs(nick: str) -> ET.Element:
    data = element(PREFS, "exodus")
    data.append(element(PREFS, "defaultnick", nick))
    return data


def test_store_fetch_replace_and_delete(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice")
        empty = await private(alice, "get", element(PREFS, "exodus"))
        assert [child.tag for child in empty] == [f"{{{PREFS}}}exodus"] and len(empty[0]) == 0

        await private(alice, "set", prefs("Hamlet"))
        got = await private(alice, "get", element(PREFS, "exodus"))
        assert got.findtext(f"{{{PREFS}}}exodus/{{{PREFS}}}defaultnick") == "Hamlet"

        # Several elements of one namespace are kept together; a set replaces them all.
        await private(alice, "set", prefs("One"), prefs("Two"))
        got = await private(alice, "get", element(PREFS, "exodus"))
        assert [e.findtext(f"{{{PREFS}}}defaultnick") for e in got] == ["One", "Two"]

        await private(alice, "set", element(PREFS, "exodus"))  # an empty element deletes
        got = await private(alice, "get", element(PREFS, "exodus"))
        assert len(got) == 1 and len(got[0]) == 0

        # bob has his own storage
        await private(alice, "set", prefs("Alice's"))
        bob = await login(server, "bob")
        got = await private(bob, "get", element(PREFS, "exodus"))
        assert len(got[0]) == 0
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_errors(server: ServerProcess) -> None:
    async def scenario() -> None:
        bob = await login(server, "bob")
        other, reserved = "alice@localhost", element("jabber:iq:roster", "query")
        cases = [
            # someone else's storage (§2.3)
            ("forbidden", lambda: private(bob, "get", element(PREFS, "exodus"), to=other)),
            ("forbidden", lambda: private(bob, "set", prefs("mine"), to=other)),
            # no child, or a child without a namespace of its own
            ("not-acceptable", lambda: private(bob, "set")),
            ("not-acceptable", lambda: private(bob, "set", element(PRIVATE, "plain"))),
            # reserved namespaces
            ("not-acceptable", lambda: private(bob, "set", reserved)),
            ("not-acceptable", lambda: private(bob, "get", element("vcard-temp", "vCard"))),
            # two namespaces at once, or a get with two children
            ("bad-request", lambda: private(bob, "set", prefs("a"), element("other:ns", "x"))),
            ("bad-request", lambda: private(bob, "get", prefs("a"), prefs("b"))),
            # over max_size (1024 bytes)
            ("not-acceptable", lambda: private(bob, "set", prefs("x" * 2000))),
        ]
        for expected, request in cases:
            assert await error_of(request()) == expected

        # max_namespaces = 2: a third one is refused, replacing an existing one is not.
        await private(bob, "set", element("one:ns", "a", "1"))
        await private(bob, "set", element("two:ns", "b", "2"))
        assert await error_of(private(bob, "set", element("three:ns", "c", "3"))) == (
            "not-acceptable"
        )
        await private(bob, "set", element("two:ns", "b", "changed"))
        got = await private(bob, "get", element("two:ns", "b"))
        assert got.findtext("{two:ns}b") == "changed"
        await bob.close()

    run(scenario())


def test_feature_and_durability(server: ServerProcess) -> None:
    async def scenario(write: bool) -> None:
        alice = await login(server, "alice")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert PRIVATE in info["disco_info"]["features"]
        if write:
            await private(alice, "set", prefs("Ophelia"))
        got = await private(alice, "get", element(PREFS, "exodus"))
        assert got.findtext(f"{{{PREFS}}}exodus/{{{PREFS}}}defaultnick") == "Ophelia"
        await alice.close()

    run(scenario(True))
    server.stop()
    server.start()
    run(scenario(False))
