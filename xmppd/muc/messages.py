"""Messages in a room: groupchat (§7.4), subject (§8.1), private messages (§7.5), mediated
invitations and declines (§7.8.2-7.8.3). Each raises `MucError` for a refusal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..events import RoomEvent
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, copy, get_child, make, qname, sub
from . import moderation
from .history import with_author
from .room import MucError, Occupant, Room, RoomMessage

_STANZA_ID = qname(ns.SID, "stanza-id")
_X_USER = qname(ns.MUC_USER, "x")
_INVITE = qname(ns.MUC_USER, "invite")
_DECLINE = qname(ns.MUC_USER, "decline")


@dataclass(slots=True)
class RoomMessageEvent:
    """Payload of the MUC events `room-archiving` (a message about to be archived) and
    `room-posted` (then accepted and sent to the occupants); event subscriptions
    (xmppd/hooks/) listen to both."""

    room: Room
    stanza_id: str
    sender: str  # the author's bare JID
    nick: str
    text: str
    thread: str | None
    starts_thread: bool
    retraction: bool
    # Filled by `room-archiving` handlers: writes that join the message's archive write
    # (storage/base.py `Write`), and what they stand for, taken back at `room-posted`.
    writes: list[Any] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class RoomCommandEvent:
    """Payload of the MUC event `room-command`: a body starting with "/" from an occupant. A
    handler that returns True took it: it is neither archived nor sent to the room."""

    room: Room
    real: str  # the author's full JID
    bare: str
    text: str


def _sender(room: Room, real: str) -> Occupant:
    occupant = room.occupant_of(real)
    if occupant is None:
        raise MucError("not-acceptable", "you are not in this room")
    return occupant


async def groupchat(room: Room, real: str, stanza: Element) -> str | None:
    """Reflect a message to every occupant; messages with a body go to history and archive;
    a retraction (XEP-0424) of the sender's own message tombstones it first. Returns the
    room's stanza-id of what was archived (None for a subject change or a chat state)."""
    occupant = _sender(room, real)
    if occupant.role == "visitor":
        raise MucError("forbidden", "you have no voice in this room")
    subject = get_child(stanza, ns.CLIENT, "subject")
    body = get_child(stanza, ns.CLIENT, "body")
    if subject is not None and body is None:
        await change_subject(room, occupant, subject.text or "")
        return None
    check_rate(room, occupant)
    events = room.service.component.events
    text = body.text or "" if body is not None else ""
    if text.startswith("/") and await _command(room, real, occupant, text):
        return None  # a slash command (xmppd/hooks/commands.py): neither archived nor sent
    retract = get_child(stanza, ns.RETRACT, "retract")
    target = None
    if retract is not None:  # XEP-0424: checked before anything is sent
        target = await moderation.check_author(room, occupant, retract)
    out = copy(stanza)
    out.attrib.pop("to", None)
    out.set("from", room.occupant_jid(occupant))
    for old in out.findall(_STANZA_ID):
        if old.get("by") == room.jid:  # XEP-0359 §5: never pass on a forged one
            out.remove(old)
    for forged in out.findall(_X_USER):  # only the room speaks for real JIDs
        out.remove(forged)
    stanza_id: str | None = None
    posted: RoomMessageEvent | None = None
    if body is not None or retract is not None:  # retractions are archived too (XEP-0424 §6)
        stanza_id = str(uuid.uuid4())
        posted = _message_event(room, occupant, out, stanza_id)
        if events.has_handlers("room-archiving"):  # hook outbox rows join the archive write
            await events.fire("room-archiving", posted)
        await _keep(room, occupant, real, out, stanza_id, posted.writes)
    if target is not None:
        await moderation.tombstone(room, *target, moderation.retracted_by_author(out))
    room.service.pubsub.broadcast(room.topic, RoomMessage(out))
    await _tell(room, occupant, stanza, stanza_id)
    if posted is not None and events.has_handlers("room-posted"):
        await events.fire("room-posted", posted)
    return stanza_id


async def _tell(room: Room, occupant: Occupant, stanza: Element, stanza_id: str | None) -> None:
    """The `room-message` and `room-read` events (unread counts) after the room acted."""
    service, retract = room.service, get_child(stanza, ns.RETRACT, "retract")
    if stanza_id is not None:
        counts = retract is None and get_child(stanza, ns.CORRECT, "replace") is None
        retracts = retract.get("id") or "" if retract is not None else ""
        event = RoomEvent(room.jid, occupant.bare, stanza_id, counts, retracts)
        await service.notify("room-message", event)
    displayed = get_child(stanza, ns.MARKERS, "displayed")
    if displayed is not None and displayed.get("id"):
        await service.notify("room-read", RoomEvent(room.jid, occupant.bare, displayed.get("id")))


def _message_event(room: Room, occupant: Occupant, out: Element, stanza_id: str) -> Any:
    thread = get_child(out, ns.CLIENT, "thread")
    body = get_child(out, ns.CLIENT, "body")
    return RoomMessageEvent(
        room,
        stanza_id,
        occupant.bare,
        occupant.nick,
        body.text or "" if body is not None else "",
        thread.text if thread is not None else None,
        not _replies(out) and (thread is None or not thread.get("parent")),
        get_child(out, ns.RETRACT, "retract") is not None,
    )


def _replies(out: Element) -> bool:
    """XEP-0461 replies continue a conversation; everything else may start one."""
    return get_child(out, "urn:xmpp:reply:0", "reply") is not None


async def _command(room: Room, real: str, occupant: Occupant, text: str) -> bool:
    events = room.service.component.events
    if not events.has_handlers("room-command"):
        return False
    return await events.fire("room-command", RoomCommandEvent(room, real, occupant.bare, text))


