"""Roles (xmppd/roles.py) from the TOML file and from LDAP groups (a real slapd), seen through
what they change: service admins own every room and see the admin commands, limited accounts
may not create rooms nor ask strangers for a subscription, and refuse strangers by default."""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect, run

sys.path.insert(0, str(Path(__file__).parents[1] / "ldap"))
import slapd as fixture  # noqa: E402

MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
OWNER = "http://jabber.org/protocol/muc#owner"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ADMIN_NODE = "http://jabber.org/protocol/admin#add-user"
ROSTER = "jabber:iq:roster"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("roles"), "[modules.muc]\nlock_new_rooms = false\n"
    )
    text = proc.config_path.read_text().replace(
        "demo_account = false",
        'demo_account = false\nadmins = ["boss@localhost"]\nlimited = ["kid@localhost"]',
    )
    proc.config_path.write_text(text)
    for user in ("boss", "kid", "bob", "mallory"):
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login(server: ServerProcess, user: str, password: str | None = None, **kw: Any) -> Client:
    client = await connect(server, user, "r", password=password or f"{user}-pw", **kw)
    client.inbox = asyncio.Queue()
    for kind in ("message", "presence"):
        client.register_handler(
            Callback(f"all-{kind}", MatchXPath(f"{{jabber:client}}{kind}"), client.inbox.put_nowait)
        )
    client.register_plugin("xep_0050")
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    while not client.inbox.empty():
        client.inbox.get_nowait()
    return client


async def next_where(client: Client, where: Any, timeout: float = 5) -> Any:
    async def find() -> Any:
        while True:
            stanza = await client.inbox.get()
            if where(stanza):
                return stanza

    return await asyncio.wait_for(find(), timeout)


def error_of(stanza: Any) -> tuple[str, str]:
    error = stanza.xml.find("{jabber:client}error")
    names = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}")]
    return [n for n in names if n != "text"][0], error.findtext(f"{{{STANZAS}}}text") or ""


async def join(client: Client, room: str, nick: str) -> Any:
    """The room's answer to a join: the self-presence or an error presence."""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    return await next_where(
        client,
        lambda s: (
            s.name == "presence"
            and s["from"] == f"{room}/{nick}"
            and (
                s["type"] == "error"
                or s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status[@code='110']") is not None
            )
        ),
    )


def affiliation(presence: Any) -> tuple[str | None, str | None]:
    item = presence.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    return item.get("affiliation"), item.get("role")


async def admin_commands(client: Client) -> set[str]:
    items = await client.plugin["xep_0050"].get_commands("localhost")
    return {i[1] for i in items["disco_items"]["items"] if "protocol/admin#" in i[1]}


def test_service_admin_owns_every_room_and_sees_the_commands(server: ServerProcess) -> None:
    async def main() -> None:
        boss, bob = await login(server, "boss"), await login(server, "bob")
        room = "bobs@conference.localhost"
        assert affiliation(await join(bob, room, "bob")) == ("owner", "moderator")
        assert affiliation(await join(boss, room, "boss")) == ("owner", "moderator")
        form = boss.make_iq_get(ito=room)
        form.xml.append(ET.Element(f"{{{OWNER}}}query"))
        result = await form.send(timeout=5)  # the owner's configuration form
        assert result.xml.find(f"{{{OWNER}}}query/{{jabber:x:data}}x") is not None
        assert ADMIN_NODE in await admin_commands(boss)
        assert not await admin_commands(bob)
        await asyncio.gather(boss.close(), bob.close())

    run(main())


def test_limited_joins_rooms_but_creates_none(server: ServerProcess) -> None:
    async def main() -> None:
        kid, bob = await login(server, "kid"), await login(server, "bob")
        refused = await join(kid, "kids-own@conference.localhost", "kid")
        assert error_of(refused) == (
            "not-allowed",
            "this account may join rooms but not create them",
        )
        room = "open@conference.localhost"
        await join(bob, room, "bob")
        assert affiliation(await join(kid, room, "kid")) == ("none", "participant")
        await asyncio.gather(kid.close(), bob.close())

    run(main())


def test_limited_asks_no_stranger_and_hears_none_by_default(server: ServerProcess) -> None:
    async def main() -> None:
        kid, bob, mallory = (
            await login(server, "kid"),
            await login(server, "bob"),
            await login(server, "mallory"),
        )
        kid.send_presence(pto="bob@localhost", ptype="subscribe")
        refused = await next_where(kid, lambda s: s.name == "presence" and s["type"] == "error")
        assert error_of(refused) == (
            "not-allowed",
            "this account may not ask strangers for a subscription; they may ask it",
        )
        mallory.send_message(mto="kid@localhost", mbody="psst", mtype="chat")
        refused = await next_where(mallory, lambda s: s["type"] == "error")
        assert error_of(refused) == (
            "policy-violation",
            "kid@localhost accepts messages only from contacts",
        )
        # kid lists bob; bob asks; kid approves, and may then ask bob in turn
        await kid.update_roster("bob@localhost", name="Bob")
        bob.send_presence(pto="kid@localhost", ptype="subscribe")
        await next_where(kid, lambda s: s.name == "presence" and s["type"] == "subscribe")
        kid.send_presence(pto="bob@localhost", ptype="subscribed")
        kid.send_presence(pto="bob@localhost", ptype="subscribe")
        asked = await next_where(bob, lambda s: s.name == "presence" and s["type"] == "subscribe")
        assert asked["from"].bare == "kid@localhost"
        bob.send_message(mto="kid@localhost", mbody="hi kid", mtype="chat")
        assert (await next_where(kid, lambda s: s.name == "message"))["body"] == "hi kid"
        await asyncio.gather(kid.close(), bob.close(), mallory.close())

    run(main())


# ---- from LDAP groups ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = fixture.Slapd(tmp_path_factory.mktemp("slapd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def ldap_server(
    directory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    sales = f"cn=Sales,ou=groups,{fixture.BASE}"
    config = (
        directory.settings_toml(limited_group=sales) + "\n[modules.muc]\nlock_new_rooms = false\n"
    )
    proc = ServerProcess(tmp_path_factory.mktemp("roles-ldap"), config)
    proc.start()
    yield proc
    proc.stop()


def test_roles_from_ldap_groups(ldap_server: ServerProcess) -> None:
    async def main() -> None:
        # alice: cn=xmpp-admins; frank: cn=Sales, the limited group; bob: neither
        alice = await login(ldap_server, "alice", "alice-secret", mech="PLAIN")
        frank = await login(ldap_server, "frank", "frank-secret", mech="PLAIN")
        bob = await login(ldap_server, "bob", "bob-secret", mech="PLAIN")
        assert ADMIN_NODE in await admin_commands(alice)
        assert not await admin_commands(bob) and not await admin_commands(frank)
        refused = await join(frank, "sales-chat@conference.localhost", "frank")
        assert error_of(refused)[0] == "not-allowed"
        room = "eng@conference.localhost"
        assert affiliation(await join(bob, room, "bob")) == ("owner", "moderator")
        assert affiliation(await join(alice, room, "alice")) == ("owner", "moderator")
        assert affiliation(await join(frank, room, "frank")) == ("none", "participant")
        await asyncio.gather(alice.close(), frank.close(), bob.close())

    run(main())
