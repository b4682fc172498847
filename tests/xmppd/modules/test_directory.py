"""Directory contacts against a real slapd: LDAP groups as shared roster groups (with presence),
changes pushed to online clients, read-only directory items beside personal ones, vCards."""

from __future__ import annotations

import asyncio
import base64
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import ldap3
import pytest
import slixmpp
from slixmpp.exceptions import IqError
from support import Client, ServerProcess, run

sys.path.insert(0, str(Path(__file__).parents[2] / "ldap"))
import slapd as fixture  # noqa: E402

PEOPLE = "ou=people,dc=example,dc=org"
SALES = "cn=Sales,ou=groups,dc=example,dc=org"


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    d = fixture.Slapd(tmp_path_factory.mktemp("slapd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def xmppd(directory, tmp_path_factory):
    # Groups from the whole tree: "Everyone" (1,620 members) is over max_group_size.
    config = directory.settings_toml(group_base="dc=example,dc=org", refresh_interval=5.0)
    server = ServerProcess(tmp_path_factory.mktemp("xmppd"), config)
    server.start()
    yield server
    server.stop()


async def login(server: ServerProcess, user: str, presence: bool = True) -> Client:
    client = Client(f"{user}@localhost", f"{user}-secret", "PLAIN", server.ca_file)
    client.pushes = asyncio.Queue()
    client.add_event_handler("roster_update", client.pushes.put_nowait)
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.connect("127.0.0.1", server.port)
    await asyncio.wait_for(client.started, 10)
    if presence:
        client.send_presence()
    return client


async def roster(client: Client) -> dict[str, dict]:
    result = await client.make_iq_get(queryxmlns="jabber:iq:roster").send(timeout=15)
    return {str(jid): item for jid, item in result["roster"]["items"].items()}


async def available_from(client: Client, bare: str, timeout: float = 15) -> slixmpp.Presence:
    async def wait() -> slixmpp.Presence:
        while True:
            presence = await client.presences.get()
            # slixmpp reports an available presence's <show/> as its type.
            shows = ("available", "", "away", "chat", "dnd", "xa")
            if presence["from"].bare == bare and presence["type"] in shows:
                return presence

    return await asyncio.wait_for(wait(), timeout)


async def push_for(client: Client, contact: str, timeout: float = 20) -> dict:
    async def wait() -> dict:
        while True:
            iq = await client.pushes.get()
            items = {str(j): i for j, i in iq["roster"]["items"].items()}
            if contact in items:
                return items[contact]

    return await asyncio.wait_for(wait(), timeout)


def test_colleagues_are_contacts_with_names_and_presence(xmppd) -> None:
    async def scenario() -> None:
        alice = await login(xmppd, "alice")
        items = await roster(alice)
        bob = items["bob@localhost"]
        assert bob["name"] == "Bob Builder"
        assert bob["subscription"] == "both"
        assert bob["groups"] == ["Engineering"]
        # posixGroup memberUid works the same way.
        assert items["judy@localhost"]["groups"] == ["Support"]
        assert items["judy@localhost"]["name"] == "Judy Hopps"
        assert set(items) == {
            f"{u}@localhost" for u in ("bob", "carol", "dave", "erin", "ivan", "judy")
        }  # nobody from the 1,620-member group, nobody from Sales
        bob_client = await login(xmppd, "bob")
        await available_from(alice, "bob@localhost")
        await available_from(bob_client, "alice@localhost")
        # Presence goes on as for any mutual subscription: a status change arrives too.
        bob_client.send_presence(pshow="away", pstatus="lunch")
        while (await available_from(alice, "bob@localhost"))["status"] != "lunch":
            pass
        for c in (alice, bob_client):
            await c.close()

    run(scenario())
    assert "group 'Everyone' has 1620 members" in xmppd.log_text()


def test_directory_items_read_only_personal_items_beside(xmppd) -> None:
    async def scenario() -> None:
        carol = await login(xmppd, "carol", presence=False)
        await roster(carol)
        remove = carol.make_iq_set()
        remove["roster"]["items"] = {"bob@localhost": {"subscription": "remove"}}
        with pytest.raises(IqError) as err:
            await remove.send(timeout=10)
        assert err.value.iq["error"]["condition"] == "not-allowed"
        carol.send_presence(pto="bob@localhost", ptype="unsubscribe")
        while (refused := await asyncio.wait_for(carol.presences.get(), 10))["type"] != "error":
            pass
        assert refused["from"] == "bob@localhost"
        assert refused["error"]["condition"] == "not-allowed"
        add = carol.make_iq_set()
        add["roster"]["items"] = {"friend@example.net": {"name": "Friend", "groups": ["Mine"]}}
        await add.send(timeout=10)
        items = await roster(carol)
        assert items["friend@example.net"]["name"] == "Friend"
        assert items["bob@localhost"]["subscription"] == "both"
        await carol.close()

    run(scenario())


def test_group_change_is_pushed_with_presence(xmppd, directory) -> None:
    async def scenario() -> None:
        alice = await login(xmppd, "alice")
        await roster(alice)  # interested: gets pushes
        grace = await login(xmppd, "grace")
        await roster(grace)
        alice_dn = f"uid=alice,{PEOPLE}"
        directory.modify(SALES, {"member": [(ldap3.MODIFY_ADD, [alice_dn])]})
        try:
            item = await push_for(alice, "grace@localhost")
            assert item["subscription"] == "both" and item["groups"] == ["Sales"]
            assert item["name"] == "Grace Hopper"
            assert (await push_for(grace, "alice@localhost"))["subscription"] == "both"
            await available_from(alice, "grace@localhost")
        finally:
            directory.modify(SALES, {"member": [(ldap3.MODIFY_DELETE, [alice_dn])]})
        assert (await push_for(alice, "grace@localhost"))["subscription"] == "remove"
        for c in (alice, grace):
            await c.close()

    run(scenario())


def test_vcards_come_from_the_directory(xmppd, directory) -> None:
    async def scenario() -> None:
        dave = await login(xmppd, "dave", presence=False)
        get = dave.make_iq_get(ito="bob@localhost")
        get.append(ET.fromstring("<vCard xmlns='vcard-temp'/>"))
        result = await get.send(timeout=10)
        vcard = result.xml.find("{vcard-temp}vCard")
        assert vcard.findtext("{vcard-temp}FN") == "Bob Builder"
        assert vcard.findtext("{vcard-temp}EMAIL/{vcard-temp}USERID") == "bob@example.org"
        assert vcard.findtext("{vcard-temp}TEL/{vcard-temp}NUMBER") == "+49 30 5550001"
        # jpegPhoto becomes the avatar (PHOTO/BINVAL); olivia was never looked up (no cache).
        photo = b"\xff\xd8\xff\xe0 not really a jpeg"
        directory.modify(f"uid=olivia,{PEOPLE}", {"jpegPhoto": [(ldap3.MODIFY_ADD, [photo])]})
        get = dave.make_iq_get(ito="olivia@localhost")
        get.append(ET.fromstring("<vCard xmlns='vcard-temp'/>"))
        vcard = (await get.send(timeout=10)).xml.find("{vcard-temp}vCard")
        assert vcard.findtext("{vcard-temp}PHOTO/{vcard-temp}TYPE") == "image/jpeg"
        assert base64.b64decode(vcard.findtext("{vcard-temp}PHOTO/{vcard-temp}BINVAL")) == photo
        put = dave.make_iq_set()
        put.append(ET.fromstring("<vCard xmlns='vcard-temp'><FN>Not Dave</FN></vCard>"))
        with pytest.raises(IqError) as err:
            await put.send(timeout=10)
        assert err.value.iq["error"]["condition"] == "not-allowed"
        await dave.close()

    run(scenario())
