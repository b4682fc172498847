"""One storage suite, two drivers: `db` and `backend` run each test on SQLite and PostgreSQL.

PostgreSQL: the server on this machine (XMPPD_TEST_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/postgres). One fresh database per test run, named
uniquely and dropped at the end; inside it, one fresh schema per test (through `search_path`
in the DSN), so every test starts empty and migrations start from nothing. Set
XMPPD_TEST_NO_POSTGRES=1 to skip the PostgreSQL half where no server exists; otherwise an
unreachable server fails these tests rather than hiding them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pgtest import fresh_database
from psycopg import sql

from xmppd.storage import Database, open_database
from xmppd.storage.migrations import LATEST_VERSION
from xmppd.storage.postgres import PostgresDatabase
from xmppd.storage.sqlite import SQLiteDatabase


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a database created for this test run (without a query string)."""
    if os.environ.get("XMPPD_TEST_NO_POSTGRES") == "1":
        pytest.skip("XMPPD_TEST_NO_POSTGRES=1")
    with fresh_database("xmppd_test") as url:
        yield url


@pytest.fixture
def pg_dsn(pg_database: str) -> Iterator[str]:
    """A DSN whose tables land in a fresh schema of the run's database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield f"{pg_database}?options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Backend:
    """How to open (and reopen) the one database a test works on."""

    driver: str
    dsn: str  # a file path for sqlite

    async def open(self, target: int = LATEST_VERSION) -> Database:
        if self.driver == "sqlite":
            return await SQLiteDatabase.open(self.dsn, target=target)
        return await PostgresDatabase.open(self.dsn, pool_size=4, target=target)

    async def open_configured(self, data_dir: Path) -> Database:
        """Through the factory, as the server does."""
        return await open_database(data_dir, driver=self.driver, dsn=self.dsn)

    def execute(self, query: str, args: tuple = ()) -> list[tuple]:
        """One statement on a connection of its own, bypassing the driver (`?` placeholders)."""
        if self.driver == "sqlite":
            with closing(sqlite3.connect(self.dsn)) as conn, conn:
                return conn.execute(query, args).fetchall()
        with psycopg.connect(self.dsn) as conn:
            cursor = conn.execute(query.replace("?", "%s"), args)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "db" / "xmppd.sqlite"))
    return Backend("postgres", request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def db(backend: Backend):
    database = await backend.open()
    yield database
    await database.close()
