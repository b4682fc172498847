"""PostgreSQL driver: psycopg 3 (sync API) with a psycopg_pool connection pool.

Theory of operation: psycopg's sync calls run in trio worker threads
(`trio.to_thread.run_sync`) behind a `CapacityLimiter` as wide as the pool, so the trio loop
never blocks on the network and no thread waits for a connection while the pool is healthy.
Each `run` borrows one connection (pinged first, see `_borrow`) for one transaction and
commits it before returning; with `synchronous_commit` on (PostgreSQL's default, enforced per
connection if the server turned it off) COMMIT returns only once the WAL is flushed to disk.
The stores themselves are shared with the SQLite driver (`sql.py`).

Outages: a call that cannot reach the server (refused or lost connection, pool timeout) raises
`StorageUnavailable` and opens the breaker (`breaker.py`): later calls fail at once until a
background probe reconnects, so no caller waits for the connect timeout per call. A pooled
connection that fails its ping is followed by one direct connection attempt before the pool is
asked to reconnect: a refused server is known at once instead of after the pool's timeout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from xmppd.storage.base import StorageError, StorageUnavailable
from xmppd.storage.batch import GroupCommit, Job, fail_all
from xmppd.storage.breaker import DEFAULT_RETRY_INTERVAL, Breaker
from xmppd.storage.migrations import LATEST_VERSION, Executor, upgrade
from xmppd.storage.sql import SQLStorage

T = TypeVar("T")

DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT = 10  # seconds; libpq counts whole seconds, at least 2
MIGRATION_LOCK = 0x786D7070  # pg_advisory_xact_lock key: one migrating process at a time


@lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    # The shared statements use `?`; psycopg wants `%s`. None of them contains a literal `?`/`%`.
    return sql.replace("?", "%s")


class PostgresExecutor:
    __slots__ = ("conn",)
    # Appended to a read that a write of the same transaction depends on: concurrent
    # connections would otherwise read the same row and one write would be lost.
    row_lock = " FOR UPDATE"

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(_pg_sql(sql), args).fetchall()

    def write(self, sql: str, args: Sequence[object] = ()) -> int:
        return self.conn.execute(_pg_sql(sql), args).rowcount


def describe(dsn: str) -> str:
    """`host:port/dbname` for messages: never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise StorageError(f"invalid PostgreSQL dsn: {_cause(exc)}") from exc
    host = params.get("host") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or ""
    return f"PostgreSQL {host}:{port}/{dbname}"


