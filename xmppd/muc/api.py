"""The room service's API (`service.api`): what every front-end calls to act in a room. The
XMPP stanza handlers (service.py, admin.py) parse a stanza, call it and render the answer or
the MucError; the JSON channels (channels/rooms.py) do the same with JSON; later the admin
HTTP API will too. So an operation has one code path and its permission checks are in one
place (messages.groupchat, moderation.moderate, admin.plan_item, admin.owner_set...), and both
kinds of client get the same result. Refusals are MucError with the XEP-0045 condition.

Operations come in two forms where XMPP carries more than JSON: the stanza form (`post`,
`mediated`, `change`, `moderate_request`, `owner_request`, `presence`), and builders for the
JSON calls (`send`, `invite`, `kick`, `moderate`, `destroy`, `join`...) that make the same
element and call it.

`real` is always the acting session's full JID: a session must be an occupant for what an
occupant does, and its account's affiliation counts for the rest.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from pubsub.topics import room_topic

from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, get_child, make, sub
from ..storage.base import StorageError, UnknownArchiveId
from . import admin, archive, disco, messages, moderation, voice
from .history import Request, split_author
from .room import MucError, Occupant, Room

if TYPE_CHECKING:
    from ..storage.base import ArchiveItem
    from .service import MucService

MAX_PAGE = 100
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
CONFIG_KEYS = {
    "name": str,
    "description": str,
    "members_only": bool,
    "public": bool,
    "persistent": bool,
    "moderated": bool,
    "password": str,
    "whois": str,
}


@dataclass(slots=True)
class OccupantView:
    nick: str
    role: str
    affiliation: str
    jid: str | None  # bare; None when the room hides it from the asker


class RoomApi:
    def __init__(self, service: MucService) -> None:
        self.service = service

    @property
    def domain(self) -> str:
        return self.service.domain

    def room(self, room_jid: str) -> Room:
        room = self.service.room(_local(room_jid))
        if room is None:
            raise MucError("item-not-found", "no such room")
        return room

    def open_room(self, room_jid: str) -> Room:
        """The room, unless it is locked (§10.1.1: no messages before it is configured)."""
        room = self.room(room_jid)
        if room.locked:
            raise MucError("item-not-found", "no such room")
        return room

    def occupant(self, room: Room, real: str) -> Occupant:
        occupant = room.occupant_of(real)
        if occupant is None:
            raise MucError("not-acceptable", "you are not in this room")
        return occupant

    # ---- presence in a room -----------------------------------------------------------------

    async def join(
        self,
        room_jid: str,
        real: JID,
        nick: str,
        *,
        password: str | None = None,
        history: int | None = None,
    ) -> Occupant:
        """Enter (or create) a room with a plain presence; `history`: how many messages."""
        await self._served_here(room_jid)
        wanted = Request(maxstanzas=history) if history is not None else None
        return await self.enter(room_jid, real, nick, password=password, history=wanted)

    async def served_by(self, room_jid: str) -> str | None:
        """Cluster mode: the node serving the room when it is not this one (a room nobody
        serves is taken here)."""
        placement = self.service.placement
        if placement is None:
            return None
        try:
            owner = await placement.owner(f"{_local(room_jid)}@{self.domain}")
        except StorageError:
            raise MucError("resource-constraint", "the room is not reachable right now") from None
        return None if owner == placement.node else owner

    async def _served_here(self, room_jid: str) -> None:
        """Cluster mode: the room API acts on the rooms this node serves. A room nobody serves
        is taken here (its lease); one another node serves is refused, since its state lives
        there (JSON sessions join those with stanzas: channels/remote_rooms.py)."""
        owner = await self.served_by(room_jid)
        if owner is not None:
            raise MucError(
                "service-unavailable",
                f"the room is served by cluster node {owner}: join it there or over XMPP",
            )

    async def enter(
        self,
        room_jid: str,
        real: JID,
        nick: str,
        presence: Element | None = None,
        *,
        password: str | None = None,
        history: Request | None = None,
    ) -> Occupant:
        """The session enters the room as `nick` (§7.2). A room that does not exist is created
        for it (§10.1: owned by its account, locked until configured if `lock_new_rooms`);
        a join for a name being destroyed waits for the end of it."""
        await self.service.ready()
        local = _local(room_jid)
        presence = presence if presence is not None else make("presence")
        room = await self.service.settled_room(local)
        if room is None:
            room = self.service.create(local, real)
            try:
                occupant = await room.join(real, nick, presence, created=True)
            except MucError:
                await self.service.destroy_room(room)
                raise
            await self.service.lifecycle(room, "room-created")
            return occupant
        return await room.join(real, nick, presence, password=password, history=history)

    async def presence(
        self,
        room_jid: str,
        real: JID,
        nick: str,
        presence: Element,
        *,
        password: str | None = None,
        history: Request | None = None,
    ) -> None:
        """An available presence to room/nick: entering, or an occupant's status (§7.7) or
        nick change (§7.6); updates count against the occupant's message rate."""
        room = self.service.room(_local(room_jid))
        occupant = room.occupant_of(str(real)) if room is not None else None
        if room is None or occupant is None:
            await self.enter(room_jid, real, nick, presence, password=password, history=history)
            return
        messages.check_rate(room, occupant)  # every update is broadcast to everyone
        if occupant.nick == nick:
            await room.update_presence(str(real), presence)
        else:
            await room.change_nick(str(real), nick, presence)

    async def leave(
        self,
        room_jid: str,
        real: str,
        *,
        nick: str | None = None,
        status: Element | None = None,
        code: str | None = None,
    ) -> None:
        """The session leaves (§7.14; `code` 333 when its client errored); with `nick`, only
        when it is in the room under that nick. Not in the room: nothing happens."""
        room = self.service.rooms.get(_local(room_jid))
        occupant = room.occupant_of(real) if room is not None else None
        if room is None or occupant is None or (nick is not None and occupant.nick != nick):
            return
        await room.leave(real, status, code)

    def occupants(self, room_jid: str, real: str) -> list[OccupantView]:
        room = self.room(room_jid)
        me = room.occupant_of(real)
        show = me is not None and room.sees_jids(me)
        return [
            OccupantView(o.nick, o.role, room.affiliation(o.bare), o.bare if show else None)
            for o in sorted(room.occupants.values(), key=lambda o: o.nick)
        ]

    def sees_jids(self, room_jid: str, real: str) -> bool:
        try:
            room = self.room(room_jid)
        except MucError:
            return False
        me = room.occupant_of(real)
        return me is not None and room.sees_jids(me)

    def describe(self, room_jid: str, real: str) -> dict[str, Any]:
        """What a joined client is told about the room and itself."""
        room = self.room(room_jid)
        me = self.occupant(room, real)
        c = room.config
        return {
            "nick": me.nick,
            "role": me.role,
            "affiliation": room.affiliation(me.bare),
            "subject": room.subject or None,
            "config": {
                "name": c.name,
                "members_only": c.members_only,
                "moderated": c.moderated,
                "whois": c.whois,
                "public": c.public,
                "persistent": c.persistent,
            },
        }

    # ---- messages ---------------------------------------------------------------------------

    async def post(self, room_jid: str, real: str, stanza: Element) -> str | None:
        """A groupchat message as an XMPP client sent it or a builder below made it (body,
        subject, chat state, marker, correction, retraction): every check is in
        messages.groupchat. Its stanza-id when it was archived."""
        return await messages.groupchat(self.open_room(room_jid), real, stanza)

    async def private(self, room_jid: str, real: str, nick: str, stanza: Element) -> None:
        """§7.5: a private message to the occupant `nick`."""
        await messages.private(self.room(room_jid), real, nick, stanza)

    async def mediated(self, room_jid: str, real: str, x: Element) -> None:
        """§7.8.2-7.8.3: the invitations and declines of a muc#user `<x/>` sent to the room."""
        await messages.mediated(self.open_room(room_jid), real, x)

    async def voice_request(self, room_jid: str, real: str, form: Element) -> None:
        """§7.13 a visitor's voice request, §8.6 a moderator's answer to one."""
        await voice.handle(self.open_room(room_jid), real, form)

    async def send(
        self,
        room_jid: str,
        real: str,
        body: str,
        *,
        msg_id: str | None = None,
        replace: str | None = None,
        oob: str | None = None,
    ) -> str | None:
        """A groupchat message (a XEP-0308 correction with `replace`, a file shared by its URL
        with XEP-0066 `oob`); its stanza-id."""
        room = self.room(room_jid)
        stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
        stanza.set("id", msg_id or secrets.token_hex(8))
        sub(stanza, ns.CLIENT, "body", body)
        if replace is not None:
            sub(stanza, ns.CORRECT, "replace", id=replace)
        if oob is not None:
            sub(sub(stanza, ns.OOB, "x"), ns.OOB, "url", oob)
        sub(stanza, ns.SID, "origin-id", id=stanza.get("id") or "")
        return await self.post(room.jid, real, stanza)

    async def correct(self, room_jid: str, real: str, stanza_id: str, body: str) -> str | None:
        """XEP-0308: the author replaces its message (named by stanza-id); the correction names
        the original by its own id, as XMPP clients do."""
        room = self.room(room_jid)
        occupant = self.occupant(room, real)
        retract = element(ns.RETRACT, "retract", id=stanza_id)
        _item, original = await moderation.check_author(room, occupant, retract)
        target = original.get("id") or stanza_id
        return await self.send(room_jid, real, body, replace=target)

    def account_of(self, room_jid: str, nick: str) -> str:
        occupant = self.room(room_jid).occupants.get(nick)
        if occupant is None:
            raise MucError("item-not-found", "no such occupant")
        return occupant.bare

    async def retract(self, room_jid: str, real: str, stanza_id: str) -> None:
        """XEP-0424 by the author (the room checks authorship against its archive)."""
        room = self.room(room_jid)
        stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
        stanza.set("id", secrets.token_hex(8))
        sub(stanza, ns.RETRACT, "retract", id=stanza_id)
        sub(stanza, ns.FALLBACK, "fallback", **{"for": ns.RETRACT})
        sub(stanza, ns.CLIENT, "body", "This person attempted to retract a previous message.")
        await self.post(room.jid, real, stanza)

    async def moderate(self, room_jid: str, real: str, stanza_id: str, reason: str = "") -> None:
        request = element(ns.MODERATE, "moderate", id=stanza_id)
        sub(request, ns.RETRACT, "retract")
        if reason:
            sub(request, ns.MODERATE, "reason", reason)
        await self.moderate_request(room_jid, real, request)

    async def moderate_request(self, room_jid: str, real: str, request: Element) -> None:
        """XEP-0425: a moderator's `<moderate id=…><retract/><reason/></moderate>`."""
        room = self.room(room_jid)
        await moderation.moderate(room, room.occupant_of(real), request)

    async def subject(self, room_jid: str, real: str, subject: str) -> None:
        room = self.room(room_jid)
        stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
        sub(stanza, ns.CLIENT, "subject", subject)
        await self.post(room.jid, real, stanza)

    async def chat_state(self, room_jid: str, real: str, state: str) -> None:
        room = self.room(room_jid)
        stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
        sub(stanza, ns.CHATSTATES, state)
        sub(stanza, ns.HINTS, "no-store")
        await self.post(room.jid, real, stanza)

    async def displayed(self, room_jid: str, real: str, stanza_id: str) -> None:
        """A XEP-0333 `<displayed/>` marker to the room (it also moves the unread position)."""
        room = self.room(room_jid)
        stanza = make("message", {"type": "groupchat", "to": room.jid, "from": real})
        sub(stanza, ns.MARKERS, "displayed", id=stanza_id)
        sub(stanza, ns.HINTS, "no-store")
        await self.post(room.jid, real, stanza)

    async def history(
        self,
        room_jid: str,
        real: JID,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> tuple[list[tuple[ArchiveItem, Element, str]], bool, bool]:
        """A page of the room's archive: (item, stanza without its author, author real JID)
        oldest first, whether the page is the last in its direction, and whether real JIDs
        may be shown to the asker (XEP-0313 §6.1.2 rules)."""
        room = self.room(room_jid)
        show = archive.check_access(room, real)
        store = self.service.archive
        limit = max(1, min(limit, MAX_PAGE))
        try:
            page = await store.query(
                room.archive_owner,
                after_id=after,
                before_id=before,
                limit=limit,
                backward=after is None,
            )
        except UnknownArchiveId:
            raise MucError("item-not-found", "no message with that id here") from None
        hidden = await self.service.hidden_authors(set())
        out = []
        for item in page.items:
            stanza, author = split_author(etree.fromstring(item.stanza_xml.encode(), _PARSER))
            if author.partition("/")[0] in hidden:
                continue
            out.append((item, stanza, author))
        return out, page.complete, show

    # ---- unread counts (modules/unread.py) ----------------------------------------------------

    async def exists(self, room_jid: str) -> bool:
        await self.service.ready()
        try:
            self.room(room_jid)
        except MucError:
            return False
        return True

    async def newest_id(self, room_jid: str) -> str | None:
        """The stanza-id of the room's newest archived message (None: none yet)."""
        await self.service.ready()
        room = self.room(room_jid)
        page = await self.service.archive.query(room.archive_owner, limit=1, backward=True)
        return page.items[-1].id if page.items else None

    async def unread_after(
        self, room_jid: str, bare: str, after: str | None, limit: int
    ) -> tuple[list[str], list[str]]:
        """The stanza-ids of the archived messages after `after` (None: from the first; at
        most `limit`), and those of them that count as unread for the account `bare`: others'
        messages with a body, not corrections nor retractions (tombstones have no body).
        MucError item-not-found: no such room, or no such message in it."""
        await self.service.ready()
        room = self.room(room_jid)
        try:
            page = await self.service.archive.query(room.archive_owner, after_id=after, limit=limit)
        except UnknownArchiveId:
            raise MucError("item-not-found", "no message with that id here") from None
        seen, unread = [], []
        for item in page.items:
            seen.append(item.id)
            stanza, author = split_author(etree.fromstring(item.stanza_xml.encode(), _PARSER))
            if author.partition("/")[0] != bare and _counts(stanza):
                unread.append(item.id)
        return seen, unread

    # ---- moderation and administration --------------------------------------------------------

    async def kick(self, room_jid: str, real: str, nick: str, reason: str = "") -> None:
        await self._admin(room_jid, real, {"nick": nick, "role": "none"}, reason)

    async def set_role(
        self, room_jid: str, real: str, nick: str, role: str, reason: str = ""
    ) -> None:
        await self._admin(room_jid, real, {"nick": nick, "role": role}, reason)

    async def set_affiliation(
        self, room_jid: str, real: str, jid: str, affiliation: str, reason: str = ""
    ) -> None:
        await self._admin(room_jid, real, {"jid": jid, "affiliation": affiliation}, reason)

    async def _admin(self, room_jid: str, real: str, attrs: dict[str, str], reason: str) -> None:
        item = element(ns.MUC_ADMIN, "item", **attrs)
        if reason:
            sub(item, ns.MUC_ADMIN, "reason", reason)
        await self.change(room_jid, real, [item])

    async def change(self, room_jid: str, real: str, items: list[Element]) -> None:
        """muc#admin `<item/>`s (roles by nick: kick, voice, moderator; affiliations by JID:
        ban, members, admins, owners): every item is checked before any is applied."""
        room = self.room(room_jid)
        actor = admin.Actor(room, JID.parse(real))
        changes = [admin.plan_item(room, actor, item) for item in items]
        if not changes:
            raise MucError("bad-request", "no item to change")
        for change in changes:
            await change()

    async def invite(self, room_jid: str, real: str, to: str, reason: str = "") -> None:
        """Mediated (XEP-0045 §7.8.2): in a members-only room an admin's invitee becomes a
        member."""
        room = self.room(room_jid)
        x = element(ns.MUC_USER, "x")
        invite = sub(x, ns.MUC_USER, "invite", to=to)
        if reason:
            sub(invite, ns.MUC_USER, "reason", reason)
        await self.mediated(room.jid, real, x)

    async def destroy(self, room_jid: str, real: str, reason: str = "") -> None:
        query = element(ns.MUC_OWNER, "query")
        destroy = sub(query, ns.MUC_OWNER, "destroy")
        if reason:
            sub(destroy, ns.MUC_OWNER, "reason", reason)
        await self.owner_request(room_jid, real, query)

    async def owner_request(self, room_jid: str, real: str, query: Element) -> None:
        """A muc#owner set (§10): the configuration form (or its cancel), or `<destroy/>`
        (§10.9: alternate venue, reason, password). Owners only."""
        room = self.room(room_jid)
        if room.affiliation(str(JID.parse(real).bare)) != "owner":
            raise MucError("forbidden", "only owners may do this")
        await admin.owner_set(room, query)

    # ---- rooms ------------------------------------------------------------------------------

    async def public_rooms(self) -> list[dict[str, Any]]:
        """The public rooms; in cluster mode with the stored ones other nodes serve (their
        occupants counted in the Tracker's cluster-wide view of the room topic)."""
        out = []
        for local, config in await disco.stored_elsewhere(self.service):
            jid = f"{local}@{self.domain}"
            out.append(
                {
                    "jid": jid,
                    "name": config.name or local,
                    "occupants": len(self.service.tracker.keys(room_topic(jid))),
                    "members_only": config.members_only,
                    "password": config.password_protected,
                }
            )
        for local in sorted(self.service.rooms):
            room = self.service.rooms[local]
            if room.config.public and not room.locked and not room.destroyed:
                out.append(
                    {
                        "jid": room.jid,
                        "name": room.config.name or local,
                        "occupants": len(room.occupants),
                        "members_only": room.config.members_only,
                        "password": room.config.password_protected,
                    }
                )
        return sorted(out, key=lambda r: r["jid"])

    async def create(
        self, creator: JID, name: str, local: str | None, config: dict[str, Any]
    ) -> Room:
        """A new room owned by `creator`'s account, configured at once (an instant room: not
        locked, since the configuration comes with the request)."""
        await self.service.ready()
        if local is None:
            local = self._free_local(name)
        try:  # cluster mode: the new room is served here (a stored one is loaded: conflict)
            await self._served_here(f"{local}@{self.domain}")
        except MucError as exc:
            if exc.condition != "service-unavailable":
                raise
            raise MucError("conflict", "a room of that name exists") from None
        if await self.service.settled_room(local) is not None:
            raise MucError("conflict", "a room of that name exists")
        room = self.service.create(local, creator)
        room.locked = False
        apply_config(room, {"name": name, **config})
        members = config.get("members") or []
        for member in members:
            room.affiliations.setdefault(str(JID.parse(member).bare), "member")
        await room.save()
        await self.service.lifecycle(room, "room-created")
        return room

    async def configure(self, room_jid: str, real: str, config: dict[str, Any]) -> None:
        room = self.room(room_jid)
        if room.affiliation(str(JID.parse(real).bare)) != "owner":
            raise MucError("forbidden", "only owners may configure a room")
        apply_config(room, config)
        room.locked = False  # configured: open to others (§10.1.3, as with the owner's form)
        await room.save()

    def _free_local(self, name: str) -> str:
        base = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "room"
        base, local, n = base[:40], base[:40], 1
        while local in self.service.rooms:
            n += 1
            local = f"{base}-{n}"
        return local


def _local(room_jid: str) -> str:
    try:
        return JID.parse(room_jid).local or ""
    except JIDError:
        raise MucError("jid-malformed", "not a room JID") from None


def apply_config(room: Room, config: dict[str, Any]) -> None:
    """The JSON config keys (docs/channels.md) onto the room's configuration."""
    c = room.config
    for key, kind in CONFIG_KEYS.items():
        if key in config and not isinstance(config[key], kind):
            raise MucError("bad-request", f"config {key} must be a {kind.__name__}")
    if "whois" in config and config["whois"] not in ("moderators", "anyone"):
        raise MucError("bad-request", "whois is moderators or anyone")
    for key in ("name", "description", "members_only", "moderated", "whois"):
        if key in config:
            setattr(c, key, config[key])
    if "members_only" in config and "whois" not in config and c.members_only:
        c.whois = "anyone"
    c.public = config.get(
        "public", c.public if "members_only" not in config else not c.members_only
    )
    c.persistent = config.get("persistent", True)
    if "password" in config:
        c.password = config["password"]
        c.password_protected = bool(config["password"])


def _counts(stanza: Element) -> bool:
    return (
        get_child(stanza, ns.CLIENT, "body") is not None
        and get_child(stanza, ns.RETRACT, "retract") is None
        and get_child(stanza, ns.CORRECT, "replace") is None
    )


def stanza_id_of(stanza: Element, room_jid: str) -> str | None:
    for sid in stanza.iterchildren(f"{{{ns.SID}}}stanza-id"):
        if sid.get("by") == room_jid:
            return sid.get("id")
    return None
