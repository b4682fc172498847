"""Directory groups as data, sans-IO: memberships, version tags, rendered roster items."""

from __future__ import annotations

from lxml import etree

from xmppd.modules.directory_groups import Snapshot

R = "{jabber:iq:roster}"


def snapshot() -> Snapshot:
    names = {"ann": "Ann & Co", "bo": "Bo <B>", "cy": "Cy\x07", "di": ""}
    groups = {"All": {"ann", "bo", "cy", "di"}, "Dev": {"ann", "bo"}, "Ops": {"bo", "cy"}}
    return Snapshot.build(names, groups, set())


def parsed(snap: Snapshot, user: str, skip: set[str]) -> dict[str, tuple[str | None, list]]:
    xml = b"<query xmlns='jabber:iq:roster'>" + snap.render(user, skip, "@x") + b"</query>"
    items = etree.fromstring(xml).findall(f"{R}item")
    return {i.get("jid"): (i.get("name"), sorted(g.text for g in i)) for i in items}


def test_render_matches_items_with_groups_merged() -> None:
    snap = snapshot()
    got = parsed(snap, "bo", set())
    assert got == {
        "ann@x": ("Ann & Co", ["All", "Dev"]),
        "cy@x": ("Cy", ["All", "Ops"]),  # a control character cannot break the roster
        "di@x": (None, ["All"]),
    }
    for contact, (name, groups) in got.items():
        assert snap.item("bo", contact[:-2]) == (name, sorted(groups))
    # Contacts with a personal item are left out (merged by the roster module).
    assert set(parsed(snap, "bo", {"ann"})) == {"cy@x", "di@x"}
    assert set(parsed(snap, "di", {"cy"})) == {"ann@x", "bo@x"}


def test_tag_changes_with_membership_and_names_only() -> None:
    snap = snapshot()
    same = Snapshot.build(
        {"ann": "Ann & Co", "bo": "Bo <B>", "cy": "Cy\x07", "di": ""},
        {"All": {"ann", "bo", "cy", "di"}, "Dev": {"ann", "bo"}, "Ops": {"bo", "cy"}},
        set(),
    )
    assert snap.tag("ann") == same.tag("ann") != ""  # stable across reads (and restarts)
    renamed = Snapshot.build(
        {**snap.names, "cy": "Cyrus"}, {g: set(m) for g, m in snap.groups.items()}, set()
    )
    assert renamed.tag("ann") != snap.tag("ann")  # ann sees cy in All
    moved = Snapshot.build(snap.names, {"All": {"ann", "bo", "cy", "di"}, "Dev": {"ann"}}, set())
    assert moved.tag("di") == snap.tag("di") and moved.tag("ann") != snap.tag("ann")
    assert snap.tag("nobody") == ""


def test_memory_is_per_member_not_per_pair() -> None:
    members = {f"u{i}" for i in range(20000)}
    snap = Snapshot.build({m: m.upper() for m in members}, {"Everyone": members}, set())
    assert len(snap.groups["Everyone"]) == 20000 and len(snap.member_of) == 20000
    rendered = snap.render_group("Everyone", "@x")
    assert len(rendered.order) == 20000 and rendered.xml.count(b"<item ") == 20000
    assert snap.render("u5", set(), "@x").count(b"<item ") == 19999