def _cause(exc: BaseException) -> str:
    """libpq messages span lines (with hints); one line reads better in a log."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _configure(conn: psycopg.Connection) -> None:
    # 'off' acknowledges commits before the WAL reaches disk; every other mode ('local', 'on',
    # 'remote_write', 'remote_apply') waits at least for the local flush, so keep those.
    if conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
        conn.execute("SET synchronous_commit = on")
    conn.commit()  # the pool wants the connection idle


class PostgresDatabase:
    """An open PostgreSQL database; `for_host` gives the per-host `Storage`."""

    __slots__ = (
        "where",
        "migrated_from",
        "spool_dir",
        "breaker",
        "group",
        "_pool",
        "_limiter",
        "_reach",
    )

    def __init__(
        self,
        where: str,
        pool: ConnectionPool,
        pool_size: int,
        migrated_from: int,
        reach: Callable[[], None] = lambda: None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ):
        self.where = where
        self.migrated_from = migrated_from  # the schema version found at open
        self.spool_dir: Path | None = None  # set by open_database (the data dir); spool.py
        self._pool: ConnectionPool | None = pool
        self._limiter = trio.CapacityLimiter(pool_size)
        self.group = GroupCommit(self._run_batch, self._limiter, parallel=pool_size)
        self._reach = reach  # one direct connection attempt; raises psycopg.Error if down
        self.breaker = Breaker(where, self._probe, retry_interval)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        target: int = LATEST_VERSION,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> PostgresDatabase:
        """Connect, bring the schema up to date (or to `target`), then open the pool.

        Raises StorageError naming host, port and database and the cause if the server cannot
        be reached or refuses us, or if the schema was written by a newer xmppd.
        """
        where = describe(dsn)
        found = await trio.to_thread.run_sync(_migrate, dsn, where, connect_timeout, target)
        pool = await trio.to_thread.run_sync(_open_pool, dsn, where, pool_size, connect_timeout)

        def reach() -> None:
            psycopg.connect(dsn, connect_timeout=connect_timeout).close()

        return cls(where, pool, pool_size, found, reach, retry_interval)

    def for_host(self, host: str) -> SQLStorage:
        return SQLStorage(self, host)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Connections still lent finish their transaction and are closed when returned.
            await trio.to_thread.run_sync(pool.close)

    async def run(self, what: str, fn: Callable[[Executor], T]) -> T:
        """Run `fn(executor)` in a worker thread, group-committed (`batch.py`) with the calls
        made meanwhile; errors -> StorageError, StorageUnavailable (at once while the breaker is
        open) when the server is unreachable."""
        self.breaker.check()
        try:
            return await self.group.submit(Job(what, fn))
        except StorageUnavailable as exc:
            self.breaker.failed(exc)
            raise

    def _run_batch(self, jobs: list[Job[object]]) -> None:
        """In a worker thread: one transaction on one pooled connection, a savepoint per job
        when there are several, one COMMIT (one WAL flush) for all."""
        pool = self._pool
        if pool is None:
            fail_all(jobs, StorageError(f"database {self.where} is closed"))
            return
        try:
            conn = _borrow(pool, self._reach)  # includes the pool's timeouts
        except psycopg.Error as exc:
            fail_all(jobs, StorageUnavailable(f"database {self.where}: {_cause(exc)}"))
            return
        try:
            with conn.transaction():  # commits, or rolls back on an exception
                if len(jobs) == 1:
                    jobs[0].result = jobs[0].fn(PostgresExecutor(conn))
                else:
                    for job in jobs:
                        self._run_in_savepoint(conn, job)
        except psycopg.Error as exc:
            what = jobs[0].what if len(jobs) == 1 else "commit"
            fail_all(jobs, self._error(what, exc, conn))
        except Exception as exc:  # the lone job's own error, rolled back
            jobs[0].error = exc
        finally:
            pool.putconn(conn)  # a broken connection is replaced by the pool

    def _run_in_savepoint(self, conn: psycopg.Connection, job: Job[object]) -> None:
        try:
            with conn.transaction():
                job.result = job.fn(PostgresExecutor(conn))
        except psycopg.Error as exc:
            job.error = self._error(job.what, exc, conn)
            if conn.broken:
                raise
        except Exception as exc:
            job.error = exc

    def _error(self, what: str, exc: psycopg.Error, conn: psycopg.Connection) -> StorageError:
        """A lost connection is an outage (the breaker opens); anything else the call's own."""
        kind = StorageUnavailable if conn.broken else StorageError
        error = kind(f"database {self.where}: {what} failed: {_cause(exc)}")
        error.__cause__ = exc
        return error

    async def _probe(self) -> None:
        """The breaker's background probe: a fresh connection, then a pool of live ones."""

        def probe() -> None:
            pool = self._pool
            if pool is None:
                return  # closed: nothing left to probe
            try:
                self._reach()
            except psycopg.Error as exc:
                raise StorageUnavailable(_cause(exc)) from exc
            pool.check()  # drop the connections the outage broke

        await trio.to_thread.run_sync(probe)


def _borrow(pool: ConnectionPool, reach: Callable[[], None]) -> psycopg.Connection:
    """A pooled connection that just answered a ping.

    After a server restart every idle connection is dead. The pool's own `check` option would
    find them one at a time with a growing back-off (seconds); here the first dead one makes
    the pool test all idle ones at once and replace the dead, so the wait is one reconnect.
    Before that, `reach` tries one connection of its own: a server that is down refuses it at
    once (raises), where the pool would wait its whole timeout for a connection.
    """
    conn = pool.getconn()
    try:
        ConnectionPool.check_connection(conn)
        return conn
    except psycopg.Error:
        pool.putconn(conn)
    reach()
    pool.check()
    return pool.getconn()


def _connect(dsn: str, where: str, connect_timeout: int) -> psycopg.Connection:
    try:
        conn = psycopg.connect(dsn, connect_timeout=connect_timeout)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to {where}: {_cause(exc)}") from exc
    return conn


def _migrate(dsn: str, where: str, connect_timeout: int, target: int) -> int:
    conn = _connect(dsn, where, connect_timeout)
    try:
        _configure(conn)
        with conn.transaction():
            tx = PostgresExecutor(conn)
            # DDL is transactional here: the lock makes a second process wait, then find the
            # schema already migrated.
            tx.rows("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            found, _ = upgrade(tx, "postgres", where, target)
        return found
    except psycopg.Error as exc:
        raise StorageError(f"database {where}: migration failed: {_cause(exc)}") from exc
    finally:
        conn.close()


def _open_pool(dsn: str, where: str, pool_size: int, connect_timeout: int) -> ConnectionPool:
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"connect_timeout": connect_timeout},
        configure=_configure,
        timeout=connect_timeout,
        name="xmppd",
    )
    try:
        pool.open(wait=True, timeout=connect_timeout)
    except psycopg.Error as exc:
        pool.close()
        raise StorageError(f"cannot connect to {where}: {_cause(exc)}") from exc
    return pool
