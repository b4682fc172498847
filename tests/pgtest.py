"""A PostgreSQL database made for a test (or a test run) and dropped afterwards, on the server
this machine runs (XMPPD_TEST_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/postgres)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
from psycopg import sql

ADMIN_DSN = os.environ.get(
    "XMPPD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=5"
)


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The URL (no query string) of a new database named `<prefix>_<pid>_<random>`."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        url = f"postgresql://{quote(info.user)}@{info.host}:{info.port}/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
