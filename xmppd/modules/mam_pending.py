"""Both sides of a 1:1 message in one archive write (helper of modules/mam.py, not a module).

A message between two local accounts is archived twice: for the sender when its client sends
it (`pre-message`), for the recipient when it reaches the recipient's host (`message/*`).
Written one after the other, that was two transactions and two fsyncs per message, with the
routing task waiting for each. Now the sender's record waits on the routing event
(`StanzaEvent.owe`) under the id it will have, the recipient's record joins it, and one
`append_many` writes both.

Nothing leaves the server before the write: the event is settled before a sent carbon goes out
(carbons.py), before another host, a component or a remote domain gets the message
(router.py), before local delivery (here, in `message/*` ahead of the delivery handlers) and
before routing returns, so stream management still acknowledges a message only after the
archive (or, during an outage, the spool) holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..storage.base import ArchiveRecord, StorageError

if TYPE_CHECKING:
    from ..router import StanzaEvent
    from .mam import Archiver


@dataclass(slots=True)
class Entry:
    record: ArchiveRecord
    bare: str  # the owner's bare JID
    sent: bool  # the sender's record: its id may be on the stanza already
    checked: bool | None  # None: the owner's preferences were unreadable (spool it; the
    # replay checks them)


class PendingArchive:
    """The records of one routing event for one archive store; an `Owed` of the event."""

    __slots__ = ("archiver", "event", "entries", "stored")

    def __init__(self, archiver: Archiver, event: StanzaEvent) -> None:
        self.archiver = archiver
        self.event = event
        self.entries: list[Entry] = []
        self.stored: set[str] = set()  # ids held by the archive or the spool

    @staticmethod
    def of(archiver: Archiver, event: StanzaEvent, *, take: bool = False) -> PendingArchive | None:
        """The event's pending records for `archiver`; `take` removes them from the event
        (the caller settles them itself)."""
        for owed in event.owed:
            if isinstance(owed, PendingArchive) and owed.archiver is archiver:
                if take:
                    event.owed.remove(owed)
                return owed
        return None

    def add(self, record: ArchiveRecord, bare: str, *, sent: bool, checked: bool | None) -> None:
        self.entries.append(Entry(record, bare, sent, checked))

    async def settle(self) -> None:
        entries, self.entries = self.entries, []
        if not entries:
            return
        archiver = self.archiver
        spool = [e for e in entries if e.checked is None]
        write = [e for e in entries if e.checked is not None]
        cause: Exception = StorageError("preferences unreadable")
        if write:
            try:
                await archiver.store.append_many([e.record for e in write])
                self.stored.update(e.record.id for e in write)
            except StorageError as exc:
                spool, cause = entries, exc
        for e in spool:
            r = e.record
            if await archiver.spool.keep(r.owner, e.bare, r.with_jid, r.stanza_xml, cause, r.id):
                self.stored.add(r.id)
        for e in entries:
            if e.sent and e.record.id not in self.stored:  # a gap: the id names nothing
                self.event.stanza = archiver.without_own_id(self.event.stanza, e.bare)
