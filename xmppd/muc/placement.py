"""MUC across cluster nodes: which node handles a stanza to a room (docs/cluster.md).

Each room is served by the node holding its lease (lease.py). Every stanza to a room JID or
an occupant JID (join, leave, presence, messages, iqs, archive queries) goes through `seam`,
hooked above the service's own handlers: on the owner it runs them as on one node; anywhere
else the whole stanza is forwarded to the owner, which answers and broadcasts as usual (its
output to sessions on other nodes is routed there by the cluster). No room handler knows.

Forwards are acknowledged by the receiving node as soon as they arrive, and run there in
order, one queue per room. One that is not acknowledged (the owner died) is sent again to
whoever holds the lease then, until `2 × ttl` have passed, then the sender gets an error.

Takeover: every node remembers which of its own sessions sit in which room (the presence
they joined with). It polls the leases of those rooms every `ttl / 4`; a lease that expired
is taken (by the first node to ask), and when a room's owner changes each node joins its
sessions again on the new owner, asking for no history (XEP-0045 §7.2.13): the client sees
the room's state again (occupants, its own presence with status 110, the subject), which
every client handles as on any join, and no message twice. The new owner loads the room's
configuration, affiliations, subject and history from PostgreSQL. Occupants that were on a
dead node leave with status 333 once the node is declared down.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from pubsub.topics import room_topic

from ..cluster import ROUTE_TOPIC
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, copy, error_reply, get_child, local_name, make, sub
from ..router import DELIVERY
from ..storage.base import StorageError
from .lease import Database, Fenced, Lease, Leases

if TYPE_CHECKING:
    from pubsub.state import Entry

    from ..cluster import Cluster
    from ..router import StanzaEvent
    from .service import MucService

log = logging.getLogger("xmppd.muc.cluster")

ROOM_EVENTS = (
    "presence/full",
    "presence/bare",
    "message/bare",
    "message/full",
    "iq/bare",
    "iq/full",
)
MAX_HOPS = 3  # a stanza forwarded more often than this (owners changing hands): an error
# Set while the owner's handlers run a stanza (the seam steps aside); hops of a forward.
_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("muc_here", default=False)
_HOPS: contextvars.ContextVar[int] = contextvars.ContextVar("muc_hops", default=0)


class RoomPlacement:
    def __init__(self, service: MucService, cluster: Cluster, ttl: float) -> None:
        self.service, self.cluster, self.ttl = service, cluster, ttl
        self.node = cluster.node
        self.leases = Leases(service.host.storage.db, self.node, ttl)
        self.owned: dict[str, int] = {}  # room JID -> our token
        self._valid: dict[str, float] = {}  # room JID -> monotonic time our lease ends
        self._taken: dict[str, float] = {}  # room JID -> when we took it
        self.known: dict[str, Lease] = {}  # leases of rooms other nodes hold, as last read
        self.served_by: dict[str, tuple[str, int]] = {}  # owner we last used, per room
        # Our sessions in each room: room JID -> real full JID -> the presence they joined with.
        self.seated: dict[str, dict[str, Element]] = {}
        self._locks: dict[str, trio.Lock] = {}  # taking a lease
        self._serial: dict[str, trio.Lock] = {}  # handling a room's stanzas on its owner
        self._inbox: dict[str, deque[tuple[Element, int]]] = {}
        self._departed: dict[str, set[str]] = {}  # room JID -> nicks gone with a dead node
        self._pending: dict[int, tuple[float, float, Element]] = {}  # id -> first, sent, stanza
        self._ids = itertools.count(1)
        self._ready = trio.Event()
        self.ack_timeout = cluster.ack_timeout
        self.takeovers = 0

    def install(self) -> None:
        events, domain = self.service.component.events, self.service.domain
        for name in ROOM_EVENTS:
            events.hook(name, self._seam_for(name), DELIVERY + 50)
        self.cluster.handlers[("muc", domain)] = self._received
        self.cluster.handlers[("muc-ack", domain)] = self._acked
        self.cluster.tracker.listen_peers(self._peer)
        for loop in (self._renew_loop, self._watch_loop, self._expire_loop):
            self.cluster._spawn(loop)

    def fence(self, room: str) -> Database:
        """The database for writes about `room`: checked against our lease in each
        transaction; refused at once when we do not hold it."""
        token = self.owned.get(room)
        if token is None:
            return _Refused(room)
        return self.leases.fenced(room, token)

    # ---- the seam --------------------------------------------------------------------------

    def _seam_for(self, name: str) -> Any:
        async def seam(event: StanzaEvent) -> bool:
            if _HERE.get() or event.to is None or event.to.local is None:
                return False
            room = f"{event.to.local}@{self.service.domain}"
            self._note_seat(room, event)
            await self._dispatch(room, name, event)
            return True

        return seam

    async def _dispatch(self, room: str, name: str, event: StanzaEvent) -> None:
        try:
            owner = await self.owner(room)
        except StorageError as exc:
            log.warning("room %s: no owner (%s)", room, exc)
            await event.reply_error("resource-constraint", "the room is not reachable right now")
            return
        if owner != self.node:
            if _HOPS.get() >= MAX_HOPS:
                await event.reply_error("service-unavailable", "the room is changing hands")
            else:
                self._forward(owner, event.stanza)
            return
        token = _HERE.set(True)
        try:
            # One stanza of a room at a time: its archive is in the order everyone saw.
            async with self._serial.setdefault(room, trio.Lock()):
                await self.service.component.events.fire(name, event)
        except Fenced as exc:  # taken over under our feet: nothing was written
            log.warning("%s", exc)
            self.lost(room)
        else:
            return
        finally:
            _HERE.reset(token)
        hops = _HOPS.set(_HOPS.get() + 1)
        try:
            await self._dispatch(room, name, event)  # to whoever holds it now
        finally:
            _HOPS.reset(hops)

    def _note_seat(self, room: str, event: StanzaEvent) -> None:
        """Remember which of our own sessions sit in the room, to seat them again on a new
        owner. Optimistic: a refused join is forgotten at its next unavailable."""
        if event.kind != "presence" or event.to is None or event.sender is None:
            return
        real, type_ = str(event.sender), event.stanza.get("type")
        if type_ in ("unavailable", "error"):
            seats = self.seated.get(room)
            if seats is not None:
                seats.pop(real, None)
                if not seats:
                    del self.seated[room]
        elif type_ is None and event.to.resource and self._is_local(event.sender):
            self.seated.setdefault(room, {})[real] = copy(event.stanza)

    def _is_local(self, real: JID) -> bool:
        host = self.service.host.hosts.get(real.domain)
        return host is not None and real.resource in host.resources_of(str(real.bare))

    # ---- who owns a room -------------------------------------------------------------------

    async def owner(self, room: str) -> str:
        """The node serving `room`: ours when we hold the lease or could take it."""
        await self._ready.wait()
        owner = self._current(room)
        if owner is None:
            lock = self._locks.setdefault(room, trio.Lock())
            async with lock:
                owner = self._current(room)
                if owner is None:
                    lease = await self.leases.take(room)
                    if lease.owner == self.node:
                        await self._won(room, lease)
                    else:
                        self.known[room] = lease
                    owner = lease.owner
        token = self.owned[room] if owner == self.node else self.known[room].token
        await self._served(room, owner, token)
        return owner

    def _current(self, room: str) -> str | None:
        if room in self.owned:
            if self._valid.get(room, 0.0) > time.monotonic():
                return self.node
            log.warning("lost the lease of room %s (not renewed in time)", room)
            self.lost(room)  # maybe someone else's by now
        lease = self.known.get(room)
        return lease.owner if lease is not None and lease.live else None

    async def _won(self, room: str, lease: Lease) -> None:
        if self.owned.get(room) == lease.token:
            return
        local = room.partition("@")[0]
        self.owned[room], self._valid[room] = lease.token, lease.until
        self._taken[room] = time.monotonic()
        self.known.pop(room, None)
        try:
            await self.service.adopt(local)
        except BaseException:
            self.lost(room)
            raise
        if room in self.served_by or room in self._departed:
            self.takeovers += 1
            log.info("took room %s over (token %d)", room, lease.token)
            # Who sat in it before, as gossiped by the old owner (or as it left with it).
            before = set(self.cluster.tracker.keys(room_topic(room)))
            before |= self._departed.pop(room, set())
            self.cluster._spawn(self._farewell, room, before)

    def lost(self, room: str) -> None:
        """Stop serving `room` (another node may hold it): drop its state, send nothing."""
        self.owned.pop(room, None)
        self._serial.pop(room, None)
        self._valid.pop(room, None)
        self._taken.pop(room, None)
        self.service.forget(room.partition("@")[0])

    async def _served(self, room: str, owner: str, token: int) -> None:
        """Our sessions in the room are seated on its owner: after a change, again."""
        before = self.served_by.get(room)
        self.served_by[room] = (owner, token)
        if before is not None and before != (owner, token) and room in self.seated:
            await self._reseat(room)

    async def _reseat(self, room: str) -> None:
        for real, joined in list(self.seated.get(room, {}).items()):
            host = self.service.host.hosts.get(JID.parse(real).domain)
            if host is None or not self._is_local(JID.parse(real)):
                self.seated.get(room, {}).pop(real, None)
                continue
            presence = copy(joined)
            x = get_child(presence, ns.MUC, "x")
            if x is None:
                x = sub(presence, ns.MUC, "x")
            for old in x.findall(f"{{{ns.MUC}}}history"):
                x.remove(old)
            sub(x, ns.MUC, "history", maxstanzas="0")  # they have seen it: no message twice
            log.info("seating %s in %s again", real, room)
            await self.service.component.route(None, presence)

    # ---- forwarding ------------------------------------------------------------------------

    def _forward(self, owner: str, stanza: Element, first: float | None = None) -> None:
        ident, now = next(self._ids), time.monotonic()
        self._pending[ident] = (first or now, now, stanza)
        self.cluster.tracker.flush()  # who is where reaches the owner before the stanza
        message = ("muc", self.service.domain, stanza, self.node, ident, _HOPS.get() + 1)
        self.cluster.pubsub.direct_broadcast(owner, ROUTE_TOPIC, message)

    def _acked(self, ident: int) -> None:
        self._pending.pop(ident, None)

    def _received(self, stanza: Element, sender: str, ident: int, hops: int) -> None:
        """A stanza another node forwarded: ours now; run in arrival order per room."""
        self.cluster.pubsub.direct_broadcast(
            sender, ROUTE_TOPIC, ("muc-ack", self.service.domain, ident)
        )
        try:
            room = str(JID.parse(stanza.get("to", "")).bare)
        except JIDError:
            return
        queue = self._inbox.get(room)
        if queue is None:
            queue = self._inbox[room] = deque()
            self.cluster._spawn(self._drain, room, queue)
        queue.append((stanza, hops))

    async def _drain(self, room: str, queue: deque[tuple[Element, int]]) -> None:
        try:
            while queue:
                stanza, hops = queue.popleft()
                token = _HOPS.set(hops)
                try:
                    await self.service.component.route(None, stanza)
                except Exception:
                    log.exception("a stanza forwarded to %s failed", room)
                finally:
                    _HOPS.reset(token)
        finally:
            del self._inbox[room]

    async def _expire_loop(self) -> None:
        """Forwards nobody acknowledged: their node died. Sent again to the room's owner
        (a new one once the lease expired); after `2 × ttl`, an error to the sender."""
        while True:
            await trio.sleep(self.ack_timeout / 4)
            now = time.monotonic()
            deadline = now - self.ack_timeout
            late = [i for i, (_f, sent, _s) in self._pending.items() if sent < deadline]
            for ident in late:
                first, _sent, stanza = self._pending.pop(ident)
                try:
                    if now - first > 2 * self.ttl + self.ack_timeout:
                        await self._give_up(stanza)
                    else:
                        await self._again(stanza, first)
                except Exception:
                    log.exception("a forward to a room failed again")

    async def _again(self, stanza: Element, first: float) -> None:
        room = str(JID.parse(stanza.get("to", "")).bare)
        owner = await self.owner(room)
        if owner == self.node:
            await self.service.component.route(None, stanza)
        else:
            self._forward(owner, stanza, first)

    async def _give_up(self, stanza: Element) -> None:
        kind, type_ = local_name(stanza), stanza.get("type")
        if type_ != "error" and not (kind == "iq" and type_ == "result"):
            text = "the room's node does not answer"
            error = error_reply(stanza, "recipient-unavailable", text)
            await self.service.component.route(None, error)

    # ---- keeping leases, noticing takeovers ------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            try:
                await self.leases.prepare()
                break
            except StorageError as exc:
                log.warning("cannot prepare the room leases: %s", exc)
                await trio.sleep(1)
        self._ready.set()
        while True:
            await trio.sleep(self.ttl / 3)
            held = dict(self.owned)
            if not held:
                continue
            started = time.monotonic()
            try:
                mine = await self.leases.renew(held)
            except StorageError as exc:
                log.warning("cannot renew room leases: %s", exc)
                continue  # `_current` stops using each one when it ends
            for room, token in held.items():
                if self.owned.get(room) != token:
                    continue  # dropped or taken again meanwhile
                if room in mine:
                    self._valid[room] = started + self.ttl
                else:
                    log.warning("lost the lease of room %s", room)
                    self.lost(room)
            await self._release_unused()

    async def _release_unused(self) -> None:
        """Leases of rooms that are gone (destroyed, or emptied temporary rooms)."""
        old = time.monotonic() - self.ttl
        for room, token in list(self.owned.items()):
            local = room.partition("@")[0]
            if local not in self.service.rooms and self._taken.get(room, 0.0) < old:
                self.lost(room)
                with contextlib.suppress(StorageError):  # else it expires by itself
                    await self.leases.release(room, token)

    async def _watch_loop(self) -> None:
        """The rooms our sessions sit in, served elsewhere: a lease that ended is taken
        over (by whichever node asks first), and a new owner gets our sessions again."""
        await self._ready.wait()
        while True:
            await trio.sleep(max(0.25, self.ttl / 4))
            rooms = [room for room in self.seated if room not in self.owned]
            if not rooms:
                continue
            try:
                leases = await self.leases.read(rooms)
            except StorageError:
                continue
            for room in rooms:
                lease = leases.get(room)
                if lease is not None and lease.live:
                    self.known[room] = lease
                else:
                    self.known.pop(room, None)
                try:
                    await self.owner(room)
                except Exception:
                    log.exception("room %s: taking over failed", room)

    # ---- occupants on a node that died -----------------------------------------------------

    def _peer(self, node: str, state: str, entries: list[Entry]) -> None:
        if state not in ("down", "gone"):
            return
        for entry in entries:  # occupants of rooms that node served, in case we take one
            if entry.topic.startswith("room:") and entry.topic[5:] in self.seated:
                self._departed.setdefault(entry.topic[5:], set()).add(entry.key)
        if self.service.rooms:
            self.cluster._spawn(self._drop_ghosts)

    async def _farewell(self, room: str, before: set[str]) -> None:
        """After a takeover, once every node had the time to seat its sessions again: the
        occupants who did not come back (they were on a node that died) leave, with status
        333, for those who did."""
        await trio.sleep(self.ttl)
        current = self.service.rooms.get(room.partition("@")[0])
        if current is None or self.owned.get(room) is None:
            return
        for nick in sorted(before - set(current.occupants)):
            for real in list(current.seats):
                gone = make(
                    "presence", {"type": "unavailable", "from": f"{room}/{nick}", "to": real}
                )
                x = sub(gone, ns.MUC_USER, "x")
                sub(x, ns.MUC_USER, "item", affiliation="none", role="none")
                sub(x, ns.MUC_USER, "status", code="333")
                await self.service.send(gone)

    async def _drop_ghosts(self) -> None:
        """Seats of sessions bound nowhere any more (their node died) leave the rooms we
        serve, with status 333 (removed because of a technical problem, XEP-0045 §15.6)."""
        for room in list(self.service.rooms.values()):
            for real in list(room.seats):
                jid = JID.parse(real)
                host = self.service.host.hosts.get(jid.domain)
                if host is None or self._is_local(jid):
                    continue
                if self.cluster.node_of(host.domain, str(jid.bare), jid.resource or "") is None:
                    await room.leave(real, None, "333")


class _Refused:
    """The database for a room this node does not hold: every write is fenced off."""

    def __init__(self, room: str) -> None:
        self.room = room

    async def run(self, what: str, fn: Any) -> Any:
        raise Fenced(f"{what}: this node does not hold the lease of {self.room}")
