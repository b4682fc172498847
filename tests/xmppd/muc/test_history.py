"""History selection on join (XEP-0045 §7.2.14-15): the limits combine, newest messages win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lxml import etree

from xmppd.muc.history import History, Request, parse_request, split_author, stamp, with_author
from xmppd.protocol.stanza import copy, element, make, sub

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def filled(n: int = 5, size: int = 10) -> History:
    history = History("room@conference.example.org", size)
    for i in range(n):
        msg = make("message", {"type": "groupchat", "from": f"room@conference.example.org/n{i}"})
        sub(msg, "jabber:client", "body", f"m{i}")
        history.add(msg, NOW - timedelta(minutes=n - i))
    return history


def bodies(entries: list) -> list[str]:
    return [e.stanza.findtext("{jabber:client}body") for e in entries]


def test_limits() -> None:
    history = filled()
    assert bodies(history.select(Request(), NOW)) == ["m0", "m1", "m2", "m3", "m4"]
    assert bodies(history.select(Request(maxstanzas=2), NOW)) == ["m3", "m4"]
    assert history.select(Request(maxstanzas=0), NOW) == []
    assert bodies(history.select(Request(seconds=150), NOW)) == ["m3", "m4"]
    since = NOW - timedelta(minutes=2, seconds=30)
    assert bodies(history.select(Request(since=since), NOW)) == ["m3", "m4"]
    one = history.entries[-1].chars
    assert bodies(history.select(Request(maxchars=one), NOW)) == ["m4"]
    assert history.select(Request(maxchars=one - 1), NOW) == []


def test_size_bounds_and_resize() -> None:
    history = filled(5, size=3)
    assert bodies(history.select(Request(), NOW)) == ["m2", "m3", "m4"]
    history.resize(1)
    assert bodies(history.select(Request(), NOW)) == ["m4"]
    assert History("r@c", 0).select(Request(), NOW) == []


def test_render_adds_delay_from_the_room() -> None:
    history = filled(1)
    out = history.render(history.entries[0], "u@example.org/r")
    delay = out.find("{urn:xmpp:delay}delay")
    assert out.get("to") == "u@example.org/r"
    assert delay.get("from") == "room@conference.example.org"
    assert delay.get("stamp") == stamp(NOW - timedelta(minutes=1))
    assert history.entries[0].stanza.get("to") is None  # the stored copy is untouched


def test_parse_request_and_restore() -> None:
    x = element("http://jabber.org/protocol/muc", "x")
    sub(x, "http://jabber.org/protocol/muc", "history", maxstanzas="3", since="bad", seconds="-1")
    request = parse_request(x)
    assert request == Request(maxstanzas=3)
    request = parse_request(None)
    assert request == Request()
    history = History("r@c", 5)
    xml = etree.tostring(filled(1).entries[0].stanza, encoding="unicode")
    history.load([(NOW, xml), (NOW, "<not xml")])
    assert bodies(history.select(Request(), NOW)) == ["m0"]


def test_authors_removal_and_tombstones() -> None:
    room = "room@conference.example.org"
    history = History(room, 10)
    for i, author in enumerate(("a@example.org", "b@example.org", "a@example.org")):
        msg = make("message", {"type": "groupchat", "from": f"{room}/n{i}"})
        sub(msg, "jabber:client", "body", f"m{i}")
        sub(msg, "urn:xmpp:sid:0", "stanza-id", id=f"id{i}", by=room)
        history.add(msg, NOW, author=author)
    hidden = frozenset({"a@example.org"})
    assert bodies(history.select(Request(), NOW, hidden=hidden)) == ["m1"]
    assert bodies(history.select(Request(maxstanzas=1), NOW, hidden=hidden)) == ["m1"]
    assert history.remove("id1") and not history.remove("id1") and not history.remove("x")
    assert bodies(history.select(Request(), NOW)) == ["m0", "m2"]

    # The archived form names the author; restoring strips it and skips tombstones.
    archived = with_author(history.entries[0].stanza, "a@example.org/r", "member", "participant")
    assert split_author(copy(archived))[1] == "a@example.org/r"
    tombstone = make("message", {"type": "groupchat", "from": f"{room}/n9"})
    sub(tombstone, "urn:xmpp:message-retract:1", "retracted", id="r1")
    restored = History(room, 10)
    restored.load([(NOW, etree.tostring(x, encoding="unicode")) for x in (archived, tombstone)])
    assert [(e.author, bodies([e])) for e in restored.entries] == [("a@example.org", ["m0"])]
    assert restored.entries[0].stanza.find("{http://jabber.org/protocol/muc#user}x") is None
