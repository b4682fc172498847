"""Fixtures for the roster, presence and subscription tests: a server of their own and helpers.

`im` (one server per test module) hands out fresh accounts and logs real slixmpp clients in.
Every client collects presence and message stanzas, in arrival order, in `client.inbox`, and
roster pushes in `client.pushes`. slixmpp's automatic subscription handling is switched off.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import slixmpp
from support import Client, ServerProcess, connect

ROSTER = "jabber:iq:roster"
Item = dict[str, Any]


class IM:
    """A running server plus helpers to drive it with real clients."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self._numbers = itertools.count(1)
        self._markers = itertools.count(1)

    # ---- accounts and logins ------------------------------------------------------------------

    def users(self, *names: str) -> list[str]:
        """Create one fresh account per name (suffixed so it is new); CLI runs in parallel."""
        made = [f"{name}{next(self._numbers)}" for name in names]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "xmppd", "adduser", f"{user}@localhost", "--password", "pw"]
                + ["-c", str(self.server.config_path)],
                cwd=self.server.base,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for user in made
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        return made

    async def login(
        self,
        user: str,
        resource: str = "r",
        *,
        roster: bool = True,
        presence: bool = True,
        priority: int | None = None,
        status: str | None = None,
    ) -> Client:
        """Log in; fetch the roster (interested) and send initial presence, then a barrier."""
        client = await connect(self.server, user, resource, password="pw", presence=False)
        client.auto_authorize = None  # never answer subscription requests by itself
        client.auto_subscribe = False
        client.inbox = asyncio.Queue()
        client.pushes = asyncio.Queue()
        client.add_event_handler("presence", client.inbox.put_nowait)
        client.add_event_handler("message", client.inbox.put_nowait)
        client.add_event_handler(
            "roster_update", lambda iq: iq["type"] == "set" and client.pushes.put_nowait(iq)
        )
        if roster:
            await self.roster(client)
        if presence:
            client.send_presence(ppriority=priority, pstatus=status)
            await self.barrier(client)
        return client

    async def barrier(self, client: Client) -> None:
        """The server handles a stream's stanzas in order: once this ping is answered, all it
        sent because of the stanzas before has been sent (and delivered to local clients)."""
        await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)

    # ---- roster -------------------------------------------------------------------------------

    async def roster(self, client: Client, ver: str | None = None) -> tuple[str | None, dict]:
        """A roster get: (ver, {jid: item}); (None, {}) for the empty result of §2.6.3."""
        iq = client.make_iq_get(queryxmlns=ROSTER)
        if ver is not None:
            iq.xml.find(f"{{{ROSTER}}}query").set("ver", ver)
        result = await iq.send(timeout=5)
        query = result.xml.find(f"{{{ROSTER}}}query")
        if query is None:
            return None, {}
        return query.get("ver"), {i.get("jid"): parse_item(i) for i in query}

    async def roster_set(
        self,
        client: Client,
        jid: str,
        name: str | None = None,
        groups: tuple[str, ...] = (),
        *,
        remove: bool = False,
        raw_items: list[ET.Element] | None = None,
    ) -> slixmpp.Iq:
        """A roster set; raises IqError when the server refuses it."""
        iq = client.make_iq_set()
        query = ET.SubElement(iq.xml, f"{{{ROSTER}}}query")
        for extra in raw_items or []:
            query.append(extra)
        if raw_items is None:
            item = ET.SubElement(query, f"{{{ROSTER}}}item", jid=jid)
            if name is not None:
                item.set("name", name)
            if remove:
                item.set("subscription", "remove")
            for group in groups:
                ET.SubElement(item, f"{{{ROSTER}}}group").text = group
        return await iq.send(timeout=5)

    async def item(self, client: Client, jid: str) -> Item | None:
        return (await self.roster(client))[1].get(jid)

    async def next_push(self, client: Client, timeout: float = 5) -> tuple[str | None, Item]:
        iq = await asyncio.wait_for(client.pushes.get(), timeout)
        query = iq.xml.find(f"{{{ROSTER}}}query")
        return query.get("ver"), parse_item(query.find(f"{{{ROSTER}}}item"))

    # ---- presence -----------------------------------------------------------------------------

    def subscription(self, client: Client, to: str, type_: str, **extra: Any) -> None:
        client.send_presence(pto=to, ptype=type_, **extra)

    async def befriend(self, first: Client, second: Client, *, both: bool = True) -> None:
        """`first` subscribes to `second` and is approved (and the other way round if `both`)."""
        pairs = [(first, second), (second, first)] if both else [(first, second)]
        for asker, approver in pairs:
            self.subscription(asker, approver.boundjid.bare, "subscribe")
            await self.barrier(asker)
            self.subscription(approver, asker.boundjid.bare, "subscribed")
            await self.barrier(approver)

    async def until_marker(self, sender: Client, recipient: Client) -> list[Any]:
        """Everything `recipient` receives before a marker message `sender` sends now.

        `sender`'s stanzas are handled in order, so whatever its earlier stanzas caused to be
        delivered to `recipient` arrives before the marker: the way to show something did not.
        """
        marker = f"marker-{next(self._markers)}"
        sender.send_message(mto=recipient.boundjid.full, mbody=marker, mtype="chat")
        seen = []
        while True:
            stanza = await asyncio.wait_for(recipient.inbox.get(), 5)
            if stanza.name == "message" and stanza["body"] == marker:
                return seen
            seen.append(stanza)

    async def wait_for(
        self, client: Client, match: Callable[[Any], bool], timeout: float = 5
    ) -> Any:
        """The next presence or message in `client.inbox` that matches (others are skipped)."""

        async def look() -> Any:
            while True:
                stanza = await client.inbox.get()
                if match(stanza):
                    return stanza

        return await asyncio.wait_for(look(), timeout)


def parse_item(item: ET.Element) -> Item:
    return {
        "jid": item.get("jid"),
        "name": item.get("name"),
        "subscription": item.get("subscription"),
        "ask": item.get("ask"),
        "approved": item.get("approved"),
        "groups": sorted(g.text or "" for g in item.findall(f"{{{ROSTER}}}group")),
    }


def presence_of(stanza: Any, type_: str | None, frm: str) -> bool:
    """Matcher: a presence of `type_` (None: available) from `frm` (bare or full)."""
    if stanza.name != "presence":
        return False
    got = stanza.xml.get("type")  # slixmpp's ["type"] reports <show/> for available presence
    shown = stanza["from"].full if "/" in frm else stanza["from"].bare
    return got == type_ and shown == frm


def start_server(base: Any, extra_config: str = "") -> ServerProcess:
    proc = ServerProcess(base, extra_config=extra_config)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def im(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IM]:
    """A server of this test module's own (roster state never leaks between modules); extra
    config lines come from the module's `SERVER_CONFIG`."""
    extra = getattr(request.module, "SERVER_CONFIG", "")
    proc = start_server(tmp_path_factory.mktemp("im"), extra)
    yield IM(proc)
    proc.stop()


@pytest.fixture
def im_class() -> type[IM]:
    """The helper class, for tests that run (and restart) a server of their own."""
    return IM
