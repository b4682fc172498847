"""The durable archive spool (xmppd/storage/spool.py): bounds, gaps, replay, torn lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from xmppd.storage.base import StorageUnavailable
from xmppd.storage.spool import Spool


def test_bounded_by_entries_and_bytes_the_rest_is_a_counted_gap(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool(tmp_path / "s.jsonl", max_entries=3, max_bytes=10_000)
        results = [await spool.append({"n": n}) for n in range(5)]
        assert results == [True, True, True, False, False]
        assert (spool.pending, spool.spooled, spool.lost) == (3, 3, 2)
        small = Spool(tmp_path / "b.jsonl", max_entries=100, max_bytes=30)
        assert await small.append({"x": "a" * 10})
        assert not await small.append({"x": "b" * 10})  # would pass 30 bytes
        assert small.lost == 1 and small.size <= 30

    trio.run(main)


def test_replay_keeps_what_was_not_written_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"

    async def fill() -> None:
        spool = Spool(path, max_entries=100, max_bytes=100_000)
        for n in range(5):
            assert await spool.append({"n": n})

    async def replay_failing_at(n_fail: int) -> list[int]:
        spool = Spool(path, max_entries=100, max_bytes=100_000)  # reopened: counts the file
        written: list[int] = []

        async def write(record: dict) -> None:
            if record["n"] == n_fail:
                raise StorageUnavailable("down again")
            written.append(record["n"])

        with pytest.raises(StorageUnavailable):
            await spool.replay(write)
        assert spool.pending == 5 - len(written)
        return written

    async def replay_all() -> list[int]:
        spool = Spool(path, max_entries=100, max_bytes=100_000)
        written: list[int] = []

        async def write(record: dict) -> None:
            written.append(record["n"])

        assert await spool.replay(write) == len(written)
        assert spool.pending == 0 and spool.size == 0
        return written

    trio.run(fill)
    assert trio.run(replay_failing_at, 2) == [0, 1]
    assert trio.run(replay_all) == [2, 3, 4]


def test_a_line_torn_by_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n":0}\n{"n":1,"x":"tor\n{"n":2}\n')

    async def main() -> None:
        spool = Spool(path, max_entries=100, max_bytes=100_000)
        seen: list[int] = []

        async def write(record: dict) -> None:
            seen.append(record["n"])

        await spool.replay(write)
        assert seen == [0, 2] and spool.lost == 1 and spool.pending == 0

    trio.run(main)


def test_an_unfinished_last_line_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"n":0}\n{"n":1,"x":"tor')

    async def main() -> None:
        spool = Spool(path, max_entries=100, max_bytes=100_000)
        assert spool.lost == 1 and spool.pending == 1
        assert await spool.append({"n": 2})
        seen: list[int] = []

        async def write(record: dict) -> None:
            seen.append(record["n"])

        await spool.replay(write)
        assert seen == [0, 2]

    trio.run(main)
