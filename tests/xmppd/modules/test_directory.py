"""Directory contacts against a real slapd: LDAP groups as virtual roster groups (with presence),
the 1,620-member "Everyone" group included, nothing stored per pair, changes pushed to online
clients and versioned, personal items merged beside directory ones, old stored rows migrated,
vCards."""

from __future__ import annotations

import asyncio
import base64
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import ldap3
import pytest
import slixmpp
import trio
from slixmpp.exceptions import IqError
from support import Client, ServerProcess, run

from xmppd.storage import open_database

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
    # Groups from the whole tree, "Everyone" (1,620 members) included.
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
    return (await versioned_roster(client))[0]


async def versioned_roster(client: Client, ver: str = "") -> tuple[dict[str, dict], str | None]:
    """(items, ver) of a roster get; ({}, None) when the server answers "nothing changed"."""
    iq = client.make_iq_get(queryxmlns="jabber:iq:roster")
    if ver:
        iq.xml.find("{jabber:iq:roster}query").set("ver", ver)
    result = await iq.send(timeout=15)
    query = result.xml.find("{jabber:iq:roster}query")
    if query is None:
        return {}, None
    items = {str(jid): item for jid, item in result["roster"]["items"].items()}
    return items, query.get("ver")


def stored_rows(server: ServerProcess, user: str) -> dict[str, dict]:
    async def read() -> dict[str, dict]:
        database = await open_database(server.data_dir)
        try:
            return await database.for_host("localhost").map("roster").get_all(user)
        finally:
            await database.close()

    return trio.run(read)


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
        assert bob["groups"] == ["Engineering", "Everyone"]
        # posixGroup memberUid works the same way.
        assert items["judy@localhost"]["groups"] == ["Everyone", "Support"]
        assert items["judy@localhost"]["name"] == "Judy Hopps"
        # The all-staff group (1,620 members, over AD's 1,500-value page) is a roster group.
        assert len(items) == 1619 and "alice@localhost" not in items
        assert items["bulk1600@localhost"]["groups"] == ["Everyone"]
        assert items["bulk1600@localhost"]["name"] == "Bulk User 1600"
        assert items["grace@localhost"]["subscription"] == "both"
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


def test_all_staff_group_presence_without_stored_rows(xmppd) -> None:
    async def scenario() -> None:
        # Colleagues who share only the 1,620-member group see each other come online.
        one = await login(xmppd, "bulk0001")
        two = await login(xmppd, "bulk0002")
        await available_from(one, "bulk0002@localhost")
        await available_from(two, "bulk0001@localhost")
        two.send_presence(pshow="dnd", pstatus="meeting")
        while (await available_from(one, "bulk0002@localhost"))["status"] != "meeting":
            pass
        items = await roster(one)
        assert items["bulk0002@localhost"]["subscription"] == "both" and len(items) == 1619
        two.disconnect()
        while True:
            gone = await asyncio.wait_for(one.presences.get(), 15)
            if gone["from"].bare == "bulk0002@localhost" and gone["type"] == "unavailable":
                break
        await one.close()

    run(scenario())
    # Virtual groups: nothing is written per pair (the old way wrote 1,619 rows per member).
    assert stored_rows(xmppd, "bulk0001") == {}
    assert stored_rows(xmppd, "alice") == {}


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
        # Asking for a subscription that the directory already gives is approved at once.
        carol.send_presence(pto="bob@localhost", ptype="subscribe")
        while (approved := await asyncio.wait_for(carol.presences.get(), 10))[
            "type"
        ] != "subscribed":
            pass
        assert approved["from"] == "bob@localhost"
        add = carol.make_iq_set()
        add["roster"]["items"] = {"friend@example.net": {"name": "Friend", "groups": ["Mine"]}}
        await add.send(timeout=10)
        items = await roster(carol)
        assert items["friend@example.net"]["name"] == "Friend"
        assert items["bob@localhost"]["subscription"] == "both"
        # A personal name and group for a directory contact: the personal name wins, groups
        # are joined, the subscription stays "both".
        rename = carol.make_iq_set()
        rename["roster"]["items"] = {"bob@localhost": {"name": "Bobby", "groups": ["Mine"]}}
        await rename.send(timeout=10)
        pushed = await push_for(carol, "bob@localhost")
        assert pushed["name"] == "Bobby" and pushed["subscription"] == "both"
        assert pushed["groups"] == ["Mine", "Engineering", "Everyone"]
        assert (await roster(carol))["bob@localhost"]["groups"] == pushed["groups"]
        await carol.close()

    run(scenario())


