"""Room ownership in cluster mode: one node at a time holds a room's lease, in PostgreSQL.

Why PostgreSQL and not Redis: the room's durable state (its stored document and its archive)
is in PostgreSQL, so a write can check the lease *in the same transaction*: every write of a
room's owner first reads the lease row `FOR SHARE` and goes on only if this node still holds
it under the token it was given (the fencing token). A takeover updates that row, so it
waits for the writes in flight and every write after it fails. A lease in Redis could not
be checked atomically with a write in another engine.

The table `muc_leases` (room JID, owner node, token, expiry) is made on first use. Expiry is
PostgreSQL's clock (`now()`), one clock for every node. A lease is taken when there is none
or it has expired; each take increments the room's token. The owner renews its leases every
`ttl / 3`; a node that cannot renew for `ttl` stops serving its rooms (another may already
have them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..storage.base import StorageError

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS muc_leases ("
    "room TEXT PRIMARY KEY, owner TEXT NOT NULL, token BIGINT NOT NULL, "
    "expires TIMESTAMPTZ NOT NULL)"
)
_SCHEMA_LOCK = 0x6D75636C  # pg_advisory_xact_lock key: one node creates the table
_TAKE = (
    "INSERT INTO muc_leases (room, owner, token, expires) "
    "VALUES (?, ?, 1, now() + make_interval(secs => ?)) "
    "ON CONFLICT (room) DO UPDATE SET owner = excluded.owner, token = muc_leases.token + 1, "
    "expires = excluded.expires WHERE muc_leases.expires < now()"
)
_READ = (
    "SELECT room, owner, token, EXTRACT(EPOCH FROM expires - now()) "
    "FROM muc_leases WHERE room = ANY(?)"
)
_RENEW = (
    "UPDATE muc_leases SET expires = now() + make_interval(secs => ?) "
    "WHERE owner = ? AND room = ANY(?) RETURNING room, token"
)
_FENCE = "SELECT 1 FROM muc_leases WHERE room = ? AND owner = ? AND token = ? FOR SHARE"


class Fenced(StorageError):
    """A write of a room this node no longer holds the lease of: refused, nothing written."""


class Executor(Protocol):
    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]: ...
    def write(self, sql: str, args: Sequence[object] = ()) -> int: ...


class Database(Protocol):
    async def run(self, what: str, fn: Callable[[Executor], T]) -> T: ...


@dataclass(slots=True, frozen=True)
class Lease:
    room: str
    owner: str
    token: int
    until: float  # time.monotonic() at which it expires, as far as this node can tell

    @property
    def live(self) -> bool:
        return self.until > time.monotonic()


class Leases:
    """The lease table, seen from one node."""

    def __init__(self, db: Database, node: str, ttl: float) -> None:
        self.db, self.node, self.ttl = db, node, ttl

    async def prepare(self) -> None:
        """Make the table; expire the leases a previous run of this node left (it is dead)."""

        def run(tx: Executor) -> None:
            tx.rows("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            tx.write(_SCHEMA)
            tx.write(
                "UPDATE muc_leases SET expires = now() - interval '1 second' WHERE owner = ?",
                (self.node,),
            )

        await self.db.run("muc leases prepare", run)

    async def take(self, room: str) -> Lease:
        """Take the room's lease if nobody holds it; the lease as it stands afterwards."""

        def run(tx: Executor) -> list[tuple]:
            tx.write(_TAKE, (room, self.node, self.ttl))
            return tx.rows(_READ, ([room],))

        started = time.monotonic()
        return _leases(await self.db.run("muc lease take", run), started)[room]

    async def read(self, rooms: list[str]) -> dict[str, Lease]:
        started = time.monotonic()
        return _leases(
            await self.db.run("muc lease read", lambda tx: tx.rows(_READ, (rooms,))), started
        )

    async def renew(self, held: dict[str, int]) -> set[str]:
        """Extend our leases of `held` (room -> token); returns the rooms still ours."""

        def run(tx: Executor) -> list[tuple]:
            return tx.rows(_RENEW, (self.ttl, self.node, list(held)))

        rows = await self.db.run("muc lease renew", run)
        return {room for room, token in rows if held.get(room) == token}

    async def release(self, room: str, token: int) -> None:
        """Let the lease go at once. The row stays: tokens only ever grow, so no write made
        under an old token can match a later lease."""
        sql = (
            "UPDATE muc_leases SET expires = now() - interval '1 second' "
            "WHERE room = ? AND owner = ? AND token = ?"
        )
        await self.db.run("muc lease release", lambda tx: tx.write(sql, (room, self.node, token)))

    def fenced(self, room: str, token: int) -> FencedDatabase:
        """The database as seen by the owner of `room` under `token`: every transaction
        checks the lease first."""
        return FencedDatabase(self.db, room, self.node, token)


def _leases(rows: list[tuple], started: float) -> dict[str, Lease]:
    # Counted from before the query: the lease is never believed to last longer than it does.
    return {
        room: Lease(room, owner, token, started + float(left)) for room, owner, token, left in rows
    }


class FencedDatabase:
    """A `Database` whose every transaction first checks that the lease is still ours."""

    __slots__ = ("_db", "_check")

    def __init__(self, db: Database, room: str, node: str, token: int) -> None:
        self._db = db
        self._check = (room, node, token)

    async def run(self, what: str, fn: Callable[[Executor], T]) -> T:
        def fenced(tx: Executor) -> T:
            if not tx.rows(_FENCE, self._check):
                room, _node, token = self._check
                raise Fenced(f"{what}: this node lost the lease of {room} (token {token})")
            return fn(tx)

        return await self._db.run(what, fenced)


class FencedStores:
    """The room service's keyval store and archive with every write fenced by the lease of
    the room it is about (the keyval key is the room's local part; an archive owner is the
    room JID, maybe followed by `/creation`). Reads go straight through."""

    def __init__(
        self,
        storage: Any,
        store: str,
        archive: str,
        domain: str,
        fence: Callable[[str], Database],
    ) -> None:
        self.keyval = _FencedKeyval(storage, store, lambda local: fence(f"{local}@{domain}"))
        self.archive = _FencedArchive(storage, archive, lambda owner: fence(owner.split("/")[0]))


class _Fenced:
    def __init__(self, storage: Any, name: str, fence: Callable[[str], Database]) -> None:
        self._plain = self._open(storage, name)
        self._storage, self._name, self._fence = storage, name, fence

    def _open(self, storage: Any, name: str) -> Any:
        raise NotImplementedError

    def _for(self, key: str) -> Any:
        storage = type(self._storage)(self._fence(key), self._storage.host)
        return self._open(storage, self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plain, name)


class _FencedKeyval(_Fenced):
    def _open(self, storage: Any, name: str) -> Any:
        return storage.keyval(name)

    async def set(self, user: str, value: Any) -> None:
        await self._for(user).set(user, value)


class _FencedArchive(_Fenced):
    def _open(self, storage: Any, name: str) -> Any:
        return storage.archive(name)

    async def append(self, owner: str, **kwargs: Any) -> str:
        return await self._for(owner).append(owner, **kwargs)

    async def delete(self, owner: str, id: str) -> bool:
        return await self._for(owner).delete(owner, id)

    async def delete_owner(self, owner: str) -> int:
        return await self._for(owner).delete_owner(owner)
