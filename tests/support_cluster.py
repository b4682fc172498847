"""Cluster nodes (tests/xmppd/cluster/) as real xmppd processes sharing the real Redis and a fresh PostgreSQL database.

`nodes` starts two nodes ("n1", "n2") with short gossip periods (heartbeat 0.2 s, down after
2 s) under a Redis prefix of their own, so parallel runs never meet. Accounts made through
either node's CLI land in the shared database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from support import ServerProcess

ADMIN_DSN = os.environ.get(
    "XMPPD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=5"
)
REDIS = "redis://127.0.0.1:6379/0"
HEARTBEAT, DOWN = 0.2, 2.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database made for one test, dropped afterwards."""
    name = f"xmppd_cluster_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        url = f"postgresql://{quote(info.user)}@{info.host}:{info.port}/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def cluster_config(pg_url: str, node: str, prefix: str, redis: str = REDIS) -> str:
    # ServerProcess appends this after its [c2s] keys: new tables from here on.
    return f"""
[storage]
driver = "postgres"
dsn = "{pg_url}"

[cluster]
enabled = true
node = "{node}"
redis = ["{redis}"]
prefix = "{prefix}"
heartbeat = {HEARTBEAT}
down_period = {DOWN}
permdown_period = 60
"""


def make_node(base: Path, pg_url: str, node: str, prefix: str) -> ServerProcess:
    (base / node).mkdir(exist_ok=True)
    return ServerProcess(base / node, extra_config=cluster_config(pg_url, node, prefix))


@pytest.fixture
def prefix() -> str:
    return f"xmppd-test-{uuid.uuid4().hex}"


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str, prefix: str) -> Iterator[list[ServerProcess]]:
    procs = [make_node(tmp_path, pg_url, name, prefix) for name in ("n1", "n2")]
    try:
        for proc in procs:  # one after the other: the first one migrates the database
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()
