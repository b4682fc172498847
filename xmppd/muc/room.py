"""One room: occupants, roles and affiliations, presence broadcast (XEP-0045 §7, §9).

Each joined session (an occupant's real full JID) is a `Seat`: it is tracked in the pubsub
Tracker on the `room:<room JID>` topic (key = nick) and subscribed to that topic. A groupchat
message is broadcast once on the topic and each seat renders it for its session (to= its real
JID). Presence differs per recipient (status 110 for oneself, real JIDs for moderators only in
semi-anonymous rooms), so it is built per recipient, from a template each occupant keeps per
view (item attributes), rendered once: a join sends n presences and is broadcast to n seats, so
1,000 joins cost ~10^6 presences. They go straight to the recipient's session (the service's
`send_presence`), and the joiner's n arrive in one write (`corked`).

The public methods (`join`, `leave`, `change_nick`, `update_presence`) take real JIDs and raise
`MucError`: they are the Python API the XMPP entry points and other transports share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from lxml import etree

from pubsub.topics import room_topic

from ..events import RoomEvent
from ..protocol import namespaces as ns
from ..protocol.jid import JID
from ..protocol.stanza import Element, copy, element, local_name, make, namespace_of, sub
from .config import RoomConfig
from .history import History, Request

if TYPE_CHECKING:
    from ..ratelimit import TokenBucket
    from .service import MucService

ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
AFF_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
# Status codes of an occupant's removal (XEP-0045 §8.2, §9.1, §9.4): what xmppd/hooks/ report.
REMOVALS = {"307": "kick", "301": "ban", "321": "affiliation", "322": "members-only"}


class MucError(Exception):
    """A refusal to send back as a stanza error (condition per RFC 6120 §8.3.3)."""

    def __init__(self, condition: str, text: str | None = None, type_: str | None = None):
        super().__init__(text or condition)
        self.condition, self.text, self.type = condition, text, type_


class RoomMessage:
    """What travels on the room topic: a message to render for each seat."""

    __slots__ = ("stanza",)

    def __init__(self, stanza: Element) -> None:
        self.stanza = stanza


class Seat:
    """One session of an occupant; the room-topic subscriber delivering to the real JID."""

    __slots__ = ("room", "real", "occupant", "__weakref__")

    def __init__(self, room: Room, real: str, occupant: Occupant) -> None:
        self.room, self.real, self.occupant = room, real, occupant

    def deliver(self, topic: str, message: object) -> None:
        if isinstance(message, RoomMessage):  # the Tracker's diffs share the topic
            out = copy(message.stanza)
            out.set("to", self.real)
            self.room.service.deliver_to_full(self.real, out)


class View:
    """An occupant's presence for one view (item attributes), and its bytes around to=:
    what goes to n recipients is copied, or serialized, once."""

    __slots__ = ("element", "head", "tail")

    def __init__(self, element: Element) -> None:
        self.element = element
        wire = etree.tostring(element)
        end = wire.index(b">")  # the start tag ends here: values escape '>'
        if wire[end - 1 : end] == b"/":
            end -= 1
        self.head, self.tail = wire[:end], wire[end:]

    def to(self, real: str) -> Element:
        out = copy(self.element)
        out.set("to", real)
        return out

    def wire_to(self, real: str) -> bytes:
        """Exactly `etree.tostring(self.to(real))`, without the copy."""
        to = escape_attribute(real).encode("ascii", "xmlcharrefreplace")  # as lxml writes it
        return b"".join((self.head, b' to="', to, b'"', self.tail))


def escape_attribute(value: str) -> str:
    """As lxml escapes an attribute value between double quotes."""
    for raw, escaped in _ATTRIBUTE_ESCAPES:
        if raw in value:
            value = value.replace(raw, escaped)
    return value


_ATTRIBUTE_ESCAPES = (
    ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
    ("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;"),
)  # fmt: skip


class Occupant:
    __slots__ = ("nick", "bare", "role", "seats", "presence", "rate", "rendered")

    def __init__(self, nick: str, bare: str, role: str) -> None:
        self.nick, self.bare, self.role = nick, bare, role
        self.seats: dict[str, Seat] = {}
        self.presence: Element = make("presence")
        # (the presence they were made from, {(nick, item attributes): its View})
        self.rendered: tuple[Element | None, dict[tuple, View]] = (None, {})
        self.rate: TokenBucket | None = None  # made at the first message (service.allow_message)


class Room:
    def __init__(
        self, service: MucService, jid: str, config: RoomConfig, creator: str, creation: str = ""
    ) -> None:
        self.service = service
        self.jid = jid
        self.local = jid.partition("@")[0]
        self.topic = room_topic(jid)
        self.config = config
        self.creator = creator
        self.affiliations: dict[str, str] = {}  # bare JID -> owner|admin|member|outcast
        self.occupants: dict[str, Occupant] = {}  # by nick
        self.seats: dict[str, Seat] = {}  # by real full JID
        self.subject = ""
        self.subject_from = ""  # nick of who set it
        self.locked = False  # created, not configured yet (§10.1.1)
        self.history = History(jid, config.history_length)
        # Which creation of this name: archive rows are kept under it, so a later room of the
        # same name never serves them ("": a room stored before creations were recorded).
        self.creation = creation
        self.gone: trio.Event | None = None  # set while being destroyed; fired when done
        self.announced = True  # False while its creation is not reported yet (xmppd/hooks/)

    @property
    def archive_owner(self) -> str:
        """The owner of this creation's archive rows (a bare JID never holds a '/')."""
        return f"{self.jid}/{self.creation}" if self.creation else self.jid

    @property
    def destroyed(self) -> bool:
        return self.gone is not None

    # ---- state -----------------------------------------------------------------------------

    def affiliation(self, bare: str) -> str:
        """Service admins (xmppd/roles.py) act as owners of every room (XEP-0045 §5.2),
        without being listed among its owners."""
        found = self.affiliations.get(bare, "none")
        if found != "owner" and self.service.roles.is_admin(bare):
            return "owner"
        return found

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        if self.config.moderated and affiliation == "none":
            return "visitor"
        return "participant"

    def occupant_of(self, real: str) -> Occupant | None:
        seat = self.seats.get(real)
        return seat.occupant if seat is not None else None

    def occupant_jid(self, occupant: Occupant) -> str:
        return f"{self.jid}/{occupant.nick}"

    def sees_jids(self, recipient: Occupant) -> bool:
        return self.config.non_anonymous or recipient.role == "moderator"

    def max_users(self) -> int:
        return min(self.config.max_users or self.service.max_occupants, self.service.max_occupants)

    def check_affiliation_room(self) -> None:
        if len(self.affiliations) >= self.service.max_affiliations:
            raise MucError("policy-violation", "the room's affiliation lists are full")

    async def save(self) -> None:
        await self.service.save(self)

    # ---- entering and leaving --------------------------------------------------------------

    async def join(
        self,
        real: JID,
        nick: str,
        presence: Element | None = None,
        *,
        password: str | None = None,
        history: Request | None = None,
        created: bool = False,
    ) -> Occupant:
        """Enter the room as `nick` (§7.2); MucError says why not."""
        bare, full = str(real.bare), str(real)
        if full in self.seats:
            raise MucError("not-acceptable", "this session is in the room already")
        affiliation = self.affiliation(bare)
        existing = self.occupants.get(nick)
        self._check_entry(existing, bare, affiliation, password)
        if existing is None:
            occupant = Occupant(nick, bare, self.default_role(affiliation))
            self.occupants[nick] = occupant
        else:
            occupant = existing  # another session of the same account (multi-session nick)
        if presence is not None:
            occupant.presence = _clean(presence)
        seat = Seat(self, full, occupant)
        occupant.seats[full] = seat
        self.seats[full] = seat
        self.service.pubsub.subscribe(self.topic, seat)
        self.service.tracker.track(seat, self.topic, nick, self._meta(occupant, full))
        await self._welcome(seat, created, history)
        await self.service.notify("room-entered", RoomEvent(self.jid, bare))
        if len(occupant.seats) == 1:
            await self._occupant_event("join", occupant)
        return occupant

    async def _occupant_event(
        self, kind: str, occupant: Occupant, removal: str | None = None
    ) -> None:
        """`room-presence` (for xmppd/hooks/): an occupant came in or went (its first or last
        session), or was removed (`removal`: kick, ban, affiliation, members-only)."""
        events = self.service.component.events
        if events.has_handlers("room-presence"):
            event = (self, kind, occupant.bare, occupant.nick, removal)
            await events.fire("room-presence", event)

    def _check_entry(
        self, existing: Occupant | None, bare: str, affiliation: str, password: str | None
    ) -> None:
        if existing is not None and existing.bare != bare:
            raise MucError("conflict", "that nickname is in use")
        if self.locked and affiliation != "owner":
            raise MucError("item-not-found", "the room is being configured")
        if affiliation == "outcast":
            raise MucError("forbidden", "you are banned from this room")
        if self.config.members_only and affiliation == "none":
            raise MucError("registration-required", "the room is members-only")
        if (
            self.config.password_protected
            and affiliation != "owner"
            and password != self.config.password
        ):
            raise MucError("not-authorized", "a password is required")
        full = existing is None and len(self.occupants) >= self.max_users()
        if full and affiliation not in ("owner", "admin"):
            raise MucError("service-unavailable", "the room is full", "wait")

    async def _welcome(self, seat: Seat, created: bool, history: Request | None) -> None:
        """§7.2.3: others' presence, then ours to everyone, then history, then the subject."""
        occupant, real = seat.occupant, seat.real
        with self.service.corked(real):
            for other in list(self.occupants.values()):
                if other is not occupant:
                    await self.send_view(other, occupant, real)
        if len(occupant.seats) == 1:
            await self.broadcast_presence(occupant, skip_self=True)
        codes = ["100"] if self.config.non_anonymous else []
        if created:
            codes.append("201")
        await self.broadcast_presence(occupant, self_codes=codes, only_self=seat.real)
        if not created:
            hidden = await self.service.hidden_authors({e.author for e in self.history.entries})
            for entry in self.history.select(history or Request(), hidden=hidden):
                self.service.deliver_to_full(seat.real, self.history.render(entry, seat.real))
        await self.service.send(self.subject_message(seat.real))

    async def leave(
        self, real: str, status: Element | None = None, code: str | None = None
    ) -> None:
        """The session leaves (§7.14); the occupant goes when its last session does."""
        seat = self.seats.pop(real, None)
        if seat is None:
            return
        occupant = seat.occupant
        self._unseat(seat)
        codes = [code] if code else []
        own = self.unavailable_for(occupant, occupant, real, ["110", *codes], status=status)
        await self.service.send(own)
        if not occupant.seats:  # other sessions of the occupant stay: only this one left
            self.occupants.pop(occupant.nick, None)
            await self.broadcast_unavailable(occupant, codes, status=status, skip=real)
            await self._occupant_event("leave", occupant)
        await self.service.room_emptied(self)

    def _unseat(self, seat: Seat) -> None:
        seat.occupant.seats.pop(seat.real, None)
        self.service.pubsub.unsubscribe(self.topic, seat)
        self.service.tracker.untrack(seat, self.topic, seat.occupant.nick)

    async def remove(
        self, occupant: Occupant, codes: list[str], item_extra: list[Element] | None = None
    ) -> None:
        """Take every session of an occupant out (kick §8.2, ban §9.1, 321/322)."""
        for real, seat in list(occupant.seats.items()):
            self.seats.pop(real, None)
            self._unseat(seat)
            out = self.unavailable_for(occupant, occupant, real, ["110", *codes], item_extra)
            await self.service.send(out)
        self.occupants.pop(occupant.nick, None)
        await self.broadcast_unavailable(occupant, codes, item_extra)
        removal = next((REMOVALS[c] for c in codes if c in REMOVALS), None)
        if removal is not None:  # not when the room is destroyed: that is its own event
            await self._occupant_event("leave", occupant, removal)
        await self.service.room_emptied(self)

    async def change_nick(self, real: str, nick: str, presence: Element) -> None:
        """§7.6: unavailable with 303 from the old nick, then available from the new one."""
        occupant = self.occupant_of(real)
        assert occupant is not None
        other = self.occupants.get(nick)
        if other is not None and other.bare != occupant.bare:
            raise MucError("conflict", "that nickname is in use")
        if other is not None:
            raise MucError("not-acceptable", "leave with this session and join under that nick")
        old = occupant.nick
        await self.broadcast_unavailable(occupant, ["303"], new_nick=nick, to_self=True)
        del self.occupants[old]
        occupant.nick = nick
        occupant.presence = _clean(presence)
        self.occupants[nick] = occupant
        for seat in occupant.seats.values():
            self.service.tracker.untrack(seat, self.topic, old)
            self.service.tracker.track(seat, self.topic, nick, self._meta(occupant, seat.real))
        await self.broadcast_presence(occupant)

    async def update_presence(self, real: str, presence: Element) -> None:
        """A status change of an occupant (§7.7): to everyone."""
        occupant = self.occupant_of(real)
        assert occupant is not None
        occupant.presence = _clean(presence)
        await self.broadcast_presence(occupant)

    async def set_role(self, occupant: Occupant, role: str) -> None:
        occupant.role = role
        for seat in occupant.seats.values():
            meta = self._meta(occupant, seat.real)
            self.service.tracker.update(seat, self.topic, occupant.nick, meta)
        await self.broadcast_presence(occupant)

    def _meta(self, occupant: Occupant, real: str) -> dict:
        return {
            "jid": real,
            "role": occupant.role,
            "affiliation": self.affiliation(occupant.bare),
        }

    # ---- presence rendering ----------------------------------------------------------------

    def item(
        self, occupant: Occupant, recipient: Occupant, real: str | None = None
    ) -> dict[str, str]:
        attrs = {"affiliation": self.affiliation(occupant.bare), "role": occupant.role}
        if self.sees_jids(recipient):
            attrs["jid"] = real or next(iter(occupant.seats), occupant.bare)
        return attrs

    def presence_for(
        self, occupant: Occupant, recipient: Occupant, to: str, codes: list[str] | None = None
    ) -> Element:
        out = self.view(occupant, recipient).to(to)
        if codes:
            x = out[len(out) - 1]
            for code in codes:
                sub(x, ns.MUC_USER, "status", code=code)
        return out

    def view(self, occupant: Occupant, recipient: Occupant) -> View:
        """The occupant's presence as `recipient` sees it, made once per view."""
        item = self.item(occupant, recipient)
        made_from, views = occupant.rendered
        if made_from is not occupant.presence:  # a new presence replaces the element
            views = {}
            occupant.rendered = (occupant.presence, views)
        key = (occupant.nick, *item.values())
        view = views.get(key)
        if view is None:
            template = copy(occupant.presence)
            template.set("from", self.occupant_jid(occupant))
            sub(sub(template, ns.MUC_USER, "x"), ns.MUC_USER, "item", **item)
            view = views[key] = View(template)
        return view

    async def send_view(self, occupant: Occupant, recipient: Occupant, real: str) -> None:
        view = self.view(occupant, recipient)
        await self.service.send_view(view, real, self.occupant_jid(occupant))

    def unavailable_for(
        self,
        occupant: Occupant,
        recipient: Occupant,
        to: str,
        codes: list[str],
        item_extra: list[Element] | None = None,
        *,
        new_nick: str | None = None,
        status: Element | None = None,
    ) -> Element:
        out = make("presence", {"type": "unavailable", "from": self.occupant_jid(occupant)})
        out.set("to", to)
        if status is not None:
            out.append(copy(status))
        x = sub(out, ns.MUC_USER, "x")
        attrs = self.item(occupant, recipient)
        attrs["role"] = "none"
        if new_nick is not None:
            attrs["role"] = occupant.role
            attrs["nick"] = new_nick
        item = sub(x, ns.MUC_USER, "item", **attrs)
        for extra in item_extra or ():
            (x if local_name(extra) == "destroy" else item).append(copy(extra))
        for code in codes:
            sub(x, ns.MUC_USER, "status", code=code)
        return out

    async def broadcast_presence(
        self,
        occupant: Occupant,
        *,
        self_codes: list[str] | None = None,
        only_self: str | None = None,
        skip_self: bool = False,
    ) -> None:
        """Available presence of `occupant` to every seat (status 110 to its own)."""
        for recipient in list(self.occupants.values()):
            own = recipient is occupant
            if skip_self and own:
                continue
            for real in list(recipient.seats):
                if only_self is not None and real != only_self:
                    continue
                if own:
                    codes = ["110", *(self_codes or [])]
                    out = self.presence_for(occupant, recipient, real, codes)
                    await self.service.send_presence(out, real)
                else:
                    await self.send_view(occupant, recipient, real)

    async def broadcast_unavailable(
        self,
        occupant: Occupant,
        codes: list[str],
        item_extra: list[Element] | None = None,
        *,
        new_nick: str | None = None,
        status: Element | None = None,
        skip: str | None = None,
        to_self: bool = False,
    ) -> None:
        for recipient in list(self.occupants.values()):
            own = recipient is occupant
            if own and not to_self:
                continue
            for real in list(recipient.seats):
                if real == skip:
                    continue
                got = ["110", *codes] if own else codes
                out = self.unavailable_for(
                    occupant, recipient, real, got, item_extra, new_nick=new_nick, status=status
                )
                await self.service.send_presence(out, real)

    def subject_message(self, to: str) -> Element:
        frm = f"{self.jid}/{self.subject_from}" if self.subject_from else self.jid
        out = make("message", {"type": "groupchat", "from": frm, "to": to})
        sub(out, ns.CLIENT, "subject", self.subject)
        return out

    async def status_message(self, codes: list[str]) -> None:
        """A room message carrying status codes only (§10.2.1 config changes)."""
        out = make("message", {"type": "groupchat", "from": self.jid})
        x = sub(out, ns.MUC_USER, "x")
        for code in codes:
            sub(x, ns.MUC_USER, "status", code=code)
        self.service.pubsub.broadcast(self.topic, RoomMessage(out))


def destroy_notice(
    reason: str | None = None, venue: str | None = None, password: str | None = None
) -> Element:
    """The `<destroy/>` occupants of a destroyed room leave with (§10.9)."""
    notice = element(ns.MUC_USER, "destroy")
    if venue:
        notice.set("jid", venue)
    for name, text in (("reason", reason), ("password", password)):
        if text is not None:
            sub(notice, ns.MUC_USER, name, text)
    return notice


def _clean(presence: Element) -> Element:
    """The occupant's presence as others see it: no addresses, no MUC payloads of the client."""
    out = make("presence")
    for child in presence:
        if isinstance(child.tag, str) and namespace_of(child) not in (ns.MUC, ns.MUC_USER):
            out.append(copy(child))
    return out
