"""Room history: what newcomers see on join (XEP-0045 §7.2.14-15, delay stamps per XEP-0203).

The recent messages are kept in memory (bounded by the room's history length and the service's
limit); every groupchat message is also appended to the "muc" archive store with the room's
bare JID as owner and the XEP-0359 stanza-id as record id, so room MAM can serve it later and a
persistent room gets its recent history back after a restart.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lxml import etree

from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, get_child, qname, sub

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
_STANZA_ID = qname(ns.SID, "stanza-id")
_X = qname(ns.MUC_USER, "x")
_ITEM = qname(ns.MUC_USER, "item")


@dataclass(slots=True)
class Entry:
    stamp: datetime
    stanza: Element  # from=room/nick, carries the stanza-id; no 'to'
    chars: int
    author: str = ""  # the sender's real bare JID ("" for the room's own messages)


@dataclass(slots=True)
class Request:
    """The `<history/>` limits of a join (§7.2.14); None: not given."""

    maxstanzas: int | None = None
    maxchars: int | None = None
    seconds: int | None = None
    since: datetime | None = None


def stamp(when: datetime) -> str:
    """XEP-0082 DateTime in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_request(x: Element | None) -> Request:
    """Read `<x xmlns='…muc'><history …/></x>`; malformed values are ignored (no limit)."""
    request = Request()
    history = get_child(x, ns.MUC, "history") if x is not None else None
    if history is None:
        return request
    for attr in ("maxstanzas", "maxchars", "seconds"):
        text = history.get(attr)
        if text is not None and text.strip().isdigit():
            setattr(request, attr, int(text))
    since = history.get("since")
    if since:
        try:
            parsed = datetime.fromisoformat(since)
            request.since = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return request


class History:
    def __init__(self, room_jid: str, size: int) -> None:
        self.room_jid = room_jid
        self.entries: deque[Entry] = deque(maxlen=max(size, 0))

    def resize(self, size: int) -> None:
        if size != self.entries.maxlen:
            self.entries = deque(self.entries, maxlen=max(size, 0))

    def add(self, stanza: Element, when: datetime | None = None, author: str = "") -> None:
        if self.entries.maxlen:
            chars = len(etree.tostring(stanza, encoding="unicode"))
            self.entries.append(Entry(when or datetime.now(UTC), stanza, chars, author))

    def load(self, items: list[tuple[datetime, str]]) -> None:
        """Restore from archived (timestamp, stanza XML), oldest first; tombstones of
        retracted messages stay out (XEP-0424 §5: no further distribution)."""
        for when, xml in items:
            try:
                stanza = etree.fromstring(xml.encode(), _PARSER)
            except etree.XMLSyntaxError:
                continue
            if get_child(stanza, ns.RETRACT, "retracted") is None:
                stanza, author = split_author(stanza)
                self.add(stanza, when, author.partition("/")[0])

    def remove(self, stanza_id: str) -> bool:
        """Drop the message the room stamped with `stanza_id` (retraction, moderation)."""
        for entry in self.entries:
            if stanza_id_of(entry.stanza, self.room_jid) == stanza_id:
                self.entries.remove(entry)
                return True
        return False

    def select(
        self, request: Request, now: datetime | None = None, hidden: frozenset[str] = frozenset()
    ) -> list[Entry]:
        """Newest-first walk that stops at the first limit reached; returned oldest first.
        Messages by the accounts in `hidden` are skipped (deleted accounts)."""
        if request.maxstanzas == 0 or request.maxchars == 0:
            return []
        now = now or datetime.now(UTC)
        oldest = now - timedelta(seconds=request.seconds) if request.seconds is not None else None
        picked: list[Entry] = []
        chars = 0
        for entry in reversed(self.entries):
            if entry.author in hidden:
                continue
            if request.maxstanzas is not None and len(picked) >= request.maxstanzas:
                break
            if oldest is not None and entry.stamp < oldest:
                break
            if request.since is not None and entry.stamp <= request.since:
                break
            chars += entry.chars
            if request.maxchars is not None and chars > request.maxchars:
                break
            picked.append(entry)
        picked.reverse()
        return picked

    def render(self, entry: Entry, to: str) -> Element:
        """The stored message for one recipient, with a XEP-0203 delay from the room."""
        out = copy(entry.stanza)
        out.set("to", to)
        sub(out, ns.DELAY, "delay", stamp=stamp(entry.stamp)).set("from", self.room_jid)
        return out


def stanza_id_of(stanza: Element, by: str) -> str | None:
    """The XEP-0359 stanza-id `by` the room (the id retractions refer to)."""
    for child in stanza.iterchildren(_STANZA_ID):
        if child.get("by") == by:
            return child.get("id")
    return None


def with_author(stanza: Element, real: str, affiliation: str, role: str) -> Element:
    """The archived form of a room message: the sender's real JID in `<x xmlns='…muc#user'>
    <item jid=…/>` (XEP-0313 §6.1.2), which queries show only to who may see real JIDs."""
    out = copy(stanza)
    x = sub(out, ns.MUC_USER, "x")
    sub(x, ns.MUC_USER, "item", jid=real, affiliation=affiliation, role=role)
    return out


def split_author(stanza: Element) -> tuple[Element, str]:
    """`stanza` without its muc#user `<x/>`, and the real JID that `<x/>` named ("" if none)."""
    author = ""
    for x in stanza.findall(_X):
        item = x.find(_ITEM)
        if item is not None and not author:
            author = item.get("jid") or ""
        stanza.remove(x)
    return stanza, author
