"""The user's rooms, on the user topic: the public room list, XEP-0402 bookmarks (the PEP
node `urn:xmpp:bookmarks:1`, the list XMPP clients show) and room creation with a config
(through the room service's API, muc/api.py). docs/channels.md, `user:` requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import child_text, element, make, sub
from . import render
from .rooms import text_arg
from .session import ChannelError

if TYPE_CHECKING:
    from .user import UserTopic


def _jid(value: Any) -> str:
    try:
        return str(JID.parse(str(value or "")))
    except JIDError:
        raise ChannelError("jid-malformed", "not a JID") from None


async def rooms(user: UserTopic, p: dict[str, Any]) -> dict[str, Any]:
    api = user.session.rooms.api_at(p.get("service"))
    return {"rooms": await api.public_rooms() if api is not None else []}


async def bookmarks(user: UserTopic, p: dict[str, Any]) -> dict[str, Any]:
    from ..pep.service import PubsubError, parse

    pep, s = user.service("pep"), user.session
    try:
        items = await pep.items(s.bare, ns.BOOKMARKS, s.bare, [], None)
    except PubsubError:
        return {"bookmarks": []}
    out = []
    for item_id, xml in items:
        conference = parse(xml)
        mark: dict[str, Any] = {
            "jid": item_id,
            "name": conference.get("name"),
            "autojoin": conference.get("autojoin") in ("1", "true"),
        }
        if (nick := child_text(conference, ns.BOOKMARKS, "nick")) is not None:
            mark["nick"] = nick
        out.append(mark)
    return {"bookmarks": out}


async def bookmark_set(user: UserTopic, p: dict[str, Any]) -> None:
    room = render.bare(_jid(p.get("jid")))
    name, nick = text_arg(p, "name", optional=True), text_arg(p, "nick", optional=True)
    await bookmark(user, room, name, bool(p.get("autojoin", False)), nick)


async def bookmark(
    user: UserTopic, room: str, name: str | None, autojoin: bool, nick: str | None
) -> None:
    from ..pep.bookmarks import NODE_CONFIG
    from ..pep.service import PubsubError

    item = element(ns.PUBSUB, "item", id=room)
    conference = sub(item, ns.BOOKMARKS, "conference", autojoin="true" if autojoin else "false")
    if name:
        conference.set("name", name)
    if nick:
        sub(conference, ns.BOOKMARKS, "nick", nick)
    try:
        await user.service("pep").publish(user.session.bare, ns.BOOKMARKS, item, dict(NODE_CONFIG))
    except PubsubError as exc:
        raise ChannelError(exc.condition, getattr(exc, "text", None)) from None


async def bookmark_remove(user: UserTopic, p: dict[str, Any]) -> None:
    from ..pep.service import PubsubError

    room = render.bare(_jid(p.get("jid")))
    try:
        await user.service("pep").retract(user.session.bare, ns.BOOKMARKS, [room], True)
    except PubsubError as exc:
        raise ChannelError(exc.condition) from None
    unread = user.host.services.get("unread")
    if unread is not None:  # the user let the room go: stop counting it
        await unread.rooms.stop(user.session.bare, room)


async def room_create(user: UserTopic, p: dict[str, Any]) -> dict[str, Any]:
    from ..muc.room import MucError

    name = text_arg(p, "name", limit=128)
    config = p.get("config", {})
    if not isinstance(config, dict):
        raise ChannelError("bad-request", "config is an object")
    members = config.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ChannelError("bad-request", "config members is a list of JIDs")
    wanted = p.get("jid")
    rooms = user.session.rooms
    if wanted is not None:
        api, local = rooms.api_for(str(wanted)), JID.parse(str(wanted)).local
    else:
        api, local = rooms.api_at(None), None
        if api is None:
            raise ChannelError("service-unavailable", "no MUC service here")
    try:
        room = await api.create(user.session.jid, name, local, config)
        for member in members:  # XEP-0249: the creator is not in the room yet
            invitation = make("message", {"to": str(JID.parse(member).bare)})
            sub(invitation, ns.CONFERENCE, "x", jid=room.jid)
            await user.session.route(invitation)
    except MucError as exc:
        raise ChannelError(exc.condition, exc.text) from None
    except JIDError:
        raise ChannelError("jid-malformed", "a member is not a JID") from None
    nick = text_arg(p, "nick", optional=True)
    await bookmark(user, room.jid, name, True, nick)
    return {"jid": room.jid}


REQUESTS = {
    "rooms": rooms,
    "bookmarks": bookmarks,
    "bookmark_set": bookmark_set,
    "bookmark_remove": bookmark_remove,
    "room_create": room_create,
}
