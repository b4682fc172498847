"""Storage: the driver factory and the error every driver raises.

Modules open stores by kind (`keyval`, `map`) on a host-scoped `Storage` (see `base.py`); only the
server wiring calls `open_database` and `Database.for_host`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from xmppd.storage.base import Storage

DEFAULT_SQLITE_FILE = "xmppd.sqlite"


class StorageError(Exception):
    """The database cannot be opened, migrated, read or written; the message names the cause."""


class Database(Protocol):
    """One open database shared by all virtual hosts."""

    def for_host(self, host: str) -> Storage: ...

    async def close(self) -> None: ...


async def open_database(
    config_data_dir: str | Path, *, driver: str = "sqlite", dsn: str | None = None
) -> Database:
    """Open (creating and migrating as needed) the database named by the config.

    sqlite: `dsn` is a file path (relative paths are under the data dir); by default
    `<data dir>/xmppd.sqlite`.
    """
    if driver == "sqlite":
        # Imported here so that importing this package stays cheap and cycle-free.
        from xmppd.storage.sqlite import SQLiteDatabase

        data_dir = Path(config_data_dir)
        path = data_dir / (dsn or DEFAULT_SQLITE_FILE)
        return await SQLiteDatabase.open(path)
    if driver in ("postgres", "postgresql"):
        raise StorageError("storage driver 'postgres' is not supported yet; use driver = 'sqlite'")
    raise StorageError(f"unknown storage driver {driver!r}; known: 'sqlite'")


__all__ = ["Database", "StorageError", "open_database"]
