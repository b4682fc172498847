"""Message Archive Management (XEP-0313, XEP-0441 preferences, XEP-0059 paging, XEP-0359 ids)
with real slixmpp clients against a real server. Accounts are fresh per test (`im.users`)."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import slixmpp
from lxml import etree
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import RawClient, ServerProcess, run

from xmppd.config import DEFAULT_MODULES
from xmppd.modules import mam
from xmppd.storage import open_database

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SM = "urn:xmpp:sm:3"
XDATA = "jabber:x:data"
SID = "{urn:xmpp:sid:0}stanza-id"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
DELAY = "{urn:xmpp:delay}delay"
CLIENT_MESSAGE = "{jabber:client}message"
# Pages are small so that paging and the cap show with a handful of messages.
SERVER_CONFIG = "[modules.mam]\ndefault_page_size = 3\nmax_page_size = 5\n"
_query_ids = itertools.count(1)


class Page:
    """What one query returned: the result messages in arrival order and the <fin/>."""

    def __init__(self, results: list[ET.Element], fin: ET.Element) -> None:
        self.results = results
        self.fin = fin

    @property
    def ids(self) -> list[str]:
        return [r.find(f"{{{MAM}}}result").get("id") for r in self.results]

    @property
    def bodies(self) -> list[str]:
        return [forwarded(r).findtext("{jabber:client}body") for r in self.results]

    @property
    def complete(self) -> bool:
        return self.fin.get("complete") in ("true", "1")

    def rsm(self, name: str) -> str | None:
        return self.fin.findtext(f"{{{RSM}}}set/{{{RSM}}}{name}")


def forwarded(result_message: ET.Element) -> ET.Element:
    return result_message.find(f"{{{MAM}}}result/{FORWARDED}/{CLIENT_MESSAGE}")


def stamp_of(result_message: ET.Element) -> str:
    return result_message.find(f"{{{MAM}}}result/{FORWARDED}/{DELAY}").get("stamp")


async def login(im: Any, user: str, resource: str = "r", **kwargs: Any) -> slixmpp.ClientXMPP:
    client = await im.login(user, resource, **kwargs)
    for plugin in ("xep_0059", "xep_0313", "xep_0280"):
        client.register_plugin(plugin)
    client.mam_results = []
    client.sent_carbons = asyncio.Queue()
    client.add_event_handler("carbon_sent", client.sent_carbons.put_nowait)
    client.register_handler(
        Callback(
            "mam results",
            MatchXPath(f"{CLIENT_MESSAGE}/{{{MAM}}}result"),
            lambda msg: client.mam_results.append(msg.xml),
        )
    )
    return client


async def query(
    client: slixmpp.ClientXMPP,
    fields: dict[str, str | list[str]] | None = None,
    rsm: dict[str, str] | None = None,
    *,
    flip: bool = False,
    to: str | None = None,
) -> Page:
    """A query built by hand (every field and RSM element under the test's control)."""
    qid = f"q{next(_query_ids)}"
    iq = client.make_iq_set(ito=to)
    q = ET.SubElement(iq.xml, f"{{{MAM}}}query", queryid=qid)
    if fields is not None:
        x = ET.SubElement(q, f"{{{XDATA}}}x", type="submit")
        form_type = ET.SubElement(x, f"{{{XDATA}}}field", var="FORM_TYPE", type="hidden")
        ET.SubElement(form_type, f"{{{XDATA}}}value").text = MAM
        for var, value in fields.items():
            f = ET.SubElement(x, f"{{{XDATA}}}field", var=var)
            for v in [value] if isinstance(value, str) else value:
                ET.SubElement(f, f"{{{XDATA}}}value").text = v
    if rsm is not None:
        s = ET.SubElement(q, f"{{{RSM}}}set")
        for name, value in rsm.items():
            ET.SubElement(s, f"{{{RSM}}}{name}").text = value or None
    if flip:
        ET.SubElement(q, f"{{{MAM}}}flip-page")
    client.mam_results.clear()
    result = await iq.send(timeout=10)
    # Results come before the iq result on the same stream, so all of them are in by now.
    mine = [m for m in client.mam_results if m.find(f"{{{MAM}}}result").get("queryid") == qid]
    return Page(mine, result.xml.find(f"{{{MAM}}}fin"))


async def error_of(coro: Any) -> str:
    with pytest.raises(IqError) as info:
        await coro
    return info.value.iq["error"]["condition"]


async def chat(im: Any, sender: slixmpp.ClientXMPP, to: str, *bodies: str) -> None:
    for body in bodies:
        sender.send_message(mto=to, mbody=body, mtype="chat")
    await im.barrier(sender)  # handled (and archived) in order before the ping's answer


async def received(client: slixmpp.ClientXMPP, body: str) -> slixmpp.Message:
    return await asyncio.wait_for(_first(client, body), 5)


async def _first(client: slixmpp.ClientXMPP, body: str) -> slixmpp.Message:
    while True:
        stanza = await client.inbox.get()
        if stanza.name == "message" and stanza["body"] == body:
            return stanza


def stanza_ids(message: slixmpp.Message | ET.Element) -> dict[str, str]:
    xml = message.xml if hasattr(message, "xml") else message
    return {el.get("by"): el.get("id") for el in xml.findall(SID)}


# ---- archiving and paging ---------------------------------------------------------------------


def test_conversation_from_two_resources_is_archived_on_both_sides_and_pages(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        a1 = await login(im, alice, "one")
        a2 = await login(im, alice, "two")
        b = await login(im, bob)
        a_bare, b_bare = a1.boundjid.bare, b.boundjid.bare
        await chat(im, a1, b_bare, "m1", "m2")
        await chat(im, b, a_bare, "m3")
        await chat(im, a2, b_bare, "m4")
        await chat(im, b, a1.boundjid.full, "m5")
        await chat(im, a1, b_bare, "m6", "m7")
        everything = [f"m{i}" for i in range(1, 8)]

        # slixmpp's own MAM client, default page size (3 here), all pages.
        got = [
            m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in a1.plugin["xep_0313"].iterate(rsm={"max": 3})
        ]
        assert got == everything

        # Forward: the first page is not complete, the next one picks up after its last id.
        first = await query(a1, rsm={"max": "4"})
        assert first.bodies == everything[:4] and not first.complete
        assert (first.rsm("first"), first.rsm("last")) == (first.ids[0], first.ids[-1])
        second = await query(a1, rsm={"max": "4", "after": first.rsm("last")})
        assert second.bodies == everything[4:] and second.complete

        # Backward from the newest end; every page is still oldest first.
        last = await query(a1, rsm={"max": "4", "before": ""})
        assert last.bodies == everything[3:] and not last.complete
        earlier = await query(a1, rsm={"max": "4", "before": last.rsm("first")})
        assert earlier.bodies == everything[:3] and earlier.complete
        assert earlier.ids + last.ids == first.ids + second.ids

        # Flipped page: same page, sent newest first.
        flipped = await query(a1, rsm={"max": "4", "before": ""}, flip=True)
        assert flipped.bodies == list(reversed(last.bodies))

        # Bob's archive has the same conversation under ids of its own.
        bobs = await query(b, rsm={"max": "5"})
        assert bobs.bodies == everything[:5]
        assert not set(bobs.ids) & set(first.ids + second.ids)
        # Messages keep their addresses: the second resource's message is from it.
        assert forwarded(first.results[3]).get("from") == a2.boundjid.full
        for client in (a1, a2, b):
            await client.close()

    run(scenario())


def test_filter_by_jid_and_time(im: Any) -> None:
    alice, bob, carol = im.users("alice", "bob", "carol")

    async def scenario() -> None:
        a = await login(im, alice)
        b = await login(im, bob, "phone")
        c = await login(im, carol)
        await chat(im, a, b.boundjid.bare, "to bob")
        await chat(im, c, a.boundjid.bare, "from carol")
        await chat(im, b, a.boundjid.bare, "from bob's phone")
        await chat(im, a, c.boundjid.bare, "to carol")
        await chat(im, a, b.boundjid.full, "to bob's phone")

        by_bob = await query(a, {"with": b.boundjid.bare})
        assert by_bob.bodies == ["to bob", "from bob's phone", "to bob's phone"]
        by_phone = await query(a, {"with": b.boundjid.full})
        assert by_phone.bodies == ["from bob's phone", "to bob's phone"]
        by_carol = await query(a, {"with": c.boundjid.bare})
        assert by_carol.bodies == ["from carol", "to carol"]

        every = await query(a, rsm={"max": "5"})
        stamps = [stamp_of(r) for r in every.results]
        assert stamps == sorted(stamps)
        # start and end are inclusive, to the microsecond of the stamps the server gave.
        window = await query(a, {"start": stamps[1], "end": stamps[3]})
        assert window.bodies == ["from carol", "from bob's phone", "to carol"]
        after = await query(a, {"start": stamps[3], "with": c.boundjid.bare})
        assert after.bodies == ["to carol"]
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        empty = await query(a, {"start": later.strftime("%Y-%m-%dT%H:%M:%SZ")})
        assert empty.results == [] and empty.complete and empty.rsm("first") is None

        # #extended: before-id/after-id bound a range without paging backwards; ids fetch.
        ids = every.ids
        between = await query(a, {"after-id": ids[0], "before-id": ids[4]})
        assert between.ids == ids[1:4] and between.complete
        picked = await query(a, {"ids": [ids[3], ids[1]]})
        assert picked.ids == [ids[1], ids[3]]
        meta = await a.plugin["xep_0313"].get_archive_metadata(timeout=5)
        assert meta["mam_metadata"]["start"]["id"] == ids[0]
        assert meta["mam_metadata"]["end"]["id"] == ids[4]
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_what_is_not_archived(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        a = await login(im, alice)
        b = await login(im, bob)
        to = b.boundjid.bare
        state = a.make_message(mto=to, mtype="chat")
        ET.SubElement(state.xml, "{http://jabber.org/protocol/chatstates}composing")
        state.send()
        hinted = a.make_message(mto=to, mbody="secret", mtype="chat")
        ET.SubElement(hinted.xml, "{urn:xmpp:hints}no-permanent-store")
        hinted.send()
        a.send_message(mto=to, mbody="headline", mtype="headline")
        a.send_message(mto=to, mbody="groupchat", mtype="groupchat")
        stored = a.make_message(mto=to, mtype="chat")
        ET.SubElement(stored.xml, "{urn:xmpp:hints}store")
        stored.send()
        await chat(im, a, to, "kept")
        assert (await query(a)).bodies == [None, "kept"]  # the <store/> hint, then the body
        assert (await query(b)).bodies == [None, "kept"]
        # Reading the archive does not archive the results again.
        assert len((await query(a)).results) == 2
        for client in (a, b):
            await client.close()

    run(scenario())


# ---- stanza ids -------------------------------------------------------------------------------


def test_stanza_id_is_the_archive_id_and_claims_are_removed(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        a1 = await login(im, alice, "one")
        a2 = await login(im, alice, "two")
        b = await login(im, bob)
        a_bare, b_bare = a1.boundjid.bare, b.boundjid.bare
        await a2.plugin["xep_0280"].enable()
        message = a1.make_message(mto=b_bare, mbody="hello", mtype="chat")
        for by in (b_bare, a_bare, "localhost"):  # forged claims in the server's name
            ET.SubElement(message.xml, SID, by=by, id="forged")
        ET.SubElement(message.xml, SID, by="elsewhere.example", id="kept")
        message.send()
        got = await received(b, "hello")
        bobs = await query(b)
        assert stanza_ids(got) == {b_bare: bobs.ids[0], "elsewhere.example": "kept"}
        # The sent carbon carries the sender's archive id (XEP-0313 §3.5).
        carbon = await asyncio.wait_for(_carbon(a2), 5)
        alices = await query(a1)
        assert stanza_ids(carbon)[a_bare] == alices.ids[0] != bobs.ids[0]
        # The archived copy is the message as sent: no forged ids.
        assert stanza_ids(forwarded(bobs.results[0])) == {"elsewhere.example": "kept"}
        for client in (a1, a2, b):
            await client.close()

    run(scenario())


async def _carbon(client: slixmpp.ClientXMPP) -> ET.Element:
    carbon = await client.sent_carbons.get()
    return carbon.xml.find("{urn:xmpp:carbons:2}sent/" + FORWARDED + "/" + CLIENT_MESSAGE)


def test_offline_message_is_archived_with_the_same_stanza_id(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        a = await login(im, alice)
        await chat(im, a, f"{bob}@localhost", "while you were away")
        b = await login(im, bob)  # initial presence: offline messages come before the barrier
        got = await received(b, "while you were away")
        assert got.xml.find(DELAY) is not None  # it did come from offline storage
        archived = await query(b)
        assert archived.bodies == ["while you were away"]
        assert stanza_ids(got) == {f"{bob}@localhost": archived.ids[0]}
        for client in (a, b):
            await client.close()

    run(scenario())


# ---- preferences ------------------------------------------------------------------------------


async def set_prefs(client: slixmpp.ClientXMPP, default: str, **lists: list[str]) -> ET.Element:
    iq = client.make_iq_set()
    prefs = ET.SubElement(iq.xml, f"{{{MAM}}}prefs", default=default)
    for name in ("always", "never"):
        listed = ET.SubElement(prefs, f"{{{MAM}}}{name}")
        for jid in lists.get(name, []):
            ET.SubElement(listed, f"{{{MAM}}}jid").text = jid
    return (await iq.send(timeout=5)).xml.find(f"{{{MAM}}}prefs")


def test_preferences_always_never_roster(im: Any) -> None:
    alice, bob, carol, dave = im.users("alice", "bob", "carol", "dave")

    async def scenario() -> None:
        a = await login(im, alice)
        b = await login(im, bob)
        c = await login(im, carol)
        d = await login(im, dave)
        a_bare = a.boundjid.bare
        get = a.make_iq_get()
        ET.SubElement(get.xml, f"{{{MAM}}}prefs")
        assert (await get.send(timeout=5)).xml.find(f"{{{MAM}}}prefs").get("default") == "always"

        answer = await set_prefs(a, "never", always=[c.boundjid.bare])
        assert answer.get("default") == "never"
        assert [j.text for j in answer.iter(f"{{{MAM}}}jid")] == [c.boundjid.bare]
        await chat(im, b, a_bare, "never kept")
        await chat(im, c, a_bare, "always kept")
        assert (await query(a)).bodies == ["always kept"]
        assert (await query(b)).bodies == ["never kept"]  # the sender's archive is its own

        # roster: contacts only; the never list still wins over the roster.
        await im.roster_set(a, b.boundjid.bare)
        await im.roster_set(a, d.boundjid.bare)
        await set_prefs(a, "roster", always=[c.boundjid.bare], never=[d.boundjid.full])
        await chat(im, b, a_bare, "from a contact")
        await chat(im, c, a_bare, "listed always")
        await chat(im, d, a_bare, "never from this resource")
        await chat(im, a, f"{dave}@localhost/elsewhere", "to another resource")
        stranger = im.users("eve")[0]
        e = await login(im, stranger)
        await chat(im, e, a_bare, "from a stranger")
        assert (await query(a)).bodies[1:] == ["from a contact", "listed always"]
        assert len((await query(a, rsm={"max": "5"})).results) == 4
        assert (await query(a, rsm={"max": "5"})).bodies[-1] == "to another resource"

        # Bad preferences change nothing.
        assert await error_of(set_prefs(a, "sometimes")) == "bad-request"
        both = await error_of(set_prefs(a, "always", always=[a_bare], never=[a_bare]))
        assert both == "bad-request"
        assert await error_of(set_prefs(a, "always", never=["@bad"])) == "jid-malformed"
        assert (await get.send(timeout=5)).xml.find(f"{{{MAM}}}prefs").get("default") == "roster"
        for client in (a, b, c, d, e):
            await client.close()

    run(scenario())


# ---- errors and limits ------------------------------------------------------------------------


def test_unknown_ids_bad_queries_and_the_page_cap(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        a = await login(im, alice)
        b = await login(im, bob)
        await chat(im, a, b.boundjid.bare, *[f"n{i}" for i in range(7)])
        assert await error_of(query(a, rsm={"after": "no-such-id"})) == "item-not-found"
        assert await error_of(query(a, rsm={"before": "no-such-id"})) == "item-not-found"
        assert await error_of(query(a, {"after-id": "no-such-id"})) == "item-not-found"
        assert await error_of(query(a, {"ids": ["no-such-id"]})) == "item-not-found"
        # An id from someone else's archive is unknown in this one.
        bobs = await query(b)
        assert await error_of(query(a, rsm={"after": bobs.ids[0]})) == "item-not-found"

        unknown = await error_of(query(a, {"urn:example:free-text": "x"}))
        assert unknown == "feature-not-implemented"
        assert await error_of(query(a, {"start": "yesterday"})) == "bad-request"
        assert await error_of(query(a, {"start": "2020-01-01T00:00:00"})) == "bad-request"
        assert await error_of(query(a, rsm={"max": "-1"})) == "bad-request"
        assert await error_of(query(a, rsm={"index": "2"})) == "feature-not-implemented"
        # Another account's archive is not ours to read.
        assert await error_of(query(a, to=b.boundjid.bare)) == "forbidden"

        # Default page (3 here) and the cap (5): asking for more gets 5, and not complete.
        assert len((await query(a)).results) == 3
        capped = await query(a, rsm={"max": "1000"})
        assert capped.bodies == [f"n{i}" for i in range(5)] and not capped.complete
        # max=0: no items, but whether there are any.
        counted = await query(a, rsm={"max": "0"})
        assert counted.results == [] and not counted.complete

        # The form lists the fields (none required) and ids as an open list.
        form = await a.plugin["xep_0313"].get_fields(timeout=5)
        assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(form.get_fields())
        info = await a.plugin["xep_0030"].get_info(jid=a.boundjid.bare, timeout=5)
        features = info["disco_info"]["features"]
        assert MAM in features and f"{MAM}#extended" in features
        for client in (a, b):
            await client.close()

    run(scenario())


# ---- retention --------------------------------------------------------------------------------


def test_retention_removes_old_messages(im_class: Any, tmp_path: Any) -> None:
    server = ServerProcess(
        tmp_path, "[modules.mam]\narchive_expires_after = 2\nexpire_interval = 1\n"
    )
    server.start()
    im = im_class(server)
    try:
        alice, bob = im.users("alice", "bob")

        async def scenario() -> None:
            a = await login(im, alice)
            b = await login(im, bob)
            await chat(im, a, b.boundjid.bare, "old")
            assert (await query(a)).bodies == ["old"]
            deadline = asyncio.get_running_loop().time() + 15
            while (await query(a)).results:  # the retention task runs every second
                assert asyncio.get_running_loop().time() < deadline, "never expired"
                await asyncio.sleep(0.5)
            assert (await query(b)).results == []
            await chat(im, a, b.boundjid.bare, "new")
            assert (await query(a)).bodies == ["new"]
            for client in (a, b):
                await client.close()

        run(scenario())
    finally:
        server.stop()


# ---- durability -------------------------------------------------------------------------------


def test_an_acknowledged_message_is_archived_after_a_crash(im_class: Any, tmp_path: Any) -> None:
    """XEP-0198 acknowledges a message only once both archives (and offline storage) hold it:
    SIGKILL right after the <a/> loses nothing."""
    server = ServerProcess(tmp_path)
    server.start()
    im = im_class(server)
    try:
        alice, bob = im.users("alice", "bob")
        raw = RawClient(server)
        raw.login(alice, "pw", "desk")
        raw.send(f"<enable xmlns='{SM}'/>")
        raw.read_until("<enabled")
        raw.send(
            f"<message to='{bob}@localhost' type='chat'><body>durable</body></message>"
            f"<r xmlns='{SM}'/>"
        )
        assert b"h='1'" in raw.read_until("<a ").replace(b'"', b"'")
        server.proc.kill()  # no clean shutdown
        server.proc.wait()
        raw.close()
        server.start()

        async def scenario() -> None:
            a = await login(im, alice)
            assert (await query(a)).bodies == ["durable"]
            b = await login(im, bob)
            got = await received(b, "durable")  # from offline storage, with the archive id
            assert stanza_ids(got) == {f"{bob}@localhost": (await query(b)).ids[0]}
            for client in (a, b):
                await client.close()

        run(scenario())
    finally:
        server.stop()


def test_without_offline_storage_an_archived_message_is_not_an_error(
    im_class: Any, tmp_path: Any
) -> None:
    enabled = [name for name in DEFAULT_MODULES if name != "offline"]
    server = ServerProcess(tmp_path, f"[modules]\nenabled = {enabled!r}\n")
    server.start()
    im = im_class(server)
    try:
        alice, bob, carol = im.users("alice", "bob", "carol")

        async def scenario() -> None:
            c = await login(im, carol)
            await set_prefs(c, "never")
            await c.close()
            a = await login(im, alice)
            await chat(im, a, f"{bob}@localhost", "archived")
            await chat(im, a, f"{carol}@localhost", "lost")
            # Only the message nobody kept bounces (RFC 6121 §8.5.2.2.1).
            bounce = await im.wait_for(a, lambda stanza: stanza.name == "message")
            assert (bounce["type"], bounce["body"]) == ("error", "lost")
            assert bounce["error"]["condition"] == "service-unavailable"
            b = await login(im, bob)
            assert (await query(b)).bodies == ["archived"]
            for client in (a, b):
                await client.close()

        run(scenario())
    finally:
        server.stop()


def test_unacknowledged_results_are_not_routed_again(im: Any) -> None:
    """A session that leaves before acknowledging (XEP-0198) has its stanzas routed again; query
    results among them reach no one (the bounce for a resource that is gone goes to the own
    account, which drops errors)."""
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        b = await login(im, bob)
        a = await im.login(alice, "r")
        await chat(im, b, f"{alice}@localhost", "to the archive")
        await received(a, "to the archive")
        stray: list[Any] = []
        a.register_handler(
            Callback("results", MatchXPath(f"{CLIENT_MESSAGE}/{{{MAM}}}result"), stray.append)
        )
        raw = RawClient(im.server)
        raw.login(alice, "pw", "sm")
        raw.send(f"<enable xmlns='{SM}'/>")
        raw.read_until("<enabled")
        raw.send(f"<iq type='set' id='q1'><query xmlns='{MAM}' queryid='lost'/></iq>")
        assert b"queryid=" in raw.read_until("</iq>")  # the result, then the fin
        raw.send("</stream:stream>")  # a clean close, with the results unacknowledged
        raw.read_to_close()
        raw.close()
        await logged(im.server, f"disconnected {alice}@localhost/sm")  # after routing again
        assert [s for s in await im.until_marker(b, a) if s.name == "message"] == []
        assert stray == []
        for client in (a, b):
            await client.close()

    run(scenario())


async def logged(server: ServerProcess, line: str, timeout: float = 5) -> None:
    """Wait for the server to log `line` (what it did before has been done)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while line not in server.log_text():
        assert asyncio.get_running_loop().time() < deadline, f"never logged {line!r}"
        await asyncio.sleep(0.05)


# ---- the query functions rooms reuse ----------------------------------------------------------


async def test_serve_query_answers_for_any_archive_store(tmp_path: Any) -> None:
    """What a MUC room does: its own store and owner, its own JID as the archive."""
    database = await open_database(tmp_path)
    try:
        store = database.for_host("muc.localhost").archive("muc_log")
        ids = [
            await store.append(
                "room",
                with_jid=f"room@muc.localhost/{nick}",
                stanza_xml=f"<message xmlns='jabber:client' type='groupchat' "
                f"from='room@muc.localhost/{nick}'><body>{body}</body></message>",
            )
            for nick, body in [("ann", "one"), ("ben", "two"), ("ann", "three")]
        ]
        query = etree.fromstring(
            f"<query xmlns='{MAM}' queryid='r1'><x xmlns='{XDATA}' type='submit'>"
            f"<field var='with'><value>room@muc.localhost/ann</value></field></x>"
            f"<set xmlns='{RSM}'><max>1</max><before/></set></query>"
        )
        messages, done = await mam.serve_query(
            store,
            "room",
            query,
            archive="room@muc.localhost",
            to="visitor@localhost/r",
            default_limit=10,
            max_limit=10,
        )
        (message,) = messages
        result = message.find(f"{{{MAM}}}result")
        assert (message.get("from"), message.get("to")) == (
            "room@muc.localhost",
            "visitor@localhost/r",
        )
        assert (result.get("id"), result.get("queryid")) == (ids[2], "r1")
        assert result.findtext(f"{FORWARDED}/{CLIENT_MESSAGE}/{{jabber:client}}body") == "three"
        assert done.get("complete") is None
        assert done.findtext(f"{{{RSM}}}set/{{{RSM}}}first") == ids[2]
        # Ids are per archive: another room's query cannot page from this room's ids.
        other = etree.fromstring(
            f"<query xmlns='{MAM}'><set xmlns='{RSM}'><after>{ids[0]}</after></set></query>"
        )
        with pytest.raises(mam.QueryError) as info:
            await mam.serve_query(
                store, "other", other, archive="x", to="y", default_limit=1, max_limit=1
            )
        assert info.value.condition == "item-not-found"
    finally:
        await database.close()
