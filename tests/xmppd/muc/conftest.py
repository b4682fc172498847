"""A server of the MUC tests' own, and helpers that drive rooms with real slixmpp clients.

Every client collects each presence and message it receives, in order, in `client.inbox`.
Stanzas are built as XML so the tests say exactly what goes on the wire.
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
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SERVICE = "conference.localhost"
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"


class Muc:
    """A running server plus helpers for rooms."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self._numbers = itertools.count(1)
        self._rooms = itertools.count(1)

    def users(self, *names: str) -> list[str]:
        """Fresh accounts (password 'pw'), created in parallel through the CLI."""
        made = [f"{name}{next(self._numbers)}" for name in names]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "xmppd", "adduser", f"{u}@localhost", "--password", "pw"]
                + ["-c", str(self.server.config_path)],
                cwd=self.server.base,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for u in made
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        return made

    def room(self, name: str = "room") -> str:
        return f"{name}{next(self._rooms)}@{SERVICE}"

    async def login(self, user: str, resource: str = "r") -> Client:
        client = await connect(self.server, user, resource, password="pw", presence=False)
        client.register_plugin("xep_0045")
        client.inbox = asyncio.Queue()
        for kind in ("presence", "message"):
            client.register_handler(
                Callback(
                    f"inbox-{kind}", MatchXPath(f"{{jabber:client}}{kind}"), client.inbox.put_nowait
                )
            )
        client.send_presence()
        await self.barrier(client)
        while not client.inbox.empty():  # own presence echo and the like
            client.inbox.get_nowait()
        return client

    async def barrier(self, client: Client) -> None:
        await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)

    async def next(
        self, client: Client, match: Callable[[Any], bool] | None = None, timeout: float = 5
    ) -> Any:
        async def look() -> Any:
            while True:
                stanza = await client.inbox.get()
                if match is None or match(stanza):
                    return stanza

        return await asyncio.wait_for(look(), timeout)

    async def drain(self, client: Client) -> list[Any]:
        """Everything received so far, after a round trip to the server."""
        await self.barrier(client)
        got = []
        while not client.inbox.empty():
            got.append(client.inbox.get_nowait())
        return got

    def send_join(
        self,
        client: Client,
        room: str,
        nick: str,
        *,
        password: str | None = None,
        history: dict[str, str] | None = None,
        status: str | None = None,
    ) -> None:
        presence = ET.Element("{jabber:client}presence", to=f"{room}/{nick}")
        x = ET.SubElement(presence, f"{{{MUC}}}x")
        if password is not None:
            ET.SubElement(x, f"{{{MUC}}}password").text = password
        if history is not None:
            ET.SubElement(x, f"{{{MUC}}}history", **history)
        if status is not None:
            ET.SubElement(presence, "{jabber:client}status").text = status
        client.send_raw(ET.tostring(presence, encoding="unicode"))

    async def join(self, client: Client, room: str, nick: str, **kwargs: Any) -> list[Any]:
        """Join; everything received up to the subject (§7.2.16 ends the join), in order.
        An error presence is returned alone."""
        self.send_join(client, room, nick, **kwargs)
        got: list[Any] = []
        while True:
            stanza = await self.next(client)
            got.append(stanza)
            if stanza.name == "presence" and stanza.xml.get("type") == "error":
                return got
            if stanza.name == "message" and stanza.xml.find("{jabber:client}subject") is not None:
                return got

    async def create(self, client: Client, room: str, nick: str, **fields: str) -> list[Any]:
        """Create a room and configure it (instant room when no fields are given)."""
        got = await self.join(client, room, nick)
        assert codes(self_presence(got)) == {"110", "201"}
        await self.configure(client, room, **fields)
        return got

    async def configure(self, client: Client, room: str, **fields: str) -> Any:
        iq = client.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{OWNER}}}query")
        x = ET.SubElement(query, f"{{{DATA}}}x", type="submit")
        if fields:
            field = ET.SubElement(x, f"{{{DATA}}}field", var="FORM_TYPE")
            ET.SubElement(
                field, f"{{{DATA}}}value"
            ).text = "http://jabber.org/protocol/muc#roomconfig"
        for var, value in fields.items():
            var = var if var.startswith("muc#") else f"muc#roomconfig_{var}"
            field = ET.SubElement(x, f"{{{DATA}}}field", var=var)
            ET.SubElement(field, f"{{{DATA}}}value").text = value
        return await iq.send(timeout=5)

    async def admin(self, client: Client, room: str, **item: str) -> Any:
        """A muc#admin set with one item (kwargs become attributes; reason= a child)."""
        iq = client.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{ADMIN}}}query")
        reason = item.pop("reason", None)
        el = ET.SubElement(query, f"{{{ADMIN}}}item", **item)
        if reason is not None:
            ET.SubElement(el, f"{{{ADMIN}}}reason").text = reason
        return await iq.send(timeout=5)

    async def admin_list(self, client: Client, room: str, **item: str) -> list[dict[str, str]]:
        iq = client.make_iq_get(ito=room)
        query = ET.SubElement(iq.xml, f"{{{ADMIN}}}query")
        ET.SubElement(query, f"{{{ADMIN}}}item", **item)
        result = await iq.send(timeout=5)
        return [dict(i.attrib) for i in result.xml.find(f"{{{ADMIN}}}query")]

    async def raw_iq(self, client: Client, iq: ET.Element) -> ET.Element:
        """Send a hand-made iq and return the answer as XML (slixmpp cannot parse every
        RFC 6120 error condition, e.g. policy-violation)."""
        ident = f"raw-{next(self._numbers)}"
        iq.set("id", ident)
        answer: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()

        def take(stanza: Any) -> None:
            if stanza.xml.get("id") == ident and not answer.done():
                answer.set_result(stanza.xml)

        client.register_handler(Callback(ident, MatchXPath("{jabber:client}iq"), take))
        client.send_raw(ET.tostring(iq, encoding="unicode"))
        try:
            return await asyncio.wait_for(answer, 5)
        finally:
            client.remove_handler(ident)

    def groupchat(self, client: Client, room: str, body: str) -> None:
        client.send_message(mto=room, mbody=body, mtype="groupchat")

    async def mam(self, client: Client, room: str, **rsm: str) -> tuple[list[ET.Element], Any]:
        """A room archive query (XEP-0313): the forwarded messages and the iq answer."""
        iq = ET.Element("{jabber:client}iq", type="set", to=room)
        query = ET.SubElement(iq, f"{{{MAM}}}query", queryid="q")
        if rsm:
            page = ET.SubElement(query, f"{{{RSM}}}set")
            for name, value in rsm.items():
                ET.SubElement(page, f"{{{RSM}}}{name}").text = value
        answer = await self.raw_iq(client, iq)
        results = []
        for stanza in await self.drain(client):
            result = stanza.xml.find(f"{{{MAM}}}result")
            if result is not None:
                assert result.get("queryid") == "q" and stanza["from"].full == room
                results.append(result.find(f"{{{FORWARD}}}forwarded/{{jabber:client}}message"))
        return results, answer


