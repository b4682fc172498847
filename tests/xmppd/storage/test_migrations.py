"""Numbered schema migrations on both drivers, at open and through `xmppd migrate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xmppd.storage import StorageError
from xmppd.storage.migrations import LATEST_VERSION, MIGRATIONS

REPO = Path(__file__).resolve().parents[3]


async def version_of(db) -> int:
    return await db.run(
        "version", lambda tx: tx.rows("SELECT MAX(version) FROM schema_version")[0][0]
    )


def set_version(backend, version: int) -> None:
    backend.execute("UPDATE schema_version SET version = ?", (version,))


def test_every_migration_has_both_dialects():
    assert LATEST_VERSION == len(MIGRATIONS) >= 2
    for migration in MIGRATIONS:
        assert migration.summary
        assert len(migration.sqlite) == len(migration.postgres) > 0


async def test_fresh_database_gets_latest_version(backend):
    db = await backend.open()
    try:
        assert db.migrated_from == 0
        assert await version_of(db) == LATEST_VERSION
    finally:
        await db.close()
    db = await backend.open()  # reopening an up-to-date database changes nothing
    try:
        assert db.migrated_from == LATEST_VERSION
        assert await version_of(db) == LATEST_VERSION
    finally:
        await db.close()


async def test_old_schema_is_upgraded_keeping_data(backend):
    old = await backend.open(target=1)  # what the first release created: no archive table
    try:
        await old.for_host("h").keyval("accounts").set("juliet", {"pw": "x"})
        with pytest.raises(StorageError, match="archive append failed"):
            await (
                old.for_host("h").archive("mam").append("juliet", with_jid="r@x", stanza_xml="<a/>")
            )
    finally:
        await old.close()
    db = await backend.open()
    try:
        assert (db.migrated_from, await version_of(db)) == (1, LATEST_VERSION)
        assert await db.for_host("h").keyval("accounts").get("juliet") == {"pw": "x"}
        archive = db.for_host("h").archive("mam")
        record = await archive.append("juliet", with_jid="r@x", stanza_xml="<a/>")
        assert [i.id for i in (await archive.query("juliet")).items] == [record]
    finally:
        await db.close()


async def test_newer_schema_refused(backend):
    db = await backend.open()
    await db.for_host("h").keyval("s").set("u", {"keep": True})
    where = db.where
    await db.close()
    newer = LATEST_VERSION + 5
    set_version(backend, newer)
    with pytest.raises(StorageError) as excinfo:
        await backend.open()
    assert str(excinfo.value) == (
        f"database {where}: schema version {newer} is newer than this xmppd "
        f"(knows up to {LATEST_VERSION}); upgrade xmppd"
    )
    assert backend.execute("SELECT version FROM schema_version") == [(newer,)]  # untouched
    set_version(backend, LATEST_VERSION)
    db = await backend.open()
    try:
        assert await db.for_host("h").keyval("s").get("u") == {"keep": True}
    finally:
        await db.close()


def storage_config(backend) -> str:
    if backend.driver == "sqlite":
        return f'[storage]\npath = "{backend.dsn}"\n'
    return f'[storage]\ndriver = "postgres"\ndsn = "{backend.dsn}"\npool_size = 2\n'


def xmppd(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "xmppd.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{config}')
    return subprocess.run(
        [sys.executable, "-m", "xmppd", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


async def test_migrate_command(backend, tmp_path):
    old = await backend.open(target=1)
    where = old.where
    await old.close()
    config = storage_config(backend)

    done = xmppd(tmp_path, config, "migrate")
    assert done.returncode == 0, done.stderr
    steps = "".join(f"  {n}: {MIGRATIONS[n - 1].summary}\n" for n in range(2, LATEST_VERSION + 1))
    assert done.stdout == (
        f"{where}: migrated the schema from version 1 to {LATEST_VERSION}\n{steps}"
    )

    again = xmppd(tmp_path, config, "migrate")
    assert (again.returncode, again.stdout) == (
        0,
        f"{where}: schema version {LATEST_VERSION}, up to date\n",
    )

    set_version(backend, LATEST_VERSION + 1)
    refused = xmppd(tmp_path, config, "migrate")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"xmppd: storage: database {where}: schema version {LATEST_VERSION + 1} is newer than "
        f"this xmppd (knows up to {LATEST_VERSION}); upgrade xmppd\n"
    )


def test_migrate_creates_a_fresh_sqlite_database(tmp_path):
    done = xmppd(tmp_path, "", "migrate")
    path = tmp_path / "data" / "xmppd.sqlite"
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: migrated the schema from version 0 to {LATEST_VERSION}")
    assert path.is_file()
