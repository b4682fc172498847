"""SQLite driver: one database file shared by all virtual hosts.

Theory of operation: the database owns one `sqlite3` connection and a `CapacityLimiter(1)`.
Every sqlite3 call goes through `run`, i.e. `trio.to_thread.run_sync` under that limiter, so
the trio loop never blocks on disk and the connection is never used by two threads at once.
Calls are group-committed (`batch.py`): those arriving while a commit is in flight run
together in the next transaction, each in a savepoint, with one commit (and one fsync, see
`_configure`) for all; each returns only after that commit. A lone call is one transaction
of its own (the connection is in autocommit mode, `isolation_level=None`, so `BEGIN` and
`COMMIT` are explicit).
The stores themselves are shared with the PostgreSQL driver (`sql.py`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from xmppd.storage.base import StorageError
from xmppd.storage.batch import GroupCommit, Job, fail_all
from xmppd.storage.migrations import LATEST_VERSION, Executor, upgrade
from xmppd.storage.sql import SQLStorage

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000

__all__ = ["LATEST_VERSION", "SQLiteDatabase"]


class SQLiteExecutor:
    __slots__ = ("conn",)
    row_lock = ""  # one connection, transactions BEGIN IMMEDIATE: nothing to lock

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(sql, args).fetchall()

    def write(self, sql: str, args: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, args).rowcount


class SQLiteDatabase:
    """An open SQLite database; `for_host` gives the per-host `Storage`."""

    __slots__ = ("path", "migrated_from", "spool_dir", "_conn", "_limiter", "group")

    def __init__(self, path: Path, conn: sqlite3.Connection, limiter: trio.CapacityLimiter):
        self.path = path
        self.migrated_from = LATEST_VERSION  # the schema version found at open
        self.spool_dir: Path | None = path.parent / "spool"  # see spool.py
        self._conn: sqlite3.Connection | None = conn
        self._limiter = limiter
        self.group = GroupCommit(self._run_batch, limiter)

    @property
    def where(self) -> str:
        return str(self.path)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, target: int = LATEST_VERSION
    ) -> SQLiteDatabase:
        """Open or create the file, then bring its schema up to date (or to `target`).

        Raises StorageError naming the path and the cause if the file cannot be created, is not
        a database, is not writable, or was written by a newer xmppd.
        """
        db_path = Path(path)
        limiter = trio.CapacityLimiter(1)
        conn, found = await trio.to_thread.run_sync(
            _connect_and_migrate, db_path, target, limiter=limiter
        )
        db = cls(db_path, conn, limiter)
        db.migrated_from = found
        return db

    def for_host(self, host: str) -> SQLStorage:
        return SQLStorage(self, host)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Under the limiter: waits for the operation in flight, never closes beneath it.
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def run(self, what: str, fn: Callable[[Executor], T]) -> T:
        """Run `fn(executor)` in the database's worker thread, group-committed with the calls
        made meanwhile; sqlite errors -> StorageError."""
        return await self.group.submit(Job(what, fn))

    def _run_batch(self, jobs: list[Job[object]]) -> None:
        """In the worker thread: one transaction for all jobs, a savepoint each."""
        conn = self._conn
        if conn is None:
            for job in jobs:
                job.error = StorageError(f"database {self.path} is closed")
            return
        executor = SQLiteExecutor(conn)
        if len(jobs) == 1:
            self._run_alone(jobs[0], executor)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            for job in jobs:
                self._run_alone(job, executor)
            return
        try:
            for job in jobs:
                if not self._run_in_savepoint(conn, job, executor):
                    return fail_all(jobs, job.error)  # the transaction is gone with its jobs
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            fail_all(jobs, self._error("commit", exc))

    def _run_alone(self, job: Job[object], executor: SQLiteExecutor) -> None:
        """One job, one transaction: a job of several statements (both sides of a message)
        lands whole or not at all, with one commit."""
        conn = executor.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            job.result = job.fn(executor)
            conn.execute("COMMIT")
        except Exception as exc:
            job.result = None
            job.error = self._error(job.what, exc) if isinstance(exc, sqlite3.Error) else exc
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # reported by the next call
                    conn.execute("ROLLBACK")

    def _run_in_savepoint(self, conn: sqlite3.Connection, job: Job[object], ex: Executor) -> bool:
        """Run one job of a batch; False when its failure took the whole transaction."""
        conn.execute("SAVEPOINT job")
        try:
            job.result = job.fn(ex)
        except Exception as exc:
            job.error = self._error(job.what, exc) if isinstance(exc, sqlite3.Error) else exc
            if not conn.in_transaction:  # SQLite rolled it all back (disk full, I/O error)
                return False
            conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return True

    def _error(self, what: str, exc: sqlite3.Error) -> StorageError:
        error = StorageError(f"database {self.path}: {what} failed: {exc}")
        error.__cause__ = exc
        return error

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`run` with the raw connection (also for tests and maintenance)."""

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise StorageError(f"database {self.path} is closed")
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: {what} failed: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)


def _connect_and_migrate(path: Path, target: int) -> tuple[sqlite3.Connection, int]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory for database {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    try:
        _configure(conn)
        found = _migrate(conn, path, target)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn, found


def _configure(conn: sqlite3.Connection) -> None:
    # Another process (e.g. `xmppd adduser` while the server runs) may hold the write lock
    # briefly: wait for it instead of failing at once.
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # WAL: readers never block the writer and a commit is one sequential append.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot enable WAL journal mode (got {mode!r})")
    # In WAL mode synchronous=NORMAL only fsyncs at checkpoints, so a power loss can drop
    # commits we already acknowledged (a stored message, a changed password). FULL fsyncs the
    # WAL on every commit: once `set` returns, the write survives a crash or power loss.
    conn.execute("PRAGMA synchronous = FULL")


def _migrate(conn: sqlite3.Connection, path: Path, target: int) -> int:
    # IMMEDIATE takes the write lock first, so two processes opening a fresh file at once
    # cannot both apply the same migration.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found, _ = upgrade(SQLiteExecutor(conn), "sqlite", str(path), target)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    return found
