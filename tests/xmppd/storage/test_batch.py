"""Group commit (xmppd/storage/batch.py) on both drivers: concurrent calls share transactions,
each still fails alone, and a call that returned survives SIGKILL."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import trio

from xmppd.storage.base import StorageError, UnknownArchiveId


async def test_concurrent_writes_share_commits_and_all_land(db, backend) -> None:
    store = db.for_host("example.org").keyval("accounts")
    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(store.set, f"user{n}", {"n": n})
    assert db.group.jobs >= 200
    assert db.group.batches < db.group.jobs / 4  # writes really were grouped
    rows = backend.execute("SELECT COUNT(*) FROM keyval WHERE store = 'accounts'")
    assert rows[0][0] == 200


async def test_a_failing_call_in_a_batch_fails_alone(db, backend) -> None:
    storage = db.for_host("example.org")
    store, archive = storage.keyval("k"), storage.archive("mam")
    outcomes: dict[str, object] = {}

    async def attempt(name: str, coro_fn, *args) -> None:
        try:
            outcomes[name] = await coro_fn(*args)
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(attempt, f"set{n}", store.set, f"u{n}", {"n": n})
        nursery.start_soon(attempt, "bad-id", functools.partial(archive.query, after_id="x"), "u1")
        nursery.start_soon(attempt, "bad-doc", store.set, "u99", ["not", "a", "dict"])
        for n in range(20, 40):
            nursery.start_soon(attempt, f"set{n}", store.set, f"u{n}", {"n": n})
    assert isinstance(outcomes["bad-id"], UnknownArchiveId)
    assert isinstance(outcomes["bad-doc"], TypeError)
    assert all(outcomes[f"set{n}"] is None for n in range(40))
    rows = backend.execute("SELECT COUNT(*) FROM keyval WHERE store = 'k'")
    assert rows[0][0] == 40


async def test_a_failing_statement_rolls_back_only_its_own_savepoint(db, backend) -> None:
    """A constraint violation in one job of a batch leaves the others' writes committed."""
    archive = db.for_host("example.org").archive("mam")
    await archive.append("u1", with_jid="a@b", stanza_xml="<m/>", stanza_id="dup")
    results: list[object] = []

    async def append(stanza_id: str) -> None:
        try:
            results.append(
                await archive.append("u1", with_jid="a@b", stanza_xml="<m/>", stanza_id=stanza_id)
            )
        except StorageError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(append, f"id{n}")
        nursery.start_soon(append, "dup")  # (host, store, owner, id) is unique
        for n in range(10, 20):
            nursery.start_soon(append, f"id{n}")
    assert sum(isinstance(r, StorageError) for r in results) == 1
    page = await archive.query("u1")
    assert len(page.items) == 21


async def test_a_cancelled_caller_still_gets_its_write_done(db) -> None:
    store = db.for_host("example.org").keyval("k")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(store.set, f"u{n}", {"n": n})
            await trio.sleep(0)
            scope.cancel()
    for n in range(50):  # nothing queued was dropped, nothing is left waiting
        assert await store.get(f"u{n}") == {"n": n}


WRITER = textwrap.dedent(
    """
    import sys, trio
    from xmppd.storage import open_database
    from pathlib import Path

    async def writer(store, w):
        for n in range(100000):
            await store.append("owner", with_jid="a@b", stanza_xml="<m/>", stanza_id=f"{w}-{n}")
            print(f"{w}-{n}", flush=True)  # acknowledged: the append returned

    async def main():
        db = await open_database(Path(sys.argv[1]), driver=sys.argv[2], dsn=sys.argv[3])
        store = db.for_host("example.org").archive("mam")
        async with trio.open_nursery() as nursery:
            for w in range(40):
                nursery.start_soon(writer, store, w)

    trio.run(main)
    """
)


def test_every_acknowledged_write_survives_sigkill(backend, tmp_path) -> None:
    """40 concurrent writers, killed with SIGKILL mid-load: every append that returned is there."""
    dsn = backend.dsn if backend.driver == "postgres" else str(tmp_path / "crash.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), backend.driver, dsn],
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) >= 3000:
            break
    proc.kill()
    proc.wait()
    acknowledged.extend(line.strip() for line in proc.stdout if line.endswith("\n"))
    if backend.driver == "sqlite":
        backend.dsn = dsn
    stored = {row[0] for row in backend.execute("SELECT id FROM archive WHERE owner = 'owner'")}
    missing = [key for key in acknowledged if key not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
