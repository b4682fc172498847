"""Roster management (RFC 6121 §2): get, set, remove, pushes, errors, limits, versioning."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from support import ServerProcess, run

ROSTER = "jabber:iq:roster"
SERVER_CONFIG = """
[modules.roster]
max_items = 3
max_name_length = 10
max_groups = 2
max_group_length = 8
"""


def test_set_update_remove_pushed_to_interested_resources_only(im: Any) -> None:
    (alice,) = im.users("alice")

    async def scenario() -> None:
        desk, phone = await im.login(alice, "desk"), await im.login(alice, "phone")
        quiet = await im.login(alice, "quiet", roster=False)  # never asked: not interested
        assert desk.features >= {"rosterver", "preapproval"}  # stream features (§2.6, §3.4)
        assert await im.roster(desk) == ("0-0", {})

        await im.roster_set(desk, "nurse@localhost", "Nurse", ("Servants",))
        for client in (desk, phone):
            ver, item = await im.next_push(client)
            assert item == {
                "jid": "nurse@localhost",
                "name": "Nurse",
                "subscription": "none",
                "ask": None,
                "approved": None,
                "groups": ["Servants"],
            }
        await im.roster_set(phone, "nurse@localhost", "Angelica", ("Servants", "Friends"))
        for client in (desk, phone):
            new_ver, item = await im.next_push(client)
            assert (item["name"], item["groups"]) == ("Angelica", ["Friends", "Servants"])
            assert new_ver != ver
        got_ver, items = await im.roster(desk)
        assert got_ver == new_ver
        assert items["nurse@localhost"]["name"] == "Angelica"

        await im.roster_set(desk, "nurse@localhost", remove=True)
        for client in (desk, phone):
            assert (await im.next_push(client))[1]["subscription"] == "remove"
        assert (await im.roster(phone))[1] == {}
        # The pushes reached `quiet` before its own ping's answer, had it been sent any.
        await im.barrier(quiet)
        assert quiet.pushes.empty()
        for client in (desk, phone, quiet):
            await client.close()

    run(scenario())


def item_el(jid: str | None = "x@localhost", name: str | None = None, *groups: str) -> ET.Element:
    item = ET.Element(f"{{{ROSTER}}}item")
    if jid is not None:
        item.set("jid", jid)
    if name is not None:
        item.set("name", name)
    for group in groups:
        ET.SubElement(item, f"{{{ROSTER}}}group").text = group
    return item


ERRORS = [
    ("two items", [item_el("x@localhost"), item_el("y@localhost")], "bad-request"),
    ("no item", [], "bad-request"),
    ("no jid", [item_el(None)], "bad-request"),
    ("full JID", [item_el("x@localhost/res")], "bad-request"),
    ("malformed JID", [item_el("x@@localhost")], "jid-malformed"),
    ("own JID", [item_el("SELF")], "not-allowed"),
    ("duplicate groups", [item_el("x@localhost", None, "a", "a")], "bad-request"),
    ("empty group", [item_el("x@localhost", None, "")], "not-acceptable"),
    ("name too long", [item_el("x@localhost", "n" * 11)], "not-acceptable"),
    ("group too long", [item_el("x@localhost", None, "g" * 9)], "not-acceptable"),
    ("too many groups", [item_el("x@localhost", None, "a", "b", "c")], "not-acceptable"),
]


@pytest.mark.parametrize(("what", "items", "condition"), ERRORS, ids=[e[0] for e in ERRORS])
def test_roster_set_errors(im: Any, what: str, items: list[ET.Element], condition: str) -> None:
    """RFC 6121 §2.3.3: each bad roster set gets its error and changes nothing."""
    (alice,) = im.users("alice")

    async def scenario() -> None:
        client = await im.login(alice)
        for item in items:
            if item.get("jid") == "SELF":
                item.set("jid", f"{alice}@localhost")
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await im.roster_set(client, "", raw_items=items)
        assert raised.value.condition == condition, what
        assert (await im.roster(client))[1] == {}
        assert client.pushes.empty()
        await client.close()

    run(scenario())


def test_limits_at_the_edge_and_other_errors(im: Any) -> None:
    (alice, bob) = im.users("alice", "bob")

    async def scenario() -> None:
        client = await im.login(alice)
        # Exactly at the limits is fine.
        await im.roster_set(client, "a@localhost", "n" * 10, ("g" * 8, "h"))
        await im.roster_set(client, "b@localhost")
        await im.roster_set(client, "c@localhost")
        # max_items = 3: a fourth item is refused, a change to an existing one is not.
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await im.roster_set(client, "d@localhost")
        assert raised.value.condition == "not-allowed"
        await im.roster_set(client, "c@localhost", "Carl")
        # Subscribing to someone new would add an item too (§3.1.2): refused the same way.
        im.subscription(client, "d@localhost", "subscribe")
        error = await im.wait_for(client, lambda s: s.name == "presence" and s["type"] == "error")
        assert error["error"]["condition"] == "not-allowed"
        assert sorted((await im.roster(client))[1]) == ["a@localhost", "b@localhost", "c@localhost"]
        # §2.5.3: removing what is not there.
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await im.roster_set(client, "zz@localhost", remove=True)
        assert raised.value.condition == "item-not-found"
        # Only the account itself reads or writes its roster.
        for type_ in ("get", "set"):
            iq = client.make_iq(ito=f"{bob}@localhost", itype=type_)
            ET.SubElement(iq.xml, f"{{{ROSTER}}}query")
            with pytest.raises(slixmpp.exceptions.IqError) as raised:
                await iq.send(timeout=5)
            assert raised.value.condition == "forbidden"
        await client.close()

    run(scenario())


def test_versioning(im: Any) -> None:
    """RFC 6121 §2.6: empty result when current; pushes of what changed since; else all."""
    (alice,) = im.users("alice")

    async def scenario() -> None:
        client = await im.login(alice)
        start, _ = await im.roster(client, ver="")
        await im.roster_set(client, "x@localhost", "X")
        await im.roster_set(client, "y@localhost", "Y")
        for _ in range(2):
            await im.next_push(client)
        current, items = await im.roster(client)
        assert sorted(items) == ["x@localhost", "y@localhost"]
        assert await im.roster(client, ver=current) == (None, {})  # up to date: empty result
        assert client.pushes.empty()

        # From the start: an empty result, then one push per change, oldest first.
        assert await im.roster(client, ver=start) == (None, {})
        first, second = await im.next_push(client), await im.next_push(client)
        assert [first[1]["jid"], second[1]["jid"]] == ["x@localhost", "y@localhost"]
        assert second[0] == current

        await im.roster_set(client, "x@localhost", remove=True)
        removal_ver, _ = await im.next_push(client)
        assert await im.roster(client, ver=current) == (None, {})
        ver, item = await im.next_push(client)
        assert (ver, item["jid"], item["subscription"]) == (removal_ver, "x@localhost", "remove")

        # Unknown, foreign or future versions: the whole roster, with the current version.
        for ver in ("garbage", "beef-1", removal_ver.split("-")[0] + "-99"):
            got_ver, items = await im.roster(client, ver=ver)
            assert (got_ver, sorted(items)) == (removal_ver, ["y@localhost"])
        await client.close()

    run(scenario())


def test_versioning_after_pruned_removals(im: Any) -> None:
    """More tombstones than max_items (3): clients older than the pruned ones get it all."""
    (alice,) = im.users("alice")

    async def scenario() -> None:
        client = await im.login(alice)
        old, _ = await im.roster(client)
        for n in range(5):
            await im.roster_set(client, f"t{n}@localhost")
            await im.roster_set(client, f"t{n}@localhost", remove=True)
        await im.roster_set(client, "kept@localhost")
        current, items = await im.roster(client)
        assert list(items) == ["kept@localhost"]
        assert await im.roster(client, ver=old) == (current, items)  # too old: full roster
        # A recent version still gets pushes: the last removal and the new item.
        recent = f"{current.split('-')[0]}-{int(current.split('-')[1]) - 2}"
        while not client.pushes.empty():
            client.pushes.get_nowait()
        assert await im.roster(client, ver=recent) == (None, {})
        pushed = [(await im.next_push(client))[1] for _ in range(2)]
        assert [(p["jid"], p["subscription"]) for p in pushed] == [
            ("t4@localhost", "remove"),
            ("kept@localhost", "none"),
        ]
        await client.close()

    run(scenario())


def test_roster_survives_a_restart(tmp_path: Path, im_class: Any) -> None:
    server = ServerProcess(tmp_path)
    server.add_user("alice", "pw")
    server.add_user("bob", "pw")
    server.start()
    im = im_class(server)

    async def before() -> str:
        alice, bob = await im.login("alice"), await im.login("bob")
        await im.roster_set(alice, "nurse@localhost", "Nurse", ("Servants",))
        im.subscription(alice, "bob@localhost", "subscribe")
        await im.barrier(alice)
        im.subscription(bob, "alice@localhost", "subscribed")
        await im.barrier(bob)
        ver, _ = await im.roster(alice)
        await alice.close()
        await bob.close()
        return ver

    async def after(ver: str) -> None:
        alice = await im.login("alice")
        assert await im.roster(alice, ver=ver) == (None, {})  # the version is durable too
        _, items = await im.roster(alice)
        assert items["nurse@localhost"]["groups"] == ["Servants"]
        assert items["bob@localhost"]["subscription"] == "to"
        await alice.close()

    try:
        ver = run(before())
        server.stop()
        server.start()
        run(after(ver))
    finally:
        server.stop()
