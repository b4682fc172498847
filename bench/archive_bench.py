"""Archive store benchmark (not a test): append throughput and MAM query latency at 1M rows,
SQLite vs PostgreSQL, through the storage API the server uses.

    python bench/archive_bench.py                       # both drivers, 1,000,000 rows
    python bench/archive_bench.py --drivers sqlite --rows 100000 --appends 2000   # quick look

Per driver, on a fresh database (SQLite: a file in a temp dir; PostgreSQL: a database created
on --pg-admin's server for the run and dropped after it):

1. fill: `--rows` records over `--owners` owners with `--peers` correspondents each, one year
   of history in time order, ~300-byte chat stanzas. Bulk loaded (one transaction per 50,000
   rows; COPY on PostgreSQL) in the exact row format `append` writes, because one fsynced
   commit per row would take hours; the fill rate is printed but is not the append figure.
2. append: `--appends` calls of `ArchiveStore.append` (one commit, durable on return, as the
   server does per message) with 1 writer and with N concurrent writers (trio tasks sharing
   the one database object, as the server's sessions do): messages/s and per-call latency.
3. query: `--queries` calls each, one at a time, of the MAM query shapes at the full size:
   latest page of 50, page of 50 before / after a known id, one peer's latest page, one peer
   in a 30-day time range. Median and p99 in ms.

The machine's load average is recorded before and after each phase: on a shared machine the
figures move with it. Results go to stdout and to bench/results/archive-<date>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import trio
from psycopg import sql

from xmppd.storage import Database, open_database
from xmppd.storage.base import ArchiveStore
from xmppd.storage.sql import to_micros

HOST = "localhost"  # the domain tests/support.py gives a server
STORE = "mam"
CHUNK = 50_000
ROOT = Path(__file__).resolve().parent
TEXT = (
    "ok sure see you tomorrow at the station did you get my mail about the meeting i think we "
    "should move it to thursday because the report is not ready yet lunch sounds good"
)
WORDS = TEXT.split()
COLUMNS = ("host", "store", "owner", "id", "ts", "with_bare", "with_full", "stanza")


# ---- data ---------------------------------------------------------------------------------------


def owner_name(i: int) -> str:
    return f"user{i}"


def peer_of(owner: int, k: int) -> str:
    return f"friend{(owner * 7 + k * 131) % 5000}@other.example"


def stanza(owner: str, peer: str, rng: random.Random, incoming: bool) -> str:
    """A chat message as the archive keeps it, about 300 bytes."""
    me = f"{owner}@{HOST}/phone-{owner[-2:]}"
    frm, to = (f"{peer}/laptop", me) if incoming else (me, peer)
    body = " ".join(rng.choices(WORDS, k=rng.randint(6, 16)))
    return (
        f'<message xmlns="jabber:client" from="{frm}" to="{to}" type="chat" '
        f'id="{uuid.uuid4().hex[:12]}"><body>{body}</body>'
        f'<origin-id xmlns="urn:xmpp:sid:0" id="{uuid.uuid4()}"/>'
        f'<active xmlns="http://jabber.org/protocol/chatstates"/></message>'
    )


@dataclass
class Fill:
    """What the queries need to know about the filled data."""

    first: datetime
    last: datetime
    samples: list[tuple[str, str]] = field(default_factory=list)  # (owner, id) for paging
    rows: int = 0


def rows(args: argparse.Namespace, fill: Fill, start: int, count: int, rng: random.Random):
    """Rows `start`..`start+count` of the year, in time order, as `append` would store them."""
    span = to_micros(fill.last) - to_micros(fill.first)
    base = to_micros(fill.first)
    for i in range(start, start + count):
        o = rng.randrange(args.owners)
        owner, peer = owner_name(o), peer_of(o, rng.randrange(args.peers))
        incoming = rng.random() < 0.5
        record_id = str(uuid.uuid4())
        if i % 50 == 0:
            fill.samples.append((owner, record_id))
        with_full = f"{peer}/laptop" if incoming else peer
        ts = base + span * i // args.rows
        xml = stanza(owner, peer, rng, incoming)
        yield (HOST, STORE, owner, record_id, ts, peer, with_full, xml)


def load_chunk(db: Database, driver: str, batch: list[tuple]) -> Awaitable[None]:
    """One transaction of many rows, through the driver's own connection and thread."""
    insert = f"INSERT INTO archive ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 8)})"

    def sqlite_fn(tx) -> None:
        tx.conn.execute("BEGIN")
        tx.conn.executemany(insert, batch)
        tx.conn.execute("COMMIT")

    def pg_fn(tx) -> None:
        copy_sql = f"COPY archive ({', '.join(COLUMNS)}) FROM STDIN"
        with tx.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in batch:
                copy.write_row(row)

    return db.run("bench fill", sqlite_fn if driver == "sqlite" else pg_fn)  # type: ignore[attr-defined]


