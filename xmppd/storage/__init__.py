"""Storage: the driver factory and the error every driver raises.

Modules open stores by kind (`keyval`, `map`, `archive`) on a host-scoped `Storage` (see
`base.py`); only the server wiring and the CLI call `open_database` and `Database.for_host`.
Drivers: `sqlite.py` (default) and `postgres.py`, both over the shared stores in `sql.py` and
the numbered migrations in `migrations.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from xmppd.storage.base import Storage, StorageError, StorageUnavailable, UnknownArchiveId

DEFAULT_SQLITE_FILE = "xmppd.sqlite"
DRIVERS = ("sqlite", "postgres")


class Database(Protocol):
    """One open database shared by all virtual hosts."""

    where: str  # the file, or PostgreSQL host:port/dbname, for messages
    spool_dir: Path | None  # where records wait while the database is unreachable (spool.py)
    migrated_from: int  # the schema version found at open (now at migrations.LATEST_VERSION)

    def for_host(self, host: str) -> Storage: ...

    async def close(self) -> None: ...


async def open_database(
    config_data_dir: str | Path,
    *,
    driver: str = "sqlite",
    dsn: str | None = None,
    pool_size: int | None = None,
    connect_timeout: int | None = None,
    retry_interval: float | None = None,
) -> Database:
    """Open (creating and migrating as needed) the database named by the config.

    sqlite: `dsn` is a file path (relative paths are under the data dir); by default
    `<data dir>/xmppd.sqlite`. postgres: `dsn` is a libpq connection string or
    `postgresql://` URL; `pool_size` and `connect_timeout` (seconds) size the pool;
    `retry_interval` (seconds) is how often an unreachable server is probed (`breaker.py`).
    """
    # Drivers are imported here so that importing this package stays cheap and cycle-free,
    # and a SQLite deployment never imports psycopg.
    if driver == "sqlite":
        from xmppd.storage.sqlite import SQLiteDatabase

        sqlite_db = await SQLiteDatabase.open(Path(config_data_dir) / (dsn or DEFAULT_SQLITE_FILE))
        sqlite_db.spool_dir = Path(config_data_dir) / "spool"
        return sqlite_db
    if driver in ("postgres", "postgresql"):
        from xmppd.storage import postgres

        if not dsn:
            raise StorageError("storage driver 'postgres' needs a dsn (connection string)")
        db = await postgres.PostgresDatabase.open(
            dsn,
            pool_size=pool_size or postgres.DEFAULT_POOL_SIZE,
            connect_timeout=connect_timeout or postgres.DEFAULT_CONNECT_TIMEOUT,
            retry_interval=retry_interval or postgres.DEFAULT_RETRY_INTERVAL,
        )
        db.spool_dir = Path(config_data_dir) / "spool"
        return db
    raise StorageError(f"unknown storage driver {driver!r}; known: {', '.join(DRIVERS)}")


__all__ = [
    "DRIVERS",
    "Database",
    "StorageError",
    "StorageUnavailable",
    "UnknownArchiveId",
    "open_database",
]