# ---- matchers and readers ------------------------------------------------------------------


def x_user(stanza: Any) -> ET.Element | None:
    return stanza.xml.find(f"{{{USER}}}x")


def codes(stanza: Any) -> set[str]:
    x = x_user(stanza)
    return set() if x is None else {s.get("code") for s in x.findall(f"{{{USER}}}status")}


def item(stanza: Any) -> dict[str, str]:
    x = x_user(stanza)
    found = None if x is None else x.find(f"{{{USER}}}item")
    return {} if found is None else dict(found.attrib)


def error_condition(stanza: Any) -> str | None:
    error = stanza.xml.find("{jabber:client}error")
    if error is None:
        return None
    for child in error:
        if child.tag.startswith(f"{{{STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return None


def self_presence(stanzas: list[Any]) -> Any:
    found = [s for s in stanzas if s.name == "presence" and "110" in codes(s)]
    assert len(found) == 1, [str(s) for s in stanzas]
    return found[0]


def presences(stanzas: list[Any]) -> list[Any]:
    return [s for s in stanzas if s.name == "presence"]


def bodies(stanzas: list[Any]) -> list[str]:
    return [s["body"] for s in stanzas if s.name == "message" and s["body"]]


def from_nick(nick: str, type_: str | None = None) -> Callable[[Any], bool]:
    def match(stanza: Any) -> bool:
        return (
            stanza.name == "presence"
            and stanza["from"].resource == nick
            and stanza.xml.get("type") == type_
        )

    return match


# Test files reach the readers through the fixture (conftest modules are not importable).
for _helper in (x_user, codes, item, error_condition, self_presence, presences, bodies, from_nick):
    setattr(Muc, _helper.__name__, staticmethod(_helper))


def start(base: Any, extra: str = "") -> ServerProcess:
    proc = ServerProcess(base, extra_config=extra)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def muc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Muc]:
    """A server per test module; extra config lines come from the module's SERVER_CONFIG."""
    proc = start(tmp_path_factory.mktemp("muc"), getattr(request.module, "SERVER_CONFIG", ""))
    yield Muc(proc)
    proc.stop()
    assert "Traceback" not in proc.log_text(), "the server logged an exception"