def test_group_change_is_pushed_with_presence_and_versioned(xmppd, directory) -> None:
    directory.add_user("quinn", "Quinn Fabray", "quinn-secret")  # in no group yet
    quinn_dn = f"uid=quinn,{PEOPLE}"

    async def scenario() -> None:
        quinn = await login(xmppd, "quinn")
        await roster(quinn)  # interested: gets pushes
        grace = await login(xmppd, "grace")
        before, ver1 = await versioned_roster(grace)
        assert "quinn@localhost" not in before
        assert (await versioned_roster(grace, ver1)) == ({}, None)  # nothing changed
        directory.modify(SALES, {"member": [(ldap3.MODIFY_ADD, [quinn_dn])]})
        try:
            item = await push_for(grace, "quinn@localhost")
            assert item["subscription"] == "both" and item["groups"] == ["Sales"]
            assert item["name"] == "Quinn Fabray"
            assert (await push_for(quinn, "grace@localhost"))["groups"] == ["Sales"]
            await available_from(grace, "quinn@localhost")
            await available_from(quinn, "grace@localhost")
            # The membership change changed the version: a client with the old one gets all.
            after, ver2 = await versioned_roster(grace, ver1)
            assert ver2 != ver1 and after["quinn@localhost"]["groups"] == ["Sales"]
            assert (await versioned_roster(grace, ver2)) == ({}, None)
        finally:
            directory.modify(SALES, {"member": [(ldap3.MODIFY_DELETE, [quinn_dn])]})
        assert (await push_for(grace, "quinn@localhost"))["subscription"] == "remove"
        for c in (quinn, grace):
            await c.close()

    try:
        run(scenario())
    finally:
        directory.delete(quinn_dn)


def test_old_per_pair_rows_are_migrated(directory, tmp_path) -> None:
    """Rows the earlier per-pair approach stored: directory ones go, personal ones come back."""
    server = ServerProcess(tmp_path, directory.settings_toml(group_base="dc=example,dc=org"))
    old_item = {"listed": True, "name": "Bob Builder", "groups": ["Engineering"], "sub": "both",
                "ask": False, "pending_in": False, "request": None, "approved": False, "ver": 1}  # fmt: skip
    personal = {**old_item, "name": "Friend", "groups": ["Mine"], "sub": "to", "ver": 2}
    prior = {k: personal[k] for k in ("listed", "name", "groups", "sub", "ask", "approved")}

    async def seed() -> None:
        database = await open_database(server.data_dir)
        storage = database.for_host("localhost")
        rows = storage.map("roster")
        await rows.set("peggy", "bob@localhost", old_item)
        await rows.set("peggy", "gone@localhost", {**old_item, "name": "Gone", "ver": 3})
        await rows.set("peggy", "friend@example.net", {**personal, "groups": ["Mine", "Sales"]})
        managed = {
            "bob@localhost": {"want": {"name": "Bob Builder", "groups": ["Engineering"]},
                              "prior": None},
            "gone@localhost": {"want": {"name": "Gone", "groups": ["Sales"]}, "prior": None},
            "friend@example.net": {"want": {"name": "Friend", "groups": ["Sales"]},
                                   "prior": prior},
        }  # fmt: skip
        await storage.keyval("directory_roster").set("peggy", {"items": managed})
        await database.close()

    server.data_dir.mkdir(parents=True, exist_ok=True)
    trio.run(seed)
    server.start()
    try:

        async def scenario() -> None:
            peggy = await login(server, "peggy", presence=False)
            items = await roster(peggy)
            assert "gone@localhost" not in items
            assert items["friend@example.net"]["groups"] == ["Mine"]
            assert items["friend@example.net"]["subscription"] == "to"
            assert items["bob@localhost"]["groups"] == ["Everyone"]  # from the directory now
            assert items["bob@localhost"]["subscription"] == "both"
            await peggy.close()

        run(scenario())
    finally:
        server.stop()

    async def old_store() -> list[str]:
        database = await open_database(server.data_dir)
        try:
            return await database.for_host("localhost").keyval("directory_roster").users()
        finally:
            await database.close()

    assert trio.run(old_store) == []
    listed = {c for c, d in stored_rows(server, "peggy").items() if d["listed"]}
    assert listed == {"friend@example.net"}
    assert "replaced by virtual groups" in server.log_text()


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
