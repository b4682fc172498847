"""The archive kind (for XEP-0313 MAM and MUC history) on both drivers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from xmppd.storage import StorageError, UnknownArchiveId
from xmppd.storage.base import ArchiveRecord

T0 = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
PEERS = ["romeo@example.net/balcony", "nurse@example.org", "romeo@example.net/garden"]


def stanza(i: int) -> str:
    return f"<message xmlns='jabber:client' type='chat'><body>n°{i} ☃</body></message>"


async def fill(archive, owner: str = "juliet", count: int = 10) -> list[str]:
    """`count` records one second apart, peers in turn; returns their ids, oldest first."""
    return [
        await archive.append(
            owner,
            with_jid=PEERS[i % 3],
            stanza_xml=stanza(i),
            timestamp=T0 + timedelta(seconds=i),
        )
        for i in range(count)
    ]


def ids(page) -> list[str]:
    return [item.id for item in page.items]


async def pages(archive, owner: str, limit: int, backward: bool, **filters) -> list[list[str]]:
    """Walk the whole archive with RSM paging; each page must claim completeness only last."""
    walked: list[list[str]] = []
    cursor: str | None = None
    while True:
        key = "before_id" if backward else "after_id"
        page = await archive.query(
            owner, limit=limit, backward=backward, **{key: cursor}, **filters
        )
        walked.append(ids(page))
        if page.complete:
            return walked
        assert len(page.items) == limit
        cursor = page.items[0].id if backward else page.items[-1].id


@pytest.fixture
def archive(db):
    return db.for_host("example.org").archive("mam")


async def test_append_and_read_back(archive):
    written = await fill(archive, count=3)
    assert len(set(written)) == 3
    page = await archive.query("juliet")
    assert page.complete
    assert ids(page) == written
    first = page.items[0]
    assert first.timestamp == T0 and first.timestamp.tzinfo is not None
    assert first.with_jid == "romeo@example.net/balcony"
    assert first.stanza_xml == stanza(0)
    assert [item.with_jid for item in page.items] == PEERS


async def test_given_stanza_id_is_kept_and_unique_per_owner(archive):
    kept = await archive.append(
        "juliet", with_jid="romeo@example.net", stanza_xml="<a/>", stanza_id="id-1"
    )
    assert kept == "id-1"
    with pytest.raises(StorageError, match="archive append failed"):
        await archive.append(
            "juliet", with_jid="romeo@example.net", stanza_xml="<b/>", stanza_id="id-1"
        )
    await archive.append(
        "romeo", with_jid="juliet@example.org", stanza_xml="<c/>", stanza_id="id-1"
    )
    assert [i.stanza_xml for i in (await archive.query("juliet")).items] == ["<a/>"]


async def test_append_many_writes_all_or_none(archive):
    """Both sides of a 1:1 message in one transaction: both land, under the given ids and one
    timestamp; a clash on either id lands neither."""
    sent = ArchiveRecord("juliet", "romeo@example.net/balcony", stanza(1), "id-j1")
    got = ArchiveRecord("romeo", "juliet@example.org/chamber", stanza(1), "id-r1")
    await archive.append_many([sent, got])
    (j,) = (await archive.query("juliet")).items
    (r,) = (await archive.query("romeo")).items
    assert (j.id, j.with_jid, j.stanza_xml) == ("id-j1", sent.with_jid, stanza(1))
    assert (r.id, r.with_jid) == ("id-r1", got.with_jid)
    assert j.timestamp == r.timestamp
    fresh = ArchiveRecord("juliet", "nurse@example.org", stanza(2), "id-j2")
    clash = ArchiveRecord("romeo", "juliet@example.org", stanza(2), "id-r1")
    with pytest.raises(StorageError):
        await archive.append_many([fresh, clash])
    assert [i.id for i in (await archive.query("juliet")).items] == ["id-j1"]
    assert len((await archive.query("romeo")).items) == 1


async def test_append_with_other_writes_is_all_or_none(db, archive):
    """`also`: a map row of another host's store (a hook outbox row) in the archive write's
    transaction: both land; when the archive insert fails, the row does not either."""
    outbox = db.for_host("other.example").map("hook_outbox")
    row = {"key": "id-1:sub", "attempts": 0}
    also = [outbox.set_later("pending", "id-1:sub", row)]
    await archive.append("room", with_jid="a@x", stanza_xml="<a/>", stanza_id="id-1", also=also)
    assert await outbox.get("pending", "id-1:sub") == row
    again = [outbox.set_later("pending", "id-1:again", row)]
    with pytest.raises(StorageError):  # the same stanza-id: the insert fails
        await archive.append("room", with_jid="a@x", stanza_xml="<b/>", stanza_id="id-1",
                             also=again)  # fmt: skip
    assert await outbox.get("pending", "id-1:again") is None
    assert list(await outbox.get_all("pending")) == ["id-1:sub"]


async def test_default_timestamp_is_now(archive):
    before = datetime.now(UTC)
    await archive.append("juliet", with_jid="romeo@example.net", stanza_xml="<a/>")
    stamp = (await archive.query("juliet")).items[0].timestamp
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)


async def test_naive_timestamps_refused(archive):
    with pytest.raises(ValueError, match="timezone-aware"):
        await archive.append("j", with_jid="r@x", stanza_xml="<a/>", timestamp=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await archive.query("j", start=datetime(2024, 1, 1))


async def test_forward_paging(archive):
    written = await fill(archive, count=10)
    walked = await pages(archive, "juliet", 3, backward=False)
    assert walked == [written[0:3], written[3:6], written[6:9], written[9:10]]


async def test_backward_paging_from_the_last_page(archive):
    written = await fill(archive, count=10)
    walked = await pages(archive, "juliet", 3, backward=True)
    # Each page is in time order, taken from the newest end.
    assert walked == [written[7:10], written[4:7], written[1:4], written[0:1]]


async def test_exact_multiple_ends_complete_without_an_empty_page(archive):
    written = await fill(archive, count=6)
    assert await pages(archive, "juliet", 3, backward=False) == [written[:3], written[3:]]
    assert await pages(archive, "juliet", 3, backward=True) == [written[3:], written[:3]]


async def test_limit_zero_and_empty_archive(archive):
    empty = await archive.query("juliet", limit=5)
    assert (empty.items, empty.complete) == ([], True)
    await fill(archive, count=2)
    none = await archive.query("juliet", limit=0)
    assert (none.items, none.complete) == ([], False)  # there is more: a count-only request
    with pytest.raises(ValueError):
        await archive.query("juliet", limit=-1)


async def test_with_filter_bare_and_full(archive):
    written = await fill(archive, count=9)
    romeo = await archive.query("juliet", with_jid="romeo@example.net")
    assert ids(romeo) == [w for i, w in enumerate(written) if i % 3 != 1]
    garden = await archive.query("juliet", with_jid="romeo@example.net/garden")
    assert ids(garden) == written[2::3]
    nurse = await archive.query("juliet", with_jid="nurse@example.org")
    assert ids(nurse) == written[1::3]
    assert ids(await archive.query("juliet", with_jid="nurse@example.org/phone")) == []
    assert ids(await archive.query("juliet", with_jid="romeo@example.net/bal")) == []
    # Paging keeps the filter.
    walked = await pages(archive, "juliet", 2, backward=True, with_jid="romeo@example.net")
    assert sum(reversed(walked), []) == ids(romeo)


async def test_time_filters_are_inclusive(archive):
    written = await fill(archive, count=10)
    second = timedelta(seconds=1)
    got = await archive.query("juliet", start=T0 + 3 * second, end=T0 + 6 * second)
    assert ids(got) == written[3:7]
    assert ids(await archive.query("juliet", start=T0 + 9 * second)) == written[9:]
    assert ids(await archive.query("juliet", end=T0)) == written[:1]
    micro = timedelta(microseconds=1)
    assert ids(await archive.query("juliet", end=T0 - micro)) == []
    assert ids(await archive.query("juliet", start=T0 + 9 * second + micro)) == []
    got = await archive.query("juliet", start=T0 + 2 * second, limit=2, backward=True)
    assert (ids(got), got.complete) == (written[8:10], False)


async def test_after_and_before_together(archive):
    written = await fill(archive, count=10)
    got = await archive.query("juliet", after_id=written[2], before_id=written[7])
    assert ids(got) == written[3:7]
    got = await archive.query("juliet", after_id=written[2], before_id=written[7], limit=2)
    assert (ids(got), got.complete) == (written[3:5], False)
    got = await archive.query(
        "juliet", after_id=written[2], before_id=written[7], limit=2, backward=True
    )
    assert (ids(got), got.complete) == (written[5:7], False)
    assert (await archive.query("juliet", after_id=written[9])).items == []


async def test_unknown_ids(archive):
    written = await fill(archive, count=2)
    await fill(archive, "romeo", count=1)
    with pytest.raises(UnknownArchiveId):
        await archive.query("juliet", after_id="no-such-id")
    with pytest.raises(UnknownArchiveId):
        await archive.query("romeo", before_id=written[0])  # another owner's id


async def test_same_timestamp_keeps_insertion_order(archive):
    written = [
        await archive.append("juliet", with_jid="r@x", stanza_xml=f"<m n='{i}'/>", timestamp=T0)
        for i in range(5)
    ]
    assert sum(await pages(archive, "juliet", 2, backward=False), []) == written
    walked = await pages(archive, "juliet", 2, backward=True)
    assert sum(reversed(walked), []) == written


async def test_time_order_wins_over_insertion_order(archive):
    late = await archive.append("j", with_jid="r@x", stanza_xml="<late/>", timestamp=T0)
    early = await archive.append(
        "j", with_jid="r@x", stanza_xml="<early/>", timestamp=T0 - timedelta(hours=1)
    )
    assert ids(await archive.query("j")) == [early, late]
    assert ids(await archive.query("j", after_id=early)) == [late]


async def test_delete_and_delete_owner(archive):
    written = await fill(archive, count=4)
    others = await fill(archive, "romeo", count=2)
    assert await archive.delete("juliet", written[1]) is True
    assert await archive.delete("juliet", written[1]) is False
    assert await archive.delete("juliet", others[0]) is False  # not juliet's
    assert ids(await archive.query("juliet")) == [written[0], *written[2:]]
    with pytest.raises(UnknownArchiveId):
        await archive.query("juliet", after_id=written[1])
    assert await archive.delete_owner("juliet") == 3
    assert ids(await archive.query("juliet")) == []
    assert ids(await archive.query("romeo")) == others


async def test_owners_of_one_store(db, archive):
    assert await archive.owners() == []
    await fill(archive, "romeo", count=2)
    await fill(archive, "juliet", count=3)
    await fill(db.for_host("example.org").archive("muc"), "tybalt", count=1)
    await fill(db.for_host("other.example").archive("mam"), "mercutio", count=1)
    assert await archive.owners() == ["juliet", "romeo"]
    await archive.delete_owner("romeo")
    assert await archive.owners() == ["juliet"]


async def test_expire_for_retention(db, archive):
    juliet = await fill(archive, "juliet", count=5)
    romeo = await fill(archive, "romeo", count=5)
    muc = db.for_host("example.org").archive("muc")
    other_host = db.for_host("other.example").archive("mam")
    kept_elsewhere = [await fill(muc, count=5), await fill(other_host, count=5)]

    cutoff = T0 + timedelta(seconds=3)
    assert await archive.expire(cutoff) == 6  # strictly older: records 0, 1 and 2 of each owner
    assert ids(await archive.query("juliet")) == juliet[3:]
    assert ids(await archive.query("romeo")) == romeo[3:]
    assert [ids(await muc.query("juliet")), ids(await other_host.query("juliet"))] == kept_elsewhere
    # A page boundary that survived still pages on.
    assert ids(await archive.query("juliet", after_id=juliet[3])) == juliet[4:]
    assert await archive.expire(cutoff) == 0


async def test_archives_survive_reopen(backend):
    db = await backend.open()
    written = await fill(db.for_host("h").archive("mam"), count=3)
    await db.close()
    db = await backend.open()
    try:
        page = await db.for_host("h").archive("mam").query("juliet", limit=2, backward=True)
        assert (ids(page), page.complete) == (written[1:], False)
    finally:
        await db.close()


SCOPE = ("h", "s", "o1")
QUERIES = {
    "archive_by_time": (
        "SELECT id FROM archive WHERE host = ? AND store = ? AND owner = ? "
        "AND (ts, seq) > (?, ?) ORDER BY ts, seq LIMIT 11",
        (*SCOPE, 1, 2),
    ),
    "archive_by_with": (
        "SELECT id FROM archive WHERE host = ? AND store = ? AND owner = ? "
        "AND with_bare = ? ORDER BY ts DESC, seq DESC LIMIT 11",
        (*SCOPE, "w1"),
    ),
    "archive_by_id": (
        "SELECT ts, seq FROM archive WHERE host = ? AND store = ? AND owner = ? AND id = ?",
        (*SCOPE, "id51"),
    ),
    "archive_by_age": (
        "DELETE FROM archive WHERE host = ? AND store = ? AND ts < ?",
        ("h", "s", 1),
    ),
}
# 5000 records of 50 owners and 7 peers each, then fresh planner statistics.
SAMPLE = (
    "INSERT INTO archive (host, store, owner, id, ts, with_bare, with_full, stanza) "
    "SELECT 'h', 's', 'o' || (n % 50), 'id' || n, n, 'w' || (n % 7), 'w' || (n % 7), '<m/>' "
)
SERIES = {
    "sqlite": "FROM (WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000)"
    " SELECT n FROM g)",
    "postgres": "FROM generate_series(1, 5000) AS g(n)",
}


@pytest.mark.parametrize("index", sorted(QUERIES))
async def test_queries_use_their_index(db, backend, index):
    query, args = QUERIES[index]
    explain = "EXPLAIN QUERY PLAN" if backend.driver == "sqlite" else "EXPLAIN"

    sample = SAMPLE + SERIES[backend.driver]
    if backend.driver == "postgres":
        sample = sample.replace("%", "%%")  # psycopg reads % as a placeholder

    def plan(tx):
        tx.write(sample)
        tx.write("ANALYZE")
        return tx.rows(f"{explain} {query}", args)

    text = str(await db.run("plan", plan))
    assert index in text, text
