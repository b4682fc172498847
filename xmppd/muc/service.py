"""The MUC service on its own domain: rooms, their storage, limits, and the stanza entry points
(XEP-0045 §6 discovery, §7 occupant use cases; admin and owner iqs are in admin.py). The entry
points parse and render; what acts on a room is `self.api` (api.py), which the JSON channels
call too.

Persistent rooms are stored in the "muc_rooms" keyval store (key: the room's local part) and
loaded on the first stanza after start; their recent history comes back from the "muc" archive.
Each creation of a room has an id of its own, and its archive rows are kept under it
(`Room.archive_owner`): a room destroyed (`destroy_room`) takes its stored document and archive
with it, and whatever a crash left behind belongs to no live room, is never served, and is
deleted at the next start.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from pubsub.topics import session_topic

from ..events import RoomEvent
from ..host import Host
from ..protocol import namespaces as ns
from ..protocol.jid import JID
from ..protocol.stanza import (
    Element,
    error_reply,
    first_child,
    get_child,
    local_name,
    namespace_of,
)
from ..ratelimit import TokenBucket
from ..roles import roles_of
from ..router import DELIVERY, StanzaEvent
from ..storage.base import StorageError, Write
from . import admin, archive, disco, voice
from .api import RoomApi
from .component import Component
from .config import RoomConfig
from .forward import IqForwarder
from .history import parse_request
from .lease import FencedStores
from .placement import RoomPlacement
from .room import MucError, Occupant, Room, View, destroy_notice

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..cluster import Cluster
    from ..module import Module


class MucService:
    def __init__(self, module: Module, component: Component) -> None:
        options = module.options
        self.module = module
        self.host = module.host
        self.component = component
        self.domain = component.domain
        self.pubsub = component.pubsub
        self.tracker = component.tracker
        self.log = module.log
        self.name: str = options["name"]
        self.creation: str = options["creation"]
        self.max_rooms_per_user: int = options["max_rooms_per_user"]
        self.max_occupants: int = options["max_occupants"]
        self.max_history: int = options["max_history"]
        self.message_rate: float = options["message_rate"]
        self.message_burst: int = options["message_burst"]
        self.lock_new_rooms: bool = options["lock_new_rooms"]
        self.max_affiliations: int = options["max_affiliations"]
        self.hide_deleted_accounts_history: bool = options["hide_deleted_accounts_history"]
        self.list_occupants: bool = options["list_occupants"]
        self.max_page_size: int = options["archive_max_page_size"]
        self.page_size: int = min(options["archive_page_size"], self.max_page_size)
        self.store = module.open_keyval("muc_rooms")
        self.archive = module.open_archive("muc")
        self.rooms: dict[str, Room] = {}
        self._loaded: trio.Event | None = None
        self.forwarder = IqForwarder(self)
        self.roles = roles_of(module.host)  # admins own every room; limited create none
        self.api = RoomApi(self)  # what both front-ends call: these stanza handlers and JSON
        self.placement: RoomPlacement | None = None  # cluster mode: rooms served by one node

    def join_cluster(self, cluster: Cluster, lease: float) -> None:
        """Cluster mode (placement.py): each room is served by the node holding its lease;
        every write about a room is fenced by that lease."""
        self.placement = RoomPlacement(self, cluster, lease)
        stores = FencedStores(
            self.host.storage, "muc_rooms", "muc", self.domain, self.placement.fence
        )
        self.store, self.archive = stores.keyval, stores.archive
        self.placement.install()

    # ---- rooms and storage -----------------------------------------------------------------

    async def ready(self) -> None:
        """Load the persistent rooms once, before the first stanza is handled."""
        if self._loaded is None:
            self._loaded = trio.Event()
            try:
                # Cluster mode: each room is loaded by the node that takes its lease.
                for local in [] if self.placement else await self.store.users():
                    doc = await self.store.get(local)
                    if doc is not None:
                        await self._restore(local, doc)
                if self.placement is None:  # other nodes' rooms are not ours to judge
                    await self._purge_orphans()
            finally:
                self._loaded.set()
        await self._loaded.wait()

    async def adopt(self, local: str) -> None:
        """Cluster mode: this node now serves the room; its state comes from storage
        (nothing for a temporary room: the first join creates it afresh)."""
        self.forget(local)
        doc = await self.store.get(local)
        if doc is not None:
            await self._restore(local, doc)

    def forget(self, local: str) -> None:
        """Cluster mode: another node serves the room now; drop it here without a word."""
        room = self.rooms.pop(local, None)
        if room is None:
            return
        for seat in list(room.seats.values()):
            self.pubsub.unsubscribe(room.topic, seat)
            self.tracker.untrack(seat, room.topic, seat.occupant.nick)
        room.seats.clear()
        room.occupants.clear()

    async def _restore(self, local: str, doc: dict) -> None:
        config = RoomConfig.from_doc(doc.get("config", {}))
        jid = f"{local}@{self.domain}"
        room = Room(self, jid, config, doc.get("creator", ""), doc.get("creation", ""))
        room.affiliations = dict(doc.get("affiliations", {}))
        room.subject, room.subject_from = doc.get("subject", ""), doc.get("subject_from", "")
        if config.history_length:
            page = await self.archive.query(
                room.archive_owner, limit=config.history_length, backward=True
            )
            room.history.load([(i.timestamp, i.stanza_xml) for i in page.items])
        self.rooms[local] = room

    async def _purge_orphans(self) -> None:
        """Delete archives no live room owns: temporary rooms the last run ended with, and
        destructions a crash or a storage failure left unfinished. (Rooms live in one
        process; a cluster-wide room registry must keep this in step.)"""
        live = {room.archive_owner for room in self.rooms.values()}
        try:
            orphans = [owner for owner in await self.archive.owners() if owner not in live]
            for owner in orphans:
                await self.archive.delete_owner(owner)
        except StorageError as exc:
            self.log.error("could not delete the archives of vanished rooms: %s", exc)
            return
        if orphans:
            self.log.info("deleted the archives of %d vanished rooms", len(orphans))

    async def save(self, room: Room) -> None:
        if room.config.persistent and self.rooms.get(room.local) is room and not room.destroyed:
            doc = {
                "config": room.config.to_doc(),
                "affiliations": room.affiliations,
                "subject": room.subject,
                "subject_from": room.subject_from,
                "creator": room.creator,
                "creation": room.creation,
            }
            await self.store.set(room.local, doc)

    def room(self, local: str) -> Room | None:
        """The room of that name, unless it is being destroyed."""
        room = self.rooms.get(local)
        return None if room is None or room.destroyed else room

    async def settled_room(self, local: str) -> Room | None:
        """The room of that name, once a destruction of it in progress has finished."""
        room = self.rooms.get(local)
        while room is not None and room.gone is not None:
            await room.gone.wait()
            room = self.rooms.get(local)
        return room

    async def destroy_room(
        self,
        room: Room | str,
        *,
        reason: str | None = None,
        venue: str | None = None,
        password: str | None = None,
    ) -> bool:
        """Destroy a room (its owner, an admin, or the last occupant of a temporary room
        leaving): occupants leave with a §10.9 `<destroy/>` (alternate `venue`, `reason`), and
        its stored config, affiliations, subject, history and archive are deleted durably
        before a room of that name can be created again (a join for the name waits).
        `room` may be a room JID or local part; False when there is no such room.
        StorageError: the room stays when its document could not be deleted."""
        if isinstance(room, str):
            found = self.room(room.partition("@")[0] if "@" in room else room)
            if found is None:
                return False
            room = found
        if room.gone is not None:  # a destruction is under way: wait for its end
            await room.gone.wait()
            return True
        gone = room.gone = trio.Event()  # no more saves nor archiving from here on
        try:
            await self.store.set(room.local, None)  # first: once durable, it cannot come back
        except BaseException:
            room.gone = None
            gone.set()
            raise
        try:
            notice = destroy_notice(reason, venue, password)
            room.affiliations.clear()  # everyone leaves with affiliation none (§10.9)
            for occupant in list(room.occupants.values()):
                await room.remove(occupant, [], [notice])
            room.history.resize(0)
            await self.archive.delete_owner(room.archive_owner)
        finally:  # on a storage failure the rows stay unserved until the next start purges them
            if self.rooms.get(room.local) is room:
                del self.rooms[room.local]
            gone.set()
            await self.notify("room-destroyed", RoomEvent(room.jid))
            if room.announced:
                await self.lifecycle(room, "room-destroyed")
        return True

    async def lifecycle(self, room: Room, kind: str) -> None:
        """`room-lifecycle` (for xmppd/hooks/): (room JID, "room-created" or "room-destroyed",
        the creator's bare JID), once per room on the service's own bus."""
        room.announced = kind == "room-created"  # a failed first join destroys it unreported
        events = self.component.events
        if events.has_handlers("room-lifecycle"):
            try:
                await events.fire("room-lifecycle", (room.jid, kind, room.creator))
            except Exception:  # logged by the bus; the room is made (or gone) all the same
                self.log.warning("a room-lifecycle handler failed for %s", room.jid)

    async def drop_account(self, bare: str) -> None:
        """A deleted account loses its affiliations (owner, admin, member, outcast) and its
        name as creator in every room; the rooms stay (their history follows the
        `hide_deleted_accounts_history` option)."""
        await self.ready()
        for room in list(self.rooms.values()):
            if bare in room.affiliations or room.creator == bare:
                room.affiliations.pop(bare, None)
                if room.creator == bare:
                    room.creator = ""
                await self.save(room)

    async def room_emptied(self, room: Room) -> None:
        """Temporary rooms (and rooms never configured) vanish with their last occupant."""
        if room.destroyed or room.occupants:
            return
        if not room.config.persistent or room.locked:
            await self.destroy_room(room)

    def may_create(self, bare: JID) -> None:
        """Creation policy and the rooms-per-user limit; MucError when refused."""
        who = str(bare)
        if self.roles.is_limited(who):
            raise MucError("not-allowed", "this account may join rooms but not create them")
        if self.creation == "local" and not isinstance(self.host.hosts.get(bare.domain), Host):
            raise MucError("not-allowed", "only users of this server may create rooms")
        owned = sum(1 for room in self.rooms.values() if room.creator == who)
        if owned >= self.max_rooms_per_user:
            raise MucError("policy-violation", f"at most {self.max_rooms_per_user} rooms per user")

    def create(self, local: str, creator: JID, *, check: bool = True) -> Room:
        """A new room; `check=False` (the admin API) skips the creation policy and limits."""
        if check:
            self.may_create(creator.bare)
        config = RoomConfig(history_length=min(20, self.max_history))
        jid, creation = f"{local}@{self.domain}", secrets.token_hex(8)
        room = Room(self, jid, config, str(creator.bare), creation)
        room.affiliations[str(creator.bare)] = "owner"
        room.locked = self.lock_new_rooms
        room.announced = False  # until made (the callers report it)
        self.rooms[local] = room
        return room

    def check_rate(self, occupant: Occupant) -> None:
        """Refuse past the occupant's rate with resource-constraint, type wait (RFC 6120
        §8.3.3.18), naming the limit so the sender knows how fast it may go."""
        if not self.allow_message(occupant):
            limit = f"{self.message_burst} messages in a burst or {self.message_rate:g} per second"
            raise MucError("resource-constraint", f"more than {limit}; slow down", "wait")

    def allow_message(self, occupant: Occupant) -> bool:
        """Token bucket per occupant: `message_rate` per second, bursts of `message_burst`."""
        now = time.monotonic()
        if occupant.rate is None:
            occupant.rate = TokenBucket(self.message_rate, self.message_burst, now, "room_messages")
        return occupant.rate.allow(now)

    async def hidden_authors(self, authors: set[str]) -> frozenset[str]:
        """Authors whose messages are not served any more (deleted accounts, by option)."""
        return await archive.hidden_authors(self, authors)

    async def archive_message(
        self, room: Room, stanza: Element, stanza_id: str, also: Sequence[Write] = ()
    ) -> None:
        """`also`: writes of other stores (hook outbox rows) durable with this one."""
        if room.destroyed:  # its archive is being deleted
            raise MucError("item-not-found", "the room is being destroyed")
        xml = etree.tostring(stanza, encoding="unicode")
        await self.archive.append(
            room.archive_owner,
            with_jid=stanza.get("from") or room.jid,
            stanza_xml=xml,
            stanza_id=stanza_id,
            also=also,
        )

    async def notify(self, name: str, event: RoomEvent) -> None:
        """Tell every host's modules (unread counts) what happened in a room (`room-*` events,
        docs/architecture.md); their failures never undo what the room did."""
        for host in list(self.host.hosts.values()):
            if host.events.has_handlers(name):
                try:
                    await host.events.fire(name, event)
                except Exception:  # logged by the bus
                    self.log.warning("a %s handler failed for %s", name, event.room)

    # ---- sending ---------------------------------------------------------------------------

    async def send(self, stanza: Element) -> None:
        await self.component.route(None, stanza)

    def deliver_to_full(self, real: str, stanza: Element) -> bool:
        if self.pubsub.local_broadcast(session_topic(real), stanza) > 0:
            return True
        host = self.host.hosts.get(real.partition("@")[2].partition("/")[0])
        return host is not None and host.deliver_to_full(real, stanza)  # on another node

    async def send_presence(self, stanza: Element, real: str) -> None:
        """A room presence for the session `real`, cheaper than `send`: on a host of ours,
        `presence/full` does nothing to an available or unavailable presence from a room but
        the recipient's block list (XEP-0191) and the delivery, so those run here directly
        (a join sends ~2n presences). Anything else goes through the router."""
        bare = real.partition("/")[0]
        host = self.component.hosts.get(bare.partition("@")[2])
        if host is None or stanza.get("type") not in (None, "unavailable"):
            await self.send(stanza)
        elif not await _blocked(host, bare, stanza.get("from", "")):
            host.deliver_to_full(real, stanza)

    async def send_view(self, view: View, real: str, frm: str) -> None:
        """`send_presence` of an available presence `view.to(real)`; a local session that
        would write it as it is gets the bytes without the element ever being copied."""
        bare, _, resource = real.partition("/")
        host = self.component.hosts.get(bare.partition("@")[2])
        if host is None:
            await self.send(view.to(real))
        elif not await _blocked(host, bare, frm):
            session = host.resources_of(bare).get(resource)
            write = getattr(session, "write_presence_bytes", None)  # JSON channels have none
            if write is None or not write(view.wire_to(real)):
                host.deliver_to_full(real, view.to(real))

    def corked(self, real: str) -> contextlib.AbstractContextManager[None]:
        """While open, presence for the local session `real` is gathered into one write."""
        bare, _, resource = real.partition("/")
        host = self.component.hosts.get(bare.partition("@")[2])
        session = host.resources_of(bare).get(resource) if host is not None else None
        corked = getattr(session, "corked", None)  # a JSON channel session has none
        return corked() if corked is not None else contextlib.nullcontext()

    # ---- entry points ----------------------------------------------------------------------

    def install(self) -> None:
        events = self.component.events
        # Fired by messages.py and room.py for xmppd/hooks/ (docs/architecture.md).
        events.declare(
            "room-archiving", "room-posted", "room-command", "room-presence", "room-lifecycle"
        )
        events.hook("presence/full", self.on_occupant_presence, DELIVERY)
        events.hook("presence/bare", self.on_room_presence, DELIVERY)
        events.hook("presence/host", _ignore, DELIVERY)
        events.hook("message/bare", self.on_room_message, DELIVERY)
        events.hook("message/full", self.on_private_message, DELIVERY)
        events.hook("message/host", self.on_service_message, DELIVERY)
        events.hook("iq/host", self.on_service_iq, DELIVERY)
        events.hook("iq/bare", self.on_room_iq, DELIVERY)
        events.hook("iq/full", self.on_occupant_iq, DELIVERY)

    async def on_occupant_presence(self, event: StanzaEvent) -> bool:
        await self.ready()
        to, real, stanza = event.to, event.sender, event.stanza
        if to is None or real is None or real.resource is None:
            return True
        room_jid, nick, type_ = str(to.bare), to.resource or "", stanza.get("type")
        try:
            if type_ is None:
                x = get_child(stanza, ns.MUC, "x")
                password = get_child(x, ns.MUC, "password") if x is not None else None
                secret = None if password is None else (password.text or "")
                history = parse_request(x)
                await self.api.presence(
                    room_jid, real, nick, stanza, password=secret, history=history
                )
            elif type_ in ("unavailable", "error"):
                status = get_child(stanza, ns.CLIENT, "status")
                code = "333" if type_ == "error" else None
                await self.api.leave(room_jid, str(real), nick=nick, status=status, code=code)
        except MucError as exc:
            await self._error(stanza, exc)
        return True

    async def on_room_presence(self, event: StanzaEvent) -> bool:
        if event.stanza.get("type") is None:  # §7.2.1: joining needs a nickname
            await event.reply_error("jid-malformed", "a room nickname is required")
        return True

    async def on_room_message(self, event: StanzaEvent) -> bool:
        await self.ready()
        assert event.to is not None
        stanza, type_ = event.stanza, event.stanza.get("type", "normal")
        if type_ == "error" or event.sender is None:
            return True
        room_jid, real = str(event.to.bare), str(event.sender)
        try:
            x = get_child(stanza, ns.MUC_USER, "x")
            form = get_child(stanza, ns.DATA_FORMS, "x")
            if type_ == "groupchat":
                await self.api.post(room_jid, real, stanza)
            elif form is not None and voice.is_request(form):
                await self.api.voice_request(room_jid, real, form)
            elif x is not None:
                await self.api.mediated(room_jid, real, x)
            else:
                self.api.open_room(room_jid)
                raise MucError("bad-request", "send groupchat messages to the room")
        except MucError as exc:
            await self._error(stanza, exc)
        return True

    async def on_private_message(self, event: StanzaEvent) -> bool:
        await self.ready()
        assert event.to is not None
        stanza = event.stanza
        if stanza.get("type") == "error" or event.sender is None:
            return True
        try:
            room_jid, nick = str(event.to.bare), event.to.resource or ""
            await self.api.private(room_jid, str(event.sender), nick, stanza)
        except MucError as exc:
            await self._error(stanza, exc)
        return True

    async def on_service_message(self, event: StanzaEvent) -> bool:
        if event.stanza.get("type") not in ("error", "groupchat", "headline"):
            await event.reply_error("service-unavailable")
        return True

    async def on_service_iq(self, event: StanzaEvent) -> bool:
        await self.ready()
        child = _request(event)
        if child is None:
            return True
        key = (event.stanza.get("type"), namespace_key(child))
        if key == ("get", (ns.DISCO_INFO, "query")):
            return await event.reply(disco.service_info(self, event.stanza))
        if key == ("get", (ns.DISCO_ITEMS, "query")):
            return await event.reply(await disco.service_items(self, event.stanza))
        if key == ("get", (ns.PING, "ping")):
            return await event.reply(disco.result(event.stanza))
        return await event.reply_error("service-unavailable")

    async def on_room_iq(self, event: StanzaEvent) -> bool:
        await self.ready()
        child = _request(event)
        if child is None or event.to is None or event.sender is None:
            return True
        room = self.room(event.to.local or "")
        if room is None:
            return await event.reply_error("item-not-found", "no such room")
        try:
            answer = await admin.handle(room, event.sender, event.stanza, child)
        except MucError as exc:
            await self._error(event.stanza, exc)
            return True
        return await event.reply(answer)

    async def on_occupant_iq(self, event: StanzaEvent) -> bool:
        """XEP-0410 self-ping is answered here; other iqs are forwarded to the occupant."""
        await self.ready()
        stanza, to, sender = event.stanza, event.to, event.sender
        if to is None or sender is None:
            return True
        if stanza.get("type") in ("result", "error"):
            await self.forwarder.answer(str(sender), stanza)
            return True
        child = _request(event)
        if child is None:
            return True
        room = self.room(to.local or "")
        occupant = room.occupant_of(str(sender)) if room is not None else None
        if namespace_key(child) == (ns.PING, "ping") and (
            occupant is None or occupant.nick == to.resource
        ):
            if occupant is None:
                return await event.reply_error("not-acceptable", "you are not joined as that nick")
            return await event.reply(disco.result(stanza))
        try:
            if room is None:
                raise MucError("item-not-found", "no such room")
            await self.forwarder.request(room, str(sender), to.resource or "", stanza)
        except MucError as exc:
            await self._error(stanza, exc)
        return True

    async def _error(self, stanza: Element, exc: MucError) -> None:
        if stanza.get("type") != "error":
            await self.send(error_reply(stanza, exc.condition, exc.text, exc.type))

    # ---- Python API for other transports (JSON channels) -----------------------------------

    async def join(self, room_jid: str, real: JID, nick: str, **kwargs: Any) -> Occupant:
        """Enter (or create) a room without XML transport; MucError on refusal."""
        return await self.api.enter(room_jid, real, nick, **kwargs)


async def _blocked(host: Host, bare: str, frm: str) -> bool:
    """Does the account `bare` block presence from `frm` (XEP-0191)?"""
    blocking = host.services.get("blocking")
    if blocking is None:
        return False
    await blocking.ready()
    return blocking.is_blocked(bare, frm)


async def _ignore(event: StanzaEvent) -> bool:
    return True


def _request(event: StanzaEvent) -> Element | None:
    """The payload of an iq get/set; None for results and errors (nothing waits for them)."""
    if event.stanza.get("type") not in ("get", "set"):
        return None
    return first_child(event.stanza)


def namespace_key(child: Element) -> tuple[str, str]:
    return namespace_of(child), local_name(child)
