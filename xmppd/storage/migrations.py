"""Numbered schema migrations shared by the drivers: the same tables in each dialect.

Version N is `MIGRATIONS[N - 1]`; the database records the version it is at in
`schema_version`. Never edit a released entry: append a new one, for both dialects.
Column names that are keywords in PostgreSQL (`user`) are always quoted. Text keys are
`COLLATE "C"` in PostgreSQL so that they sort by code point, as SQLite's BINARY does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from xmppd.storage.base import StorageError

Dialect = Literal["sqlite", "postgres"]


class Executor(Protocol):
    """One open transaction: `?` placeholders in both dialects."""

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]: ...

    def write(self, sql: str, args: Sequence[object] = ()) -> int: ...


@dataclass(frozen=True, slots=True)
class Migration:
    summary: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_PG_KEY = 'TEXT COLLATE "C" NOT NULL'

MIGRATIONS: list[Migration] = [
    Migration(
        "keyval and map stores",
        sqlite=(
            """CREATE TABLE keyval (
                host TEXT NOT NULL, store TEXT NOT NULL, "user" TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (host, store, "user")
            ) WITHOUT ROWID""",
            """CREATE TABLE map (
                host TEXT NOT NULL, store TEXT NOT NULL, "user" TEXT NOT NULL, key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (host, store, "user", key)
            ) WITHOUT ROWID""",
        ),
        postgres=(
            f"""CREATE TABLE keyval (
                host {_PG_KEY}, store {_PG_KEY}, "user" {_PG_KEY},
                value TEXT NOT NULL,
                PRIMARY KEY (host, store, "user")
            )""",
            f"""CREATE TABLE map (
                host {_PG_KEY}, store {_PG_KEY}, "user" {_PG_KEY}, key {_PG_KEY},
                value TEXT NOT NULL,
                PRIMARY KEY (host, store, "user", key)
            )""",
        ),
    ),
    Migration(
        "archive store",
        # seq orders records stamped in the same microsecond and is never reused (AUTOINCREMENT),
        # so a page boundary stays valid while older records are expired. ts is microseconds
        # since the epoch (UTC) in both dialects.
        sqlite=(
            """CREATE TABLE archive (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                host TEXT NOT NULL, store TEXT NOT NULL, owner TEXT NOT NULL,
                id TEXT NOT NULL, ts INTEGER NOT NULL,
                with_bare TEXT NOT NULL, with_full TEXT NOT NULL,
                stanza TEXT NOT NULL
            )""",
            "CREATE UNIQUE INDEX archive_by_id ON archive (host, store, owner, id)",
            "CREATE INDEX archive_by_time ON archive (host, store, owner, ts, seq)",
            "CREATE INDEX archive_by_with ON archive (host, store, owner, with_bare, ts, seq)",
            "CREATE INDEX archive_by_age ON archive (host, store, ts)",
        ),
        postgres=(
            f"""CREATE TABLE archive (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                host {_PG_KEY}, store {_PG_KEY}, owner {_PG_KEY},
                id {_PG_KEY}, ts BIGINT NOT NULL,
                with_bare {_PG_KEY}, with_full {_PG_KEY},
                stanza TEXT NOT NULL
            )""",
            "CREATE UNIQUE INDEX archive_by_id ON archive (host, store, owner, id)",
            "CREATE INDEX archive_by_time ON archive (host, store, owner, ts, seq)",
            "CREATE INDEX archive_by_with ON archive (host, store, owner, with_bare, ts, seq)",
            "CREATE INDEX archive_by_age ON archive (host, store, ts)",
        ),
    ),
]
LATEST_VERSION = len(MIGRATIONS)

_VERSION_TABLE_EXISTS: dict[Dialect, str] = {
    "sqlite": "SELECT EXISTS (SELECT 1 FROM sqlite_master "
    "WHERE type = 'table' AND name = 'schema_version')",
    "postgres": "SELECT to_regclass('schema_version') IS NOT NULL",
}


def current_version(tx: Executor, dialect: Dialect) -> int:
    if not tx.rows(_VERSION_TABLE_EXISTS[dialect])[0][0]:
        return 0
    return int(tx.rows("SELECT MAX(version) FROM schema_version")[0][0] or 0)


def upgrade(
    tx: Executor, dialect: Dialect, where: str, target: int = LATEST_VERSION
) -> tuple[int, int]:
    """Apply the missing migrations up to `target` inside the caller's transaction.

    Returns (from, to). Refuses a schema newer than this code: its tables may mean things
    this version does not know, so writing to them could lose data.
    """
    version = current_version(tx, dialect)
    if version > LATEST_VERSION:
        raise StorageError(
            f"database {where}: schema version {version} is newer than this xmppd "
            f"(knows up to {LATEST_VERSION}); upgrade xmppd"
        )
    if version == 0:
        tx.write("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        tx.write("INSERT INTO schema_version (version) VALUES (0)")
    for migration in MIGRATIONS[version:target]:
        for sql in getattr(migration, dialect):
            tx.write(sql)
    if version < target:
        tx.write("UPDATE schema_version SET version = ?", (target,))
    return version, max(version, target)
