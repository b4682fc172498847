"""Retracting room messages: by their author (XEP-0424) or by a moderator (XEP-0425).

Both name the message by the stanza-id the room gave it. The room checks the right to retract
against its archive (the archived copy records the author's real JID), replaces the archived
message with a tombstone (XEP-0424 §5: `<retracted/>` instead of the content, same id and
time), drops it from the history newcomers get, and reflects the retraction to every
occupant. The retraction itself is archived like any message (XEP-0424 §6: clients that were
away learn of it from the archive).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from lxml import etree

from ..events import RoomEvent
from ..modules.mam_query import Query, QueryError, run_query
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, child_text, element, get_child, make, qname, sub
from ..storage.base import ArchiveItem
from .history import split_author, stamp
from .room import MucError, Occupant, Room, RoomMessage

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
# What a tombstone keeps of the original: who sent it and under which id (XEP-0424 §5).
_KEEP = frozenset({qname(ns.SID, "stanza-id"), qname(ns.MUC_USER, "x")})


async def find(room: Room, stanza_id: str | None) -> tuple[ArchiveItem, Element]:
    """The archived message with that stanza-id; item-not-found if none, or retracted already."""
    if not stanza_id:
        raise MucError("bad-request", "say which message by its stanza-id")
    try:
        page = await run_query(
            room.service.archive, room.archive_owner, Query(ids=[stanza_id], limit=1)
        )
    except QueryError as exc:
        raise MucError(exc.condition, exc.text) from None
    for item in page.items:
        original = etree.fromstring(item.stanza_xml.encode(), _PARSER)
        if get_child(original, ns.RETRACT, "retracted") is None:
            return item, original
    raise MucError("item-not-found", "no such message in this room")


async def check_author(
    room: Room, occupant: Occupant, retract: Element
) -> tuple[ArchiveItem, Element]:
    """XEP-0424 §6: only the author's account (same real bare JID) may retract a message."""
    item, original = await find(room, retract.get("id"))
    author = split_author(etree.fromstring(item.stanza_xml.encode(), _PARSER))[1]
    if author.partition("/")[0] != occupant.bare:
        raise MucError("forbidden", "only the author may retract a message")
    return item, original


def retracted_by_author(retraction: Element) -> Element:
    """The tombstone's marker: the retraction's message id and when it happened."""
    return element(ns.RETRACT, "retracted", id=retraction.get("id") or "", stamp=_now())


async def tombstone(room: Room, item: ArchiveItem, original: Element, retracted: Element) -> None:
    """Replace the archived message by its tombstone and take it out of the history."""
    for child in list(original):
        if not isinstance(child.tag, str) or child.tag not in _KEEP:
            original.remove(child)
    original.text = None
    original.append(retracted)
    xml = etree.tostring(original, encoding="unicode")
    archive = room.service.archive
    await archive.delete(room.archive_owner, item.id)
    await archive.append(
        room.archive_owner,
        with_jid=item.with_jid,
        stanza_xml=xml,
        stanza_id=item.id,
        timestamp=item.timestamp,
    )
    room.history.remove(item.id)


async def moderate(room: Room, moderator: Occupant | None, request: Element) -> None:
    """XEP-0425 §3: a moderator's `<moderate id=…><retract/></moderate>` iq."""
    if moderator is None or moderator.role != "moderator":
        raise MucError("forbidden", "only moderators may retract others' messages")
    if get_child(request, ns.RETRACT, "retract") is None:
        raise MucError("feature-not-implemented", "retraction is the only moderation action")
    item, original = await find(room, request.get("id"))
    room.service.check_rate(moderator)  # the announcement goes to everyone
    reason = (child_text(request, ns.MODERATE, "reason") or "").strip()
    await announce(room, item, original, room.occupant_jid(moderator), moderator.nick, reason)


async def moderate_by_service(room: Room, stanza_id: str, reason: str = "") -> str:
    """The server retracts a message (the admin API): XEP-0425 as if by a moderator, with the
    room's own JID as `by`. Returns the retraction's stanza-id."""
    item, original = await find(room, stanza_id)
    return await announce(room, item, original, room.jid, "A moderator", reason)


async def announce(
    room: Room, item: ArchiveItem, original: Element, by: str, name: str, reason: str
) -> str:
    """Archive and reflect the retraction, tombstone the original."""
    stanza_id = str(uuid.uuid4())
    out = make("message", {"type": "groupchat", "from": room.jid, "id": stanza_id})
    retract = sub(out, ns.RETRACT, "retract", id=item.id)
    sub(retract, ns.MODERATE, "moderated", by=by)
    if reason:
        sub(retract, ns.RETRACT, "reason", reason)
    sub(out, ns.FALLBACK, "fallback", **{"for": ns.RETRACT})  # XEP-0428: the body is fallback
    text = f"{name} retracted a message" + (f": {reason}" if reason else "")
    sub(out, ns.CLIENT, "body", text)
    sub(out, ns.SID, "stanza-id", id=stanza_id, by=room.jid)
    await room.service.archive_message(room, out, stanza_id)
    room.history.add(out)
    marker = element(ns.RETRACT, "retracted", id=stanza_id, stamp=_now())
    sub(marker, ns.MODERATE, "moderated", by=by)
    if reason:
        sub(marker, ns.RETRACT, "reason", reason)
    await tombstone(room, item, original, marker)
    room.service.pubsub.broadcast(room.topic, RoomMessage(out))
    await room.service.notify("room-message", RoomEvent(room.jid, "", stanza_id, retracts=item.id))
    return stanza_id


def _now() -> str:
    return stamp(datetime.now(UTC))