async def _keep(
    room: Room, occupant: Occupant, real: str, out: Element, stanza_id: str, also: list[Any]
) -> None:
    """Stamp the room's stanza-id, archive with the author's real JID (and `also`, other
    writes, in the same transaction), add to history."""
    if not out.get("id"):
        out.set("id", stanza_id)  # a tombstone names its retraction by this id
    sub(out, ns.SID, "stanza-id", id=stanza_id, by=room.jid)
    archived = with_author(out, real, room.affiliation(occupant.bare), occupant.role)
    await room.service.archive_message(room, archived, stanza_id, also)
    room.history.add(out, author=occupant.bare)


async def from_room(room: Room, out: Element) -> str | None:
    """A message of the room itself (the admin API's system posts): from the room's bare JID,
    archived and kept in history when it has a body; its stanza-id."""
    out.set("type", "groupchat")
    out.set("from", room.jid)
    stanza_id = None
    if get_child(out, ns.CLIENT, "body") is not None:
        stanza_id = str(uuid.uuid4())
        if not out.get("id"):
            out.set("id", stanza_id)
        sub(out, ns.SID, "stanza-id", id=stanza_id, by=room.jid)
        await room.service.archive_message(room, out, stanza_id)
        room.history.add(out)
    room.service.pubsub.broadcast(room.topic, RoomMessage(out))
    return stanza_id


def check_rate(room: Room, occupant: Occupant) -> None:
    """The per-occupant message rate covers everything an occupant makes the room send."""
    room.service.check_rate(occupant)


async def send(room: Room, real: str, body: str) -> str | None:
    """Python API: a groupchat message with a body from the occupant at `real`."""
    stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
    sub(stanza, ns.CLIENT, "body", body)
    return await groupchat(room, real, stanza)


async def change_subject(room: Room, occupant: Occupant, subject: str) -> None:
    allowed = occupant.role == "moderator" or (
        room.config.change_subject and occupant.role == "participant"
    )
    if not allowed:
        raise MucError("forbidden", "you may not change the subject")
    room.subject, room.subject_from = subject, occupant.nick
    await room.save()
    out = make("message", {"type": "groupchat", "from": room.occupant_jid(occupant)})
    sub(out, ns.CLIENT, "subject", subject)
    room.service.pubsub.broadcast(room.topic, RoomMessage(out))


async def private(room: Room, real: str, nick: str, stanza: Element) -> None:
    """§7.5: to every session of the occupant `nick`, from the sender's occupant JID."""
    sender = _sender(room, real)
    if stanza.get("type") == "groupchat":
        raise MucError("bad-request", "groupchat messages go to the room")
    target = room.occupants.get(nick)
    if target is None:
        raise MucError("item-not-found", "no such occupant")
    allow = room.config.allow_pm
    if (
        allow == "none"
        or (allow == "moderators" and sender.role != "moderator")
        or (allow == "participants" and sender.role == "visitor")
    ):
        raise MucError("forbidden", "private messages are not allowed here")
    check_rate(room, sender)
    for seat_jid in list(target.seats):
        out = copy(stanza)
        out.set("from", room.occupant_jid(sender))
        out.set("to", seat_jid)
        if get_child(out, ns.MUC_USER, "x") is None:
            sub(out, ns.MUC_USER, "x")
        await room.service.send(out)


async def mediated(room: Room, real: str, x: Element) -> None:
    """`<x xmlns='…muc#user'>` with invites or declines sent to the room."""
    invites, declines = x.findall(_INVITE), x.findall(_DECLINE)
    if not invites and not declines:
        raise MucError("bad-request", "nothing to do with this message")
    for invite in invites:
        await _invite(room, real, invite)
    for decline in declines:
        await _decline(room, real, decline)


def _target(el: Element) -> str:
    try:
        return str(JID.parse(el.get("to") or ""))
    except JIDError:
        raise MucError("jid-malformed", "the invitee's address is not valid") from None


async def _invite(room: Room, real: str, invite: Element) -> None:
    sender = _sender(room, real)
    to = _target(invite)
    check_rate(room, sender)
    affiliation = room.affiliation(sender.bare)
    if room.config.members_only:
        if affiliation not in ("owner", "admin") and not room.config.allow_invites:
            raise MucError("forbidden", "only admins may invite to this room")
        invitee = str(JID.parse(to).bare)
        if room.affiliation(invitee) == "none":  # §7.8.2: the invitee becomes a member
            room.check_affiliation_room()
            room.affiliations[invitee] = "member"
            await room.save()
    out = make("message", {"from": room.jid, "to": to})
    x = sub(out, ns.MUC_USER, "x")
    forwarded = sub(x, ns.MUC_USER, "invite")
    forwarded.set("from", real)
    reason = get_child(invite, ns.MUC_USER, "reason")
    if reason is not None:
        sub(forwarded, ns.MUC_USER, "reason", reason.text or "")
    if room.config.password_protected:
        sub(x, ns.MUC_USER, "password", room.config.password)
    sub(out, ns.CLIENT, "body", f"{real} invites you to the room {room.jid}")
    await room.service.send(out)


async def _decline(room: Room, real: str, decline: Element) -> None:
    out = make("message", {"from": room.jid, "to": _target(decline)})
    x = sub(out, ns.MUC_USER, "x")
    forwarded = sub(x, ns.MUC_USER, "decline")
    forwarded.set("from", str(JID.parse(real).bare))
    reason = get_child(decline, ns.MUC_USER, "reason")
    if reason is not None:
        sub(forwarded, ns.MUC_USER, "reason", reason.text or "")
    await room.service.send(out)
