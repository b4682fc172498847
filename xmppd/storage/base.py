"""Storage kinds that modules open by name; they never see the driver.

- keyval: one JSON document per (store, user), e.g. accounts, private XML.
- map: many keyed JSON documents per (store, user), e.g. roster items.
- archive: append-only records per (store, owner) with a time, a peer JID and a stanza, paged
  both ways (XEP-0313 message archives, MUC history).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

Document = dict[str, Any]


class StorageError(Exception):
    """The database cannot be opened, migrated, read or written; the message names the cause."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (down, unreachable, or known to be down by the
    breaker): a temporary condition, worth retrying later."""


class UnknownArchiveId(LookupError):
    """An archive query named an id (`after_id`/`before_id`) that this owner's archive lacks."""


class KeyValueStore(Protocol):
    async def get(self, user: str) -> Document | None: ...

    async def set(self, user: str, value: Document | None) -> None:
        """Store `value` durably before returning; None deletes."""

    async def users(self) -> list[str]: ...


# A write prepared by a store, run inside another store's transaction of the same database
# (`ArchiveStore.append(also=...)`): both are durable together or neither is.
Write = Callable[[Any], None]


class MapStore(Protocol):
    async def get(self, user: str, key: str) -> Document | None: ...

    async def set(self, user: str, key: str, value: Document | None) -> None: ...

    def set_later(self, user: str, key: str, value: Document | None) -> Write:
        """The write `set` would do, to hand to `ArchiveStore.append(also=...)`."""

    async def update(
        self, user: str, key: str, change: Callable[[Document | None], Document | None]
    ) -> tuple[Document | None, Document | None]:
        """Read, `change`, write back in one transaction (one round trip); (old, new).
        Concurrent updates never lose each other, first writes of one key from several nodes
        included (`change` may then run again on the row that came first)."""

    async def replace(
        self,
        user: str,
        key: str,
        expected: Callable[[Document | None], bool],
        value: Document | None,
    ) -> bool:
        """Compare and set (an `update`): store `value` (None deletes) only if `expected`
        accepts the stored document (None: absent); False, nothing written, otherwise."""

    async def get_all(self, user: str) -> dict[str, Document]: ...

    async def delete_user(self, user: str) -> None: ...

    async def users_with_key(self, key: str) -> list[str]:
        """Users holding a document under `key` (whose rosters list a deleted account)."""


@dataclass(frozen=True, slots=True)
class ArchiveItem:
    id: str  # unique within (host, store, owner): the XEP-0359 stanza-id / RSM UID
    timestamp: datetime  # UTC, microsecond precision
    with_jid: str  # the peer as stored (bare or full)
    stanza_xml: str


@dataclass(frozen=True, slots=True)
class ArchivePage:
    items: list[ArchiveItem]  # always oldest first, whichever end the page was taken from
    complete: bool  # no further matching item beyond this page in the paging direction


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One append of `ArchiveStore.append_many`; `id` is chosen by the caller."""

    owner: str
    with_jid: str
    stanza_xml: str
    id: str


class ArchiveStore(Protocol):
    async def append(
        self,
        owner: str,
        *,
        with_jid: str,
        stanza_xml: str,
        stanza_id: str | None = None,
        timestamp: datetime | None = None,
        also: Sequence[Write] = (),
    ) -> str:
        """Store one record durably; return its id (generated when `stanza_id` is None).
        `also`: writes of other stores of the same database, in the same transaction."""

    async def append_many(self, records: list[ArchiveRecord]) -> None:
        """Store several records (e.g. both sides of a 1:1 message) in one transaction, with
        one timestamp: all or none."""

    async def query(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        limit: int | None = None,
        backward: bool = False,
    ) -> ArchivePage:
        """Records in time order. `with_jid` bare matches any resource, full matches exactly;
        `start`/`end` are inclusive; `after_id`/`before_id` exclude that record and everything
        on its far side (UnknownArchiveId if absent). `backward` takes the page from the newest
        end (RSM `<before/>`), else from the oldest (RSM `<after/>` or neither)."""

    async def delete(self, owner: str, id: str) -> bool:
        """Remove one record (retraction, moderation); False if it was not there."""

    async def expire(self, older_than: datetime) -> int:
        """Remove every owner's records stamped before `older_than`; return how many."""

    async def delete_owner(self, owner: str) -> int: ...

    async def owners(self) -> list[str]:
        """Every owner with at least one record in this store (sorted)."""


class Storage(Protocol):
    """One per virtual host; created by the driver factory from config."""

    def keyval(self, store: str) -> KeyValueStore: ...

    def map(self, store: str) -> MapStore: ...

    def archive(self, store: str) -> ArchiveStore: ...

    def spool(self, name: str, *, max_entries: int, max_bytes: int) -> Any:
        """A bounded durable file for records the database could not take yet (spool.py)."""

    async def close(self) -> None: ...
