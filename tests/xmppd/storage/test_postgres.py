"""PostgreSQL-only behaviour: reaching the server, the pool, and a real xmppd on PostgreSQL.

What both drivers share is in the parametrized suites beside this file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import trio
from support import ServerProcess, connect, free_port, run

from xmppd.storage import StorageError, open_database
from xmppd.storage.postgres import PostgresDatabase

REPO = Path(__file__).resolve().parents[3]


async def test_closed_port_fails_fast_and_says_where(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageError) as excinfo:
        await open_database(
            tmp_path, driver="postgres", dsn=f"postgresql://xmppd:secret@127.0.0.1:{port}/chat"
        )
    assert time.monotonic() - started < 3
    message = str(excinfo.value)
    assert message.startswith(f"cannot connect to PostgreSQL 127.0.0.1:{port}/chat: ")
    assert "Connection refused" in message
    assert "secret" not in message
    assert "\n" not in message


async def test_silent_server_times_out(tmp_path):
    # The kernel completes the TCP handshake for a listening socket nobody accepts from, so the
    # client waits for a server greeting that never comes: only the connect timeout ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StorageError) as excinfo:
            await open_database(
                tmp_path,
                driver="postgres",
                dsn=f"host=127.0.0.1 port={port} dbname=chat sslmode=disable",
                connect_timeout=2,
            )
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 8
    message = str(excinfo.value)
    assert message.startswith(f"cannot connect to PostgreSQL 127.0.0.1:{port}/chat: ")
    assert "timeout" in message


async def test_missing_database_and_bad_dsn(pg_database, tmp_path):
    missing = pg_database.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(StorageError) as excinfo:
        await open_database(tmp_path, driver="postgres", dsn=missing)
    assert "/no_such_database_here: " in str(excinfo.value)
    assert 'database "no_such_database_here" does not exist' in str(excinfo.value)
    with pytest.raises(StorageError, match="invalid PostgreSQL dsn"):
        await open_database(tmp_path, driver="postgres", dsn="host=127.0.0.1 nonsense")
    with pytest.raises(StorageError, match="needs a dsn"):
        await open_database(tmp_path, driver="postgres")


async def test_synchronous_commit_off_is_overridden(pg_dsn):
    # A role or database configured with synchronous_commit=off would acknowledge writes that
    # a crash can lose; the driver turns it back on for its own connections.
    db = await PostgresDatabase.open(pg_dsn + "%20-csynchronous_commit%3Doff", pool_size=2)
    try:
        show = await db.run("show", lambda tx: tx.rows("SHOW synchronous_commit"))
        assert show == [("on",)]
    finally:
        await db.close()
    with psycopg.connect(pg_dsn + "%20-csynchronous_commit%3Doff") as raw:
        assert raw.execute("SHOW synchronous_commit").fetchone() == ("off",)  # the test is real


async def test_pool_survives_killed_connections(pg_dsn, pg_database):
    db = await PostgresDatabase.open(pg_dsn, pool_size=3)
    store = db.for_host("h").keyval("s")
    try:
        async with trio.open_nursery() as nursery:  # make the pool open several connections
            for i in range(12):
                nursery.start_soon(store.set, f"u{i}", {"i": i})
        name = pg_database.rsplit("/", 1)[1]
        with psycopg.connect(pg_database, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        # Every broken connection is found out before use and replaced: no write fails, and
        # nothing waits for a back-off per dead connection.
        started = time.monotonic()
        for i in range(12):
            await store.set(f"u{i}", {"i": -i})
        assert time.monotonic() - started < 1
        assert [(await store.get(f"u{i}")) for i in range(12)] == [{"i": -i} for i in range(12)]
    finally:
        await db.close()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmppd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_config_needs_a_dsn_for_postgres(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('[storage]\ndriver = "postgres"\n')
    result = cli(config, "migrate")
    assert result.returncode == 78
    assert "storage.dsn: required when driver = 'postgres'" in result.stderr


def test_serve_with_unreachable_database_says_why(tmp_path):
    port = free_port()
    config = tmp_path / "x.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\ndemo_account = false\n'
        f"[c2s]\nport = {free_port()}\ndirect_tls_port = 0\n"
        f'[storage]\ndriver = "postgres"\ndsn = "postgresql://postgres@127.0.0.1:{port}/xmppd"\n'
    )
    result = cli(config, "serve")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"xmppd: storage: cannot connect to PostgreSQL 127.0.0.1:{port}/")
    assert "Traceback" not in result.stderr


def test_server_keeps_accounts_in_postgres(tmp_path, pg_dsn):
    """A real xmppd on PostgreSQL: accounts made by the CLI, logins by slixmpp."""
    server = ServerProcess(
        tmp_path, extra_config=f'[storage]\ndriver = "postgres"\ndsn = "{pg_dsn}"\n'
    )
    server.add_user("juliet", "balcony")
    server.add_user("romeo", "wherefore")
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            'SELECT host, "user" FROM keyval WHERE store = \'accounts\' ORDER BY "user"'
        ).fetchall()
    assert rows == [("localhost", "juliet"), ("localhost", "romeo")]
    server.start()
    try:

        async def scenario() -> None:
            juliet = await connect(server, "juliet", "phone", password="balcony")
            assert juliet.boundjid.full == "juliet@localhost/phone"
            romeo = await connect(server, "romeo", password="wherefore")
            romeo.send_message(mto="juliet@localhost/phone", mbody="hark", mtype="chat")
            assert (await juliet.next_message())["body"] == "hark"
            await juliet.close()
            await romeo.close()
            with pytest.raises(PermissionError):
                await connect(server, "juliet", password="wrong")

        run(scenario())
        # Changed and deleted while the server runs: the server reads PostgreSQL, not a cache.
        assert server.cli("passwd", "juliet@localhost", "--password", "nightingale").returncode == 0
        assert server.cli("deluser", "romeo@localhost").returncode == 0

        async def after() -> None:
            juliet = await connect(server, "juliet", password="nightingale")
            await juliet.close()
            with pytest.raises(PermissionError):
                await connect(server, "juliet", password="balcony")
            with pytest.raises(PermissionError):
                await connect(server, "romeo", password="wherefore")

        run(after())
        assert server.alive()
    finally:
        server.stop()
    assert not list(tmp_path.rglob("*.sqlite"))  # nothing went to a local file
