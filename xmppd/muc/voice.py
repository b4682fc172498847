"""Voice requests in moderated rooms (XEP-0045 §7.13, approval §8.6).

A visitor sends the room a muc#request form asking for the participant role; the room turns
it into an approval form for every moderator's sessions. A moderator who submits it back with
muc#request_allow true grants voice (§8.3: the new role is broadcast in presence).
"""

from __future__ import annotations

from ..protocol import namespaces as ns
from ..protocol.forms import Field, FormError, boolean, build, parse_submission, single
from ..protocol.stanza import Element, make
from .room import MucError, Occupant, Room

FORM_TYPE = "http://jabber.org/protocol/muc#request"


def is_request(x: Element) -> bool:
    """A data form of type muc#request (the message carries nothing else for the room)."""
    for field in x.iterfind(f"{{{ns.DATA_FORMS}}}field"):
        if field.get("var") == "FORM_TYPE":
            return field.findtext(f"{{{ns.DATA_FORMS}}}value") == FORM_TYPE
    return False


async def handle(room: Room, real: str, x: Element) -> None:
    sender = room.occupant_of(real)
    if sender is None:
        raise MucError("not-acceptable", "you are not in this room")
    try:
        values = parse_submission(x, FORM_TYPE)
        if "muc#request_allow" in values:
            await _decide(room, sender, values)
        else:
            await _request(room, sender, real, values)
    except FormError as exc:
        raise MucError("bad-request", str(exc)) from None


async def _request(room: Room, sender: Occupant, real: str, values: dict[str, list[str]]) -> None:
    """§7.13: forward the request to the moderators."""
    if single(values, "muc#role") != "participant":
        raise MucError("bad-request", "a voice request asks for the participant role")
    if sender.role != "visitor":
        raise MucError("not-acceptable", "you have voice already")
    room.service.check_rate(sender)  # every moderator gets each request
    fields = [
        Field("muc#role", "list-single", "Requested role", ["participant"]),
        Field("muc#jid", "jid-single", "User ID", [real]),
        Field("muc#roomnick", "text-single", "Room Nickname", [sender.nick]),
        Field("muc#request_allow", "boolean", "Grant voice to this person?", ["false"]),
    ]
    for moderator in room.occupants.values():
        if moderator.role != "moderator":
            continue
        for seat in list(moderator.seats):
            out = make("message", {"from": room.jid, "to": seat})
            out.append(build(FORM_TYPE, fields, title="Voice request"))
            await room.service.send(out)


async def _decide(room: Room, moderator: Occupant, values: dict[str, list[str]]) -> None:
    """§8.6: a moderator's answer; voice only when allowed and the occupant is still a visitor."""
    if moderator.role != "moderator":
        raise MucError("forbidden", "only moderators may approve voice requests")
    if not boolean(values, "muc#request_allow"):
        return
    occupant = room.occupants.get(single(values, "muc#roomnick") or "")
    jid = single(values, "muc#jid")
    if occupant is None or (jid and jid not in occupant.seats and jid != occupant.bare):
        raise MucError("item-not-found", "that occupant has left")  # or the nick changed hands
    if occupant.role == "visitor":
        await room.set_role(occupant, "participant")