async def fill_database(db: Database, driver: str, args: argparse.Namespace, out: Report) -> Fill:
    now = datetime.now(UTC)
    fill = Fill(first=now - timedelta(days=365), last=now - timedelta(minutes=5))
    rng = random.Random(1)
    started = time.perf_counter()
    for start in range(0, args.rows, CHUNK):
        batch = list(rows(args, fill, start, min(CHUNK, args.rows - start), rng))
        await load_chunk(db, driver, batch)
        fill.rows += len(batch)
        if start and start % (CHUNK * 4) == 0:
            print(f"  filled {fill.rows:,} rows", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    rate = fill.rows / elapsed
    out.line(f"fill: {fill.rows:,} rows in {elapsed:.1f} s ({rate:,.0f} rows/s, bulk)")
    if driver == "postgres":
        await db.run("bench analyze", lambda tx: tx.write("ANALYZE archive"))  # type: ignore[attr-defined]
    return fill


# ---- measuring ----------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def load(self, when: str) -> None:
        one, five, fifteen = os.getloadavg()
        self.line(f"  [load {when}: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus]")


def ms(seconds: list[float]) -> str:
    seconds = sorted(seconds)
    median = statistics.median(seconds) * 1000
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000
    return f"median {median:7.2f} ms  p99 {p99:7.2f} ms"


async def measure_appends(
    store: ArchiveStore, args: argparse.Namespace, writers: int, out: Report
) -> None:
    rng = random.Random(writers)
    latencies: list[float] = []
    per_task = args.appends // writers

    async def writer() -> None:
        for _ in range(per_task):
            o = rng.randrange(args.owners)
            owner, peer = owner_name(o), peer_of(o, rng.randrange(args.peers))
            xml = stanza(owner, peer, rng, incoming=True)
            t0 = time.perf_counter()
            await store.append(owner, with_jid=f"{peer}/laptop", stanza_xml=xml)
            latencies.append(time.perf_counter() - t0)

    out.load("before")
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer)
    elapsed = time.perf_counter() - started
    done = per_task * writers
    out.line(
        f"append, {writers:>2} writer(s): {done / elapsed:8,.0f} msg/s "
        f"({done:,} appends in {elapsed:.1f} s); per call {ms(latencies)}"
    )
    out.load("after")


def query_shapes(
    store: ArchiveStore, fill: Fill, args: argparse.Namespace
) -> dict[str, Callable[[random.Random], Awaitable[object]]]:
    """The MAM query shapes, each drawing its owner/id/peer/range from the given rng."""

    def owner(rng: random.Random) -> str:
        return owner_name(rng.randrange(args.owners))

    def peer(rng: random.Random) -> tuple[str, str]:
        o = rng.randrange(args.owners)
        return owner_name(o), peer_of(o, rng.randrange(args.peers))

    async def latest(rng: random.Random) -> object:
        return await store.query(owner(rng), limit=50, backward=True)

    async def before(rng: random.Random) -> object:
        who, record_id = rng.choice(fill.samples)
        return await store.query(who, before_id=record_id, limit=50, backward=True)

    async def after(rng: random.Random) -> object:
        who, record_id = rng.choice(fill.samples)
        return await store.query(who, after_id=record_id, limit=50)

    async def with_latest(rng: random.Random) -> object:
        who, jid = peer(rng)
        return await store.query(who, with_jid=jid, limit=50, backward=True)

    async def with_range(rng: random.Random) -> object:
        who, jid = peer(rng)
        start = fill.first + timedelta(days=rng.uniform(0, 330))
        return await store.query(
            who, with_jid=jid, start=start, end=start + timedelta(days=30), limit=50
        )

    async def range_only(rng: random.Random) -> object:
        start = fill.first + timedelta(days=rng.uniform(0, 358))
        return await store.query(owner(rng), start=start, end=start + timedelta(days=7), limit=50)

    return {
        "latest page of 50": latest,
        "50 before an id": before,
        "50 after an id": after,
        "with=peer, latest 50": with_latest,
        "with=peer + 30-day range": with_range,
        "7-day range, first 50": range_only,
    }


async def measure_queries(
    store: ArchiveStore, fill: Fill, args: argparse.Namespace, out: Report
) -> None:
    out.load("before")
    for name, shape in query_shapes(store, fill, args).items():
        rng = random.Random(name)
        for _ in range(5):  # warm the caches the way a running server has them warm
            await shape(rng)
        latencies, items = [], 0
        for _ in range(args.queries):
            t0 = time.perf_counter()
            page = await shape(rng)
            latencies.append(time.perf_counter() - t0)
            items += len(page.items)  # type: ignore[attr-defined]
        avg = items / args.queries
        out.line(f"query {name:<26} {ms(latencies)}  ({avg:.1f} items/page)")
    out.load("after")


# ---- end to end ---------------------------------------------------------------------------------

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"


