"""A bounded durable spool: records that could not be written to the database yet.

Theory of operation: one append-only file of JSON lines in the data directory
(`<data_dir>/spool/<name>.jsonl`). `append` writes one line and fsyncs it before returning, so
a spooled record survives a crash like a committed row would ("acknowledged means durable").
The file is bounded by `max_entries` and `max_bytes`: a record beyond the bound is not written
and is counted in `lost` (a gap, reported by the owner). `replay` hands every record to a
writer, oldest first, and removes the ones written; if the writer fails (the database went
away again), the rest stay for the next replay. Records appended during a replay are kept.
A line torn by a crash in the middle of a write is dropped (at open: an unfinished last line;
at replay: a line that is not JSON) and counted as lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

Record = dict[str, Any]


class Spool:
    __slots__ = ("path", "max_entries", "max_bytes", "pending", "size", "spooled", "lost", "_lock")

    def __init__(self, path: Path, *, max_entries: int, max_bytes: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.pending = 0  # records in the file
        self.size = 0  # bytes in the file
        self.spooled = 0  # records appended since start (a counter, for metrics)
        self.lost = 0  # records refused (full, or the file failed) or torn since start
        self._lock = trio.Lock()
        self._count()

    def _count(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):  # a write torn by a crash: drop it before appending more
            with open(self.path, "r+b") as f:
                f.truncate(len(whole))
                os.fsync(f.fileno())
            self.lost += 1
        self.size = len(whole)
        self.pending = whole.count(b"\n")

    async def append(self, record: Record) -> bool:
        """Write `record` durably; False (counted in `lost`) when the spool is full or fails."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        async with self._lock:
            if self.pending >= self.max_entries or self.size + len(line) > self.max_bytes:
                self.lost += 1
                return False
            try:
                await trio.to_thread.run_sync(self._write, line)
            except OSError:
                self.lost += 1
                return False
            self.pending += 1
            self.size += len(line)
            self.spooled += 1
            return True

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    async def replay(self, write: Callable[[Record], Awaitable[None]]) -> int:
        """Hand each record to `write` in order and drop the written ones; returns how many were
        written. An exception from `write` propagates after the rest is kept."""
        if not self.pending:
            return 0
        data = await trio.to_thread.run_sync(self._read)
        lines = data.splitlines()
        done = 0
        try:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    self.lost += 1  # torn by a crash mid-write
                else:
                    await write(record)
                done += 1
        finally:
            async with self._lock:
                await trio.to_thread.run_sync(self._drop, len(b"".join(lines[:done])) + done)
        return done

    def _read(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return b""
        return data[: data.rfind(b"\n") + 1]  # whole lines only

    def _drop(self, nbytes: int) -> None:
        """Remove the first `nbytes` (whole lines), keeping what was appended meanwhile."""
        if nbytes == 0:
            return
        data = self.path.read_bytes()
        rest = data[nbytes:]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(rest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        self.size = len(rest)
        self.pending = rest.count(b"\n")
