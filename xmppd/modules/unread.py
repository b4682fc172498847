"""Unread counts per conversation, kept on the server so every client of an account agrees.

For each account and peer (a contact's bare JID) the map store `unread` keeps the archive id
of the last message read and how many messages from the peer came after it. An archived 1:1
message from someone else adds one (`message/*` after MAM has given it its archive id); a read
marker from any of the account's clients sets the count to the number of the peer's messages
after the marked one: an XMPP client's XEP-0333 `<displayed/>` (seen in `pre-message`, since
it goes to the peer), or a JSON channel's `displayed` push (`mark_read`). Counts are stored
before they are announced. Announcements go to local watchers (the account's JSON channel
sessions on this node) and, over pubsub (topic `unread:<bare JID>`, subscribed while the node
has watchers of that account), to the watchers on the other nodes of a cluster.

Rooms are counted too (unread_rooms.py): the same store and API, keyed by the room's bare JID.

`host.services["unread"]` is the `Unread` object: `counts`, `mark_read`, `watch`, `unwatch`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from ..events import ROOM_EVENTS
from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.jid import JID
from ..protocol.stanza import child_text, get_child
from ..router import StanzaEvent
from ..storage.base import StorageError, UnknownArchiveId
from .mam import stanza_id_by
from .unread_rooms import RoomCounts

if TYPE_CHECKING:
    from ..events import AccountDeleted
    from ..protocol.stanza import Element

Watcher = Callable[[str, int, "str | None"], None]  # (peer, count, read id)
SCAN = 1000  # most archived messages looked at to count or to find a marked message
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def unread_topic(bare: str) -> str:
    return f"unread:{bare}"


class Unread:
    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.log = module.log
        self.store = module.open_map("unread")  # user -> peer -> {"count", "read"}
        self.locks: dict[str, trio.Lock] = defaultdict(trio.Lock)
        self.watchers: dict[str, set[Watcher]] = defaultdict(set)
        self.rooms = RoomCounts(self)

    @property
    def archive(self) -> Any:
        return self.host.services["mam"].store

    # ---- API ---------------------------------------------------------------------------------

    def watch(self, bare: str, watcher: Watcher) -> None:
        if bare not in self.watchers:
            self.host.pubsub.subscribe(unread_topic(bare), self)
        self.watchers[bare].add(watcher)
        self.rooms.watched(bare)

    def unwatch(self, bare: str, watcher: Watcher) -> None:
        watchers = self.watchers.get(bare)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[bare]
                self.host.pubsub.unsubscribe(unread_topic(bare), self)
                self.rooms.forget(bare)

    def announce(self, bare: str, peer: str, count: int, read: str | None) -> None:
        """To this node's watchers of `bare`, and to the other nodes' (cluster mode)."""
        self._tell(bare, peer, count, read)
        self.host.pubsub.broadcast_from(self, unread_topic(bare), (bare, peer, count, read))

    def deliver(self, topic: str, message: object) -> None:
        """Another node's announcement for an account watched here."""
        bare, peer, count, read = message  # type: ignore[misc]
        self._tell(bare, peer, count, read)

    def _tell(self, bare: str, peer: str, count: int, read: str | None) -> None:
        for watcher in list(self.watchers.get(bare, ())):
            watcher(peer, count, read)

    async def counts(self, bare: str) -> dict[str, int]:
        """The non-zero counts of the account's conversations and rooms."""
        local = _local(bare)
        out = {}
        for peer, entry in (await self.store.get_all(local)).items():
            if entry.get("room"):
                count = await self.rooms.count(bare, peer, entry.get("read"))
                if count is None:  # the room is gone (a temporary room, before a restart)
                    await self.store.set(local, peer, None)
                    continue
            else:
                count = entry["count"]
            if count:
                out[peer] = count
        return out

    async def mark_read(self, bare: str, peer: str, archive_id: str) -> int:
        """Everything up to `archive_id` (of the account's archive; for a room, the room's
        stanza-id) with `peer` is read: the count becomes the number of the peer's later
        messages. UnknownArchiveId if unknown."""
        if self.rooms.is_room(peer):
            return await self.rooms.mark_read(bare, peer, archive_id)
        await self.archive.query(_local(bare), after_id=archive_id, limit=0)  # the id exists
        async with self.locks[bare]:
            count = await self._count_after(bare, peer, archive_id)
            await self._save(bare, peer, count, archive_id)
        return count

    async def mark_read_msg(self, bare: str, peer: str, msg_id: str) -> None:
        """A XEP-0333 marker names the message by its own id: find its archive id."""
        page = await self.archive.query(_local(bare), with_jid=peer, limit=SCAN, backward=True)
        for item in reversed(page.items):
            stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
            if msg_id in (stanza.get("id"), _origin_id(stanza)):
                await self.mark_read(bare, peer, item.id)
                return

    # ---- inside ------------------------------------------------------------------------------

    async def _count_after(self, bare: str, peer: str, archive_id: str | None) -> int:
        try:
            page = await self.archive.query(
                _local(bare), with_jid=peer, after_id=archive_id, limit=SCAN
            )
        except UnknownArchiveId:
            return 0
        count = 0
        for item in page.items:
            stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
            if _counts(stanza, bare):
                count += 1
        return count

    async def _save(self, bare: str, peer: str, count: int, read: str | None) -> None:
        entry = {"count": count, "read": read}
        old, _ = await self.store.update(_local(bare), peer, lambda _old: entry)
        if old != entry:
            self.announce(bare, peer, entry["count"], entry["read"])

    async def _bump(self, bare: str, peer: str) -> None:
        """One more unread: read and write in one transaction (one database round trip per
        message; the count stays right with several nodes on one database)."""

        def plus_one(old: dict | None) -> dict:
            entry = old or {"count": 0, "read": None}
            return {"count": entry["count"] + 1, "read": entry["read"]}

        async with self.locks[bare]:
            _, entry = await self.store.update(_local(bare), peer, plus_one)
            self.announce(bare, peer, entry["count"], entry["read"])

    # ---- hooks -------------------------------------------------------------------------------

    async def account_deleted(self, event: AccountDeleted) -> bool:
        """Its counts go, and so do the other accounts' counts of messages from it."""
        await self.store.delete_user(event.local)
        for user in await self.store.users_with_key(event.bare):
            await self.store.set(user, event.bare, None)
        return False

    async def incoming(self, event: StanzaEvent) -> bool:
        stanza, to, sender = event.stanza, event.to, event.sender
        if to is None or sender is None or to.local is None or to.domain != self.host.domain:
            return False
        bare = str(to.bare)
        if str(sender.bare) == bare or stanza_id_by(stanza, bare) is None:
            return False
        if not _counts(stanza, bare) or self.rooms.is_room(str(sender.bare)):
            return False  # a room's private messages: the room's key holds its own count
        try:
            await self._bump(bare, str(sender.bare))
        except StorageError:
            self.log.exception("cannot count an unread message for %s", bare)
        return False

    async def outgoing(self, event: StanzaEvent) -> bool:
        """The user's own client says it displayed a message of the peer (XEP-0333)."""
        marker = get_child(event.stanza, ns.MARKERS, "displayed")
        if marker is None or event.to is None or event.origin is None:
            return False
        bare, peer = event.origin.bare, str(event.to.bare)
        msg_id = marker.get("id")
        if msg_id and peer != bare and not self.rooms.is_room(peer):  # rooms: `room-read`
            try:
                await self.mark_read_msg(bare, peer, msg_id)
            except (StorageError, UnknownArchiveId):
                self.log.exception("cannot mark read for %s", bare)
        return False


