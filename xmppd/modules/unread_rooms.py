"""Unread counts of rooms: the rooms half of modules/unread.py.

A user's entry for a room (map store `unread`, key: the room's bare JID) holds the stanza-id of
the last message read, and no count: the count is derived from the room's archive (others'
messages with a body after it, at most `SCAN`), so a room message costs no write per reader.
An account is counted in a room from the moment one of its sessions first enters it (XMPP or
JSON; from the room's newest message then); its position moves with the XEP-0333
`<displayed/>` markers its clients send to the room and with JSON `displayed` pushes, never
backwards; the entry goes with the room (`room-destroyed`), with the account, and when the user
removes the room's bookmark over the JSON channels (the web client's Leave).

For accounts with watchers (JSON sessions on this node) the unread stanza-ids are kept in
memory and follow the room service's `room-message` events (new messages add one, retractions
take theirs out), so every change is announced without reading the archive again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..muc.api import RoomApi
from ..muc.room import MucError
from ..protocol.jid import JID, JIDError
from ..storage.base import StorageError, UnknownArchiveId

if TYPE_CHECKING:
    from ..events import RoomEvent
    from .unread import Unread

SCAN = 1000  # most archived room messages looked at, so most unread counted per room


@dataclass(slots=True)
class Position:
    read: str | None  # the stanza-id of the last message read (None: from the room's first)
    unread: set[str] = field(default_factory=set)  # stanza-ids of the unread messages


class RoomCounts:
    def __init__(self, unread: Unread) -> None:
        self.unread = unread
        self.host = unread.host
        self.store = unread.store
        self.cache: dict[str, dict[str, Position]] = {}  # watched account -> room -> position
        self.readers: dict[str, set[str]] = {}  # room -> the watched accounts counted there

    # ---- lookups ------------------------------------------------------------------------------

    def api(self, room: str) -> RoomApi | None:
        """The room service of the room's domain, on any host; None: not a room."""
        try:
            domain = JID.parse(room).domain
        except JIDError:
            return None
        for host in self.host.hosts.values():
            service = host.services.get("muc")
            if service is not None and service.domain == domain:
                return service.api
        return None

    def is_room(self, peer: str) -> bool:
        return self.api(peer) is not None

    def local(self, bare: str) -> str | None:
        """The account's local part when it is one of this host's, else None."""
        jid = JID.parse(bare)
        return jid.local if jid.domain == self.host.domain else None

    # ---- counts -------------------------------------------------------------------------------

    async def count(self, bare: str, room: str, read: str | None) -> int | None:
        """The unread count of a room entry; None when the room is gone."""
        rooms = self.cache.get(bare)
        if rooms is not None and room in rooms:
            return len(rooms[room].unread)
        api = self.api(room)
        if api is None or not await api.exists(room):
            return None
        try:
            unread = (await api.unread_after(room, bare, read, SCAN))[1]
        except MucError:  # the read message is no longer in the archive: count from the start
            read, unread = None, (await api.unread_after(room, bare, None, SCAN))[1]
        if rooms is not None:
            self._keep(bare, room, Position(read, set(unread)))
        return len(unread)

    async def mark_read(self, bare: str, room: str, stanza_id: str) -> int:
        """Everything up to the room message `stanza_id` is read (unless a later one was read
        already); the count. UnknownArchiveId: no such message in that room."""
        api, local = self.api(room), self.local(bare)
        if api is None or local is None:
            raise UnknownArchiveId(stanza_id)
        async with self.unread.locks[bare]:
            entry = await self.store.get(local, room) or {}
            try:
                seen, unread = await api.unread_after(room, bare, stanza_id, SCAN)
            except MucError:
                raise UnknownArchiveId(stanza_id) from None
            read, old = stanza_id, entry.get("read")
            if old is not None and old in seen:  # a later message was marked read already
                after = seen.index(old)
                read, unread = old, [i for i in unread if seen.index(i) > after]
            await self._save(bare, room, Position(read, set(unread)))
        return len(unread)

    async def _save(self, bare: str, room: str, position: Position) -> None:
        local = self.local(bare)
        assert local is not None
        old = await self.store.get(local, room)
        if old is None or old.get("read") != position.read:
            await self.store.set(local, room, {"room": True, "read": position.read})
        rooms = self.cache.get(bare)
        before = rooms.get(room) if rooms is not None else None
        if rooms is not None:
            self._keep(bare, room, position)
        if before is None or before.read != position.read or before.unread != position.unread:
            self.unread.announce(bare, room, len(position.unread), position.read)

    async def stop(self, bare: str, room: str) -> None:
        """The user let the room go (removed its bookmark): no more counting there, until one
        of its sessions enters the room again."""
        local = self.local(bare)
        if local is None or await self.store.get(local, room) is None:
            return
        async with self.unread.locks[bare]:
            await self.store.set(local, room, None)
        self._drop(bare, room)
        self.unread.announce(bare, room, 0, None)

    # ---- watchers -----------------------------------------------------------------------------

    def forget(self, bare: str) -> None:
        """No watcher left for the account: its positions leave memory."""
        for room in self.cache.pop(bare, {}):
            self._drop(bare, room)

    def watched(self, bare: str) -> None:
        self.cache.setdefault(bare, {})

    def _keep(self, bare: str, room: str, position: Position) -> None:
        self.cache[bare][room] = position
        self.readers.setdefault(room, set()).add(bare)

    def _drop(self, bare: str, room: str) -> None:
        rooms = self.cache.get(bare)
        if rooms is not None:
            rooms.pop(room, None)
        readers = self.readers.get(room)
        if readers is not None:
            readers.discard(bare)
            if not readers:
                del self.readers[room]

    # ---- the room service's events ------------------------------------------------------------

    async def entered(self, event: RoomEvent) -> bool:
        """A session of the account entered the room: count from now on, if not yet."""
        local = self.local(event.bare) if event.bare else None
        api = self.api(event.room)
        if local is None or api is None:
            return False
        try:
            async with self.unread.locks[event.bare]:
                if await self.store.get(local, event.room) is None:
                    newest = await api.newest_id(event.room)
                    await self._save(event.bare, event.room, Position(newest))
        except (StorageError, MucError):
            self.unread.log.exception("cannot start counting %s for %s", event.room, event.bare)
        return False

    async def message(self, event: RoomEvent) -> bool:
        """A room message: one more for the other watched readers, one less for a retracted."""
        for bare in list(self.readers.get(event.room, ())):
            position = self.cache.get(bare, {}).get(event.room)
            if position is None:
                continue
            changed = False
            if event.retracts in position.unread:
                position.unread.discard(event.retracts)
                changed = True
            if event.counts and bare != event.bare and len(position.unread) < SCAN:
                position.unread.add(event.stanza_id)
                changed = True
            if changed:
                self.unread.announce(bare, event.room, len(position.unread), position.read)
        return False

    async def read(self, event: RoomEvent) -> bool:
        """An occupant's XEP-0333 `<displayed/>` to the room, from any of its clients."""
        if self.local(event.bare) is None:
            return False
        try:
            await self.mark_read(event.bare, event.room, event.stanza_id)
        except UnknownArchiveId:
            pass  # a marker for a message the room does not have: nothing to clear
        except StorageError:
            self.unread.log.exception("cannot mark %s read for %s", event.room, event.bare)
        return False

    async def destroyed(self, event: RoomEvent) -> bool:
        """The room is gone: so are its entries, and its counts drop to nothing."""
        try:
            users = await self.store.users_with_key(event.room)
            for user in users:
                await self.store.set(user, event.room, None)
        except StorageError:
            self.unread.log.exception("cannot forget the unread counts of %s", event.room)
            return False
        for user in users:
            bare = f"{user}@{self.host.domain}"
            self._drop(bare, event.room)
            self.unread.announce(bare, event.room, 0, None)
        return False