async def measure_e2e(base: Path, storage: str, queries: int, out: Report) -> None:
    """The MAM "latest page of 50" query (RSM <before/>) of user0 through a real xmppd on the
    filled database, from a slixmpp client over c2s: iq sent until the <fin/> is read, so it
    includes the 50 result messages and the client's parsing of them."""
    sys.path.insert(0, str(ROOT.parent / "tests"))
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath
    from support import ServerProcess, connect

    (base / "server").mkdir()
    server = ServerProcess(base / "server", extra_config=storage)
    config = server.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
    server.config_path.write_text(config)
    server.add_user("user0", "bench-password")
    server.start()
    try:
        client = await connect(server, "user0", password="bench-password", presence=False)
        results: list[object] = []
        xpath = f"{{jabber:client}}message/{{{MAM}}}result"
        client.register_handler(Callback("mam results", MatchXPath(xpath), results.append))
        latencies = []
        for i in range(queries + 5):  # the first few warm the server's caches
            iq = client.make_iq_set()
            query = ET.SubElement(iq.xml, f"{{{MAM}}}query", queryid=f"q{i}")
            rsm = ET.SubElement(query, f"{{{RSM}}}set")
            ET.SubElement(rsm, f"{{{RSM}}}max").text = "50"
            ET.SubElement(rsm, f"{{{RSM}}}before")
            started = time.perf_counter()
            await iq.send(timeout=30)
            if i >= 5:
                latencies.append(time.perf_counter() - started)
        await client.close()
        per_page = len(results) / (queries + 5)
        out.line(f"e2e MAM latest page of 50   {ms(latencies)}  ({per_page:.1f} items/page)")
    finally:
        server.stop()


# ---- databases ----------------------------------------------------------------------------------


def bench_driver(driver: str, args: argparse.Namespace, out: Report) -> None:
    out.line("")
    out.line(f"== {driver} ==")
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        dsn, drop = None, None
        if driver == "postgres":
            dsn, drop = create_pg_database(args.pg_admin)
            out.line(f"database: {dsn.split('@')[-1]} (created for this run)")
        else:
            out.line(f"database: {tmp}/xmppd.sqlite (synchronous=FULL, WAL)")
        try:
            trio.run(bench_store, driver, dsn, tmp, args, out)
            if args.e2e:
                extra = f'path = "{tmp}/xmppd.sqlite"' if dsn is None else f'dsn = "{dsn}"'
                storage = f'[storage]\ndriver = "{driver}"\n{extra}\n'
                asyncio.run(measure_e2e(Path(tmp), storage, args.queries, out))
        finally:
            if drop is not None:
                drop()


async def bench_store(
    driver: str, dsn: str | None, tmp: str, args: argparse.Namespace, out: Report
) -> None:
    db = await open_database(tmp, driver=driver, dsn=dsn)
    try:
        store = db.for_host(HOST).archive(STORE)
        fill = await fill_database(db, driver, args, out)
        check = await store.query(owner_name(0), limit=1, backward=True)
        assert check.items and check.items[0].timestamp <= fill.last, "fill unreadable"
        for writers in args.writers:
            await measure_appends(store, args, writers, out)
        await measure_queries(store, fill, args, out)
        if driver == "sqlite":
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
            out.line(f"size on disk: {size / 2**20:,.0f} MiB (file + WAL)")
    finally:
        await db.close()


def create_pg_database(admin_dsn: str) -> tuple[str, Callable[[], None]]:
    name = f"xmppd_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        dsn = f"postgresql://{quote(info.user)}@{info.host}:{info.port}/{name}"

    def drop() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    return dsn, drop


def environment(args: argparse.Namespace) -> list[str]:
    lines = [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.platform()}; "
        f"Python {platform.python_version()}; {os.cpu_count()} cpus",
        f"rows {args.rows:,}, owners {args.owners:,}, peers/owner {args.peers}, "
        f"appends {args.appends:,} per configuration, queries {args.queries} per shape",
    ]
    try:
        with psycopg.connect(args.pg_admin) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        lines.append(f"PostgreSQL {version[0]}, synchronous_commit={sync[0]}, same machine")
    except psycopg.Error:
        pass
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", default="sqlite,postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--writers", default="1,16", help="comma-separated writer counts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "XMPPD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--e2e", action="store_true", help="also time a MAM query through a real xmppd"
    )
    parser.add_argument("--output", help="default: bench/results/archive-<date>.txt")
    args = parser.parse_args()
    args.writers = [int(w) for w in args.writers.split(",")]
    out = Report()
    for text in environment(args):
        out.line(text)
    out.load("at start")
    for driver in args.drivers.split(","):
        bench_driver(driver, args, out)
    path = Path(args.output or ROOT / "results" / f"archive-{datetime.now(UTC):%Y-%m-%d-%H%M}.txt")
    path.write_text("\n".join(out.lines) + "\n")
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
