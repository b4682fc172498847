"""The archive during a database outage (helper of modules/mam.py, not a module itself).

Live delivery does not wait for the database: when an archive write (or the preferences read
before it) fails, the record goes to a bounded durable spool (`storage/spool.py`, fsynced, in
the data directory) under the stanza-id the message carries, and the message is delivered.
Once the database answers again, a background task replays the spool into the archive,
checking each owner's preferences then (they may not have been readable during the outage).
Beyond the spool's bounds a message is delivered unarchived: a gap, counted and reported.
Logged once when spooling starts and once when the spool is replayed, never per message.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import TYPE_CHECKING, Any

import trio

from ..protocol.jid import JID
from ..storage.base import StorageError, StorageUnavailable
from ..storage.spool import Record
from ..storage.sql import from_micros, to_micros

if TYPE_CHECKING:
    from .mam import Archiver

REPLAY_INTERVAL = 1.0  # seconds between replay attempts (each fails at once while down)


class OutageSpool:
    def __init__(self, archiver: Archiver, max_entries: int, max_bytes: int) -> None:
        self.archiver = archiver
        self.log: logging.Logger = archiver.log
        self.spool = archiver.host.storage.spool(
            "mam", max_entries=max_entries, max_bytes=max_bytes
        )
        self.server: Any = None  # set at the first login: its nursery runs the replay
        self.outage = False  # spooling since the last replay
        self.gap = 0  # messages not archived during this outage (the spool was full)
        self.replaying = False

    @property
    def lost(self) -> int:
        """Messages never archived since start (a counter, for metrics)."""
        return self.spool.lost if self.spool is not None else self.gap

    async def keep(
        self, user: str, bare: str, peer: str, xml: str, cause: Exception, id_: str | None = None
    ) -> str | None:
        """Spool one archive record (under `id_`, else a new id); its id, or None for a gap
        (delivered, never archived)."""
        if not self.outage:
            self.outage = True
            where = self.spool.path if self.spool is not None else "nowhere (no data dir)"
            self.log.warning("archive unavailable (%s); spooling to %s", cause, where)
        id_ = id_ or str(uuid.uuid4())
        now = to_micros(datetime.datetime.now(datetime.UTC))
        record = {"u": user, "b": bare, "p": peer, "x": xml, "i": id_, "t": now}
        if self.spool is None or not await self.spool.append(record):
            if self.gap == 0:
                self.log.error(
                    "archive spool full or failing: messages are delivered but not archived "
                    "until the database is back (the gap is counted)"
                )
            self.gap += 1
            return None
        self.start_replay()
        return id_

    def start(self, server: Any) -> None:
        """First login: from now on replays can run (and one runs for a spool left behind)."""
        self.server = server
        if self.spool is not None and self.spool.pending:
            self.outage = True
            self.start_replay()

    def start_replay(self) -> None:
        if not self.replaying and self.server is not None:
            self.replaying = True
            self.server.nursery_soon(self.replay)

    async def replay(self) -> None:
        assert self.spool is not None
        try:
            archived = 0
            while self.spool.pending:
                await trio.sleep(REPLAY_INTERVAL)
                try:
                    archived += await self.spool.replay(self.write)
                except StorageError:
                    continue  # still down: try again later
            self.log.warning(
                "archive back: %d spooled messages archived; %d not archived during the outage "
                "(spool full); %d spooled and %d lost since start",
                archived,
                self.gap,
                self.spool.spooled,
                self.spool.lost,
            )
            self.outage, self.gap = False, 0
        finally:
            self.replaying = False

    async def write(self, record: Record) -> None:
        archiver = self.archiver
        user, peer = record["u"], record["p"]
        try:
            if not await archiver.wanted(user, record["b"], JID.parse(peer)):
                return  # the preferences (unreadable during the outage) say no
            await archiver.store.append(
                user,
                with_jid=peer,
                stanza_xml=record["x"],
                stanza_id=record["i"],
                timestamp=from_micros(record["t"]),
            )
        except StorageUnavailable:
            raise
        except StorageError as exc:  # this record only (e.g. already there): skip it
            self.log.warning("spooled message for %s not archived: %s", user, exc)