def _counts(stanza: Element, bare: str) -> bool:
    """A message from someone else with a body, not a retraction or a correction."""
    if stanza.get("type") not in (None, "chat", "normal"):
        return False
    if child_text(stanza, ns.CLIENT, "body") is None:
        return False
    if get_child(stanza, ns.RETRACT, "retract") is not None:
        return False
    if get_child(stanza, ns.CORRECT, "replace") is not None:
        return False
    sender = stanza.get("from") or ""
    return sender.partition("/")[0] != bare


def _origin_id(stanza: Element) -> str | None:
    origin = get_child(stanza, ns.SID, "origin-id")
    return origin.get("id") if origin is not None else None


def _local(bare: str) -> str:
    return JID.parse(bare).local or ""


def load(module: Module) -> None:
    unread = Unread(module)
    module.host.services["unread"] = unread
    for scope in ("full", "bare"):
        module.hook(f"message/{scope}", unread.incoming, -0.3)  # after MAM (-0.25)
        module.hook(f"pre-message/{scope}", unread.outgoing, -0.45)
    module.hook("account-deleted", unread.account_deleted)
    module.host.events.declare(*ROOM_EVENTS)  # the room service fires them (muc/service.py)
    module.hook("room-entered", unread.rooms.entered)
    module.hook("room-message", unread.rooms.message)
    module.hook("room-read", unread.rooms.read)
    module.hook("room-destroyed", unread.rooms.destroyed)


spec = ModuleSpec(
    name="unread",
    summary="unread counts per conversation, shared by every client of an account",
    load=load,
    depends=("mam",),
    implements=(
        Implements(
            "XEP-0333", "0.4", status="partial", note="displayed clears unread, 1:1 and rooms"
        ),
    ),
)
