"""The store kinds over SQL, shared by both drivers.

A driver is a `Backend`: `run(what, fn)` calls `fn(executor)` on one of its connections in a
worker thread and turns driver errors into StorageError naming `what`. The statements here use
`?` placeholders and SQL that SQLite and PostgreSQL read alike (ON CONFLICT upserts, row-value
comparisons), so each kind is written once and both drivers keep the same schema shape.
Every method is one `run`, hence one transaction, committed before it returns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from xmppd.storage.base import (
    ArchiveItem,
    ArchivePage,
    ArchiveRecord,
    Document,
    StorageError,
    UnknownArchiveId,
    Write,
)
from xmppd.storage.migrations import Executor
from xmppd.storage.spool import Spool

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


_MAP_UPSERT = (
    'INSERT INTO map (host, store, "user", key, value) VALUES (?, ?, ?, ?, ?) '
    'ON CONFLICT (host, store, "user", key) DO UPDATE SET value = excluded.value'
)
_MAP_DELETE = 'DELETE FROM map WHERE host = ? AND store = ? AND "user" = ? AND key = ?'
_MAP_GET = 'SELECT value FROM map WHERE host = ? AND store = ? AND "user" = ? AND key = ?'
_MAP_INSERT_NEW = (
    'INSERT INTO map (host, store, "user", key, value) VALUES (?, ?, ?, ?, ?) '
    'ON CONFLICT (host, store, "user", key) DO NOTHING'
)
FIRST_WRITE_ATTEMPTS = 3  # a lost first insert, then the row deleted before we read it, ...
_ARCHIVE_INSERT = (
    "INSERT INTO archive (host, store, owner, id, ts, with_bare, with_full, stanza) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class Backend(Protocol):
    async def run(self, what: str, fn: Callable[[Executor], T]) -> T: ...


def _encode(value: Document) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"storage documents are JSON objects (dict), not {type(value).__name__}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str) -> Document:
    return json.loads(text)


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("archive timestamps must be timezone-aware (UTC)")
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


class SQLStorage:
    """The `Storage` of one virtual host: every row it touches carries its host name."""

    __slots__ = ("db", "host")

    def __init__(self, db: Backend, host: str):
        self.db = db
        self.host = host

    def keyval(self, store: str) -> SQLKeyValueStore:
        return SQLKeyValueStore(self.db, self.host, store)

    def map(self, store: str) -> SQLMapStore:
        return SQLMapStore(self.db, self.host, store)

    def archive(self, store: str) -> SQLArchiveStore:
        return SQLArchiveStore(self.db, self.host, store)

    def spool(self, name: str, *, max_entries: int, max_bytes: int) -> Spool | None:
        """This host's durable spool `name` (spool.py); None when the database has no
        spool directory (opened without a data dir)."""
        directory = getattr(self.db, "spool_dir", None)
        if directory is None:
            return None
        path = directory / f"{self.host}-{name}.jsonl"
        return Spool(path, max_entries=max_entries, max_bytes=max_bytes)

    async def close(self) -> None:
        """Nothing to release per host: the shared database is closed by its owner."""


class SQLKeyValueStore:
    __slots__ = ("_db", "_scope")

    def __init__(self, db: Backend, host: str, store: str):
        self._db = db
        self._scope = (host, store)

    async def get(self, user: str) -> Document | None:
        sql = 'SELECT value FROM keyval WHERE host = ? AND store = ? AND "user" = ?'
        rows = await self._db.run("keyval get", lambda tx: tx.rows(sql, (*self._scope, user)))
        return _decode(rows[0][0]) if rows else None

    async def set(self, user: str, value: Document | None) -> None:
        if value is None:
            sql = 'DELETE FROM keyval WHERE host = ? AND store = ? AND "user" = ?'
            args: tuple[str, ...] = (*self._scope, user)
        else:
            sql = (
                'INSERT INTO keyval (host, store, "user", value) VALUES (?, ?, ?, ?) '
                'ON CONFLICT (host, store, "user") DO UPDATE SET value = excluded.value'
            )
            args = (*self._scope, user, _encode(value))
        await self._db.run("keyval set", lambda tx: tx.write(sql, args))

    async def users(self) -> list[str]:
        sql = 'SELECT "user" FROM keyval WHERE host = ? AND store = ? ORDER BY "user"'
        rows = await self._db.run("keyval users", lambda tx: tx.rows(sql, self._scope))
        return [row[0] for row in rows]


class SQLMapStore:
    __slots__ = ("_db", "_scope")

    def __init__(self, db: Backend, host: str, store: str):
        self._db = db
        self._scope = (host, store)

    async def get(self, user: str, key: str) -> Document | None:
        args = (*self._scope, user, key)
        rows = await self._db.run("map get", lambda tx: tx.rows(_MAP_GET, args))
        return _decode(rows[0][0]) if rows else None

    async def set(self, user: str, key: str, value: Document | None) -> None:
        await self._db.run("map set", self.set_later(user, key, value))

    def set_later(self, user: str, key: str, value: Document | None) -> Write:
        if value is None:
            sql = 'DELETE FROM map WHERE host = ? AND store = ? AND "user" = ? AND key = ?'
            args: tuple[str, ...] = (*self._scope, user, key)
        else:
            sql = _MAP_UPSERT
            args = (*self._scope, user, key, _encode(value))
        return lambda tx: tx.write(sql, args)

    async def update(
        self, user: str, key: str, change: Callable[[Document | None], Document | None]
    ) -> tuple[Document | None, Document | None]:
        """Read under a row lock, `change`, write back: one transaction. A first write of an
        absent key inserts only if no row appeared meanwhile (another node's first write, not
        lockable before it exists); if one did, it is read (locked now) and changed instead."""
        args = (*self._scope, user, key)

        def read_change_write(tx: Executor) -> tuple[Document | None, Document | None]:
            for _attempt in range(FIRST_WRITE_ATTEMPTS):
                rows = tx.rows(_MAP_GET + getattr(tx, "row_lock", ""), args)
                old = _decode(rows[0][0]) if rows else None
                new = change(None if old is None else json.loads(rows[0][0]))
                if new == old:
                    return old, new
                if new is None:
                    tx.write(_MAP_DELETE, args)
                elif old is not None:
                    tx.write(_MAP_UPSERT, (*args, _encode(new)))
                elif tx.write(_MAP_INSERT_NEW, (*args, _encode(new))) != 1:
                    continue  # another writer's row came first: change that one
                return old, new
            raise StorageError(f"map key {key!r} of {user!r} keeps appearing and vanishing")

        return await self._db.run("map update", read_change_write)

    async def replace(
        self,
        user: str,
        key: str,
        expected: Callable[[Document | None], bool],
        value: Document | None,
    ) -> bool:
        """Compare and set: an `update` that writes `value` only if `expected` accepts the
        stored document, read under the row lock. False, nothing written, when it refuses:
        the caller reads again and retries (several nodes share the database)."""
        accepted = False

        def change(current: Document | None) -> Document | None:
            nonlocal accepted
            accepted = expected(current)
            return value if accepted else current

        await self.update(user, key, change)
        return accepted

    async def get_all(self, user: str) -> dict[str, Document]:
        sql = 'SELECT key, value FROM map WHERE host = ? AND store = ? AND "user" = ? ORDER BY key'
        args = (*self._scope, user)
        rows: list[Any] = await self._db.run("map get_all", lambda tx: tx.rows(sql, args))
        return {key: _decode(value) for key, value in rows}

    async def delete_user(self, user: str) -> None:
        sql = 'DELETE FROM map WHERE host = ? AND store = ? AND "user" = ?'
        args = (*self._scope, user)
        await self._db.run("map delete_user", lambda tx: tx.write(sql, args))

    async def users_with_key(self, key: str) -> list[str]:
        sql = 'SELECT "user" FROM map WHERE host = ? AND store = ? AND key = ? ORDER BY "user"'
        args = (*self._scope, key)
        rows = await self._db.run("map users_with_key", lambda tx: tx.rows(sql, args))
        return [row[0] for row in rows]


class SQLArchiveStore:
    """Append-only records ordered by (timestamp, insertion); see `base.ArchiveStore`."""

    __slots__ = ("_db", "_scope")

    def __init__(self, db: Backend, host: str, store: str):
        self._db = db
        self._scope = (host, store)

    async def append(
        self,
        owner: str,
        *,
        with_jid: str,
        stanza_xml: str,
        stanza_id: str | None = None,
        timestamp: datetime | None = None,
        also: Sequence[Write] = (),
    ) -> str:
        record_id = stanza_id if stanza_id is not None else str(uuid.uuid4())
        ts = to_micros(timestamp if timestamp is not None else datetime.now(UTC))
        bare = with_jid.partition("/")[0]
        args = (*self._scope, owner, record_id, ts, bare, with_jid, stanza_xml)

        def insert(tx: Executor) -> None:
            tx.write(_ARCHIVE_INSERT, args)
            for write in also:  # one job: one savepoint, one commit
                write(tx)

        await self._db.run("archive append", insert)
        return record_id

    async def append_many(self, records: list[ArchiveRecord]) -> None:
        ts = to_micros(datetime.now(UTC))
        rows = [
            (
                *self._scope,
                r.owner,
                r.id,
                ts,
                r.with_jid.partition("/")[0],
                r.with_jid,
                r.stanza_xml,
            )
            for r in records
        ]

        def insert_all(tx: Executor) -> None:
            for args in rows:
                tx.write(_ARCHIVE_INSERT, args)

        await self._db.run("archive append", insert_all)

    async def query(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        limit: int | None = None,
        backward: bool = False,
    ) -> ArchivePage:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        where = ["host = ?", "store = ?", "owner = ?"]
        args: list[object] = [*self._scope, owner]
        if with_jid is not None:
            bare, _, resource = with_jid.partition("/")
            where.append("with_bare = ?")
            args.append(bare)
            if resource:
                where.append("with_full = ?")
                args.append(with_jid)
        if start is not None:
            where.append("ts >= ?")
            args.append(to_micros(start))
        if end is not None:
            where.append("ts <= ?")
            args.append(to_micros(end))
        order = "DESC" if backward else "ASC"
        # One more row than asked tells whether the page is the last one.
        tail = "" if limit is None else f" LIMIT {limit + 1}"

        def run(tx: Executor) -> list[tuple]:
            for record_id, op in ((after_id, ">"), (before_id, "<")):
                if record_id is not None:
                    where.append(f"(ts, seq) {op} (?, ?)")
                    args.extend(self._position(tx, owner, record_id))
            sql = (
                f"SELECT id, ts, with_full, stanza FROM archive WHERE {' AND '.join(where)} "
                f"ORDER BY ts {order}, seq {order}{tail}"
            )
            return tx.rows(sql, args)

        rows = await self._db.run("archive query", run)
        complete = limit is None or len(rows) <= limit
        rows = rows[:limit]
        if backward:
            rows.reverse()
        items = [ArchiveItem(r[0], from_micros(r[1]), r[2], r[3]) for r in rows]
        return ArchivePage(items, complete)

    def _position(self, tx: Executor, owner: str, record_id: str) -> tuple[int, int]:
        sql = "SELECT ts, seq FROM archive WHERE host = ? AND store = ? AND owner = ? AND id = ?"
        rows = tx.rows(sql, (*self._scope, owner, record_id))
        if not rows:
            raise UnknownArchiveId(record_id)
        return rows[0][0], rows[0][1]

    async def delete(self, owner: str, id: str) -> bool:
        sql = "DELETE FROM archive WHERE host = ? AND store = ? AND owner = ? AND id = ?"
        args = (*self._scope, owner, id)
        return await self._db.run("archive delete", lambda tx: tx.write(sql, args)) > 0

    async def expire(self, older_than: datetime) -> int:
        sql = "DELETE FROM archive WHERE host = ? AND store = ? AND ts < ?"
        args = (*self._scope, to_micros(older_than))
        return await self._db.run("archive expire", lambda tx: tx.write(sql, args))

    async def delete_owner(self, owner: str) -> int:
        sql = "DELETE FROM archive WHERE host = ? AND store = ? AND owner = ?"
        args = (*self._scope, owner)
        return await self._db.run("archive delete_owner", lambda tx: tx.write(sql, args))

    async def owners(self) -> list[str]:
        sql = "SELECT DISTINCT owner FROM archive WHERE host = ? AND store = ? ORDER BY owner"
        rows = await self._db.run("archive owners", lambda tx: tx.rows(sql, self._scope))
        return [row[0] for row in rows]
