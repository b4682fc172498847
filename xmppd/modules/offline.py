"""Offline messages (XEP-0160): kept while an account has no available resource, delivered at
its next non-negative available presence, stamped with XEP-0203 delay and XEP-0359 stanza-id.

Messages are one map-store document each (store `offline`, user = the local part), keyed by a
zero-padded sequence number so `get_all` returns them in arrival order. Each account's count,
bytes and next sequence number are read once and then kept in memory, so the quota check never
reads the stored messages again. A per-account lock orders storing against delivery.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import TYPE_CHECKING

import trio
from lxml import etree

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, local_name, namespace_of, qname, sub
from ..router import STORAGE_DOWN, StanzaEvent
from ..storage.base import StorageError
from .presence import parse_priority

if TYPE_CHECKING:
    from ..session import Session
    from ..storage.base import Document, MapStore

# Elements that are not content of their own (XEP-0160 §3: a chat message holding only chat
# states is not worth keeping; hints, ids and a thread alone carry nothing to read either).
_NOT_PAYLOAD = frozenset({ns.CHATSTATES, ns.HINTS, ns.SID})
_THREAD = qname(ns.CLIENT, "thread")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


class _Queue:
    """What is known of one account's stored messages."""

    __slots__ = ("lock", "loaded", "count", "bytes", "next_seq")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.loaded = False
        self.count = 0
        self.bytes = 0
        self.next_seq = 1


def worth_storing(stanza: Element) -> bool:
    """XEP-0160 §3 by type, XEP-0334 hints, and no storage for messages without content."""
    if stanza.get("type", "normal") not in ("normal", "chat"):
        return False
    hints = {
        local_name(c) for c in stanza if isinstance(c.tag, str) and namespace_of(c) == ns.HINTS
    }
    if "no-store" in hints:  # XEP-0334 §4.2: not even temporarily
        return False
    if "store" in hints:  # XEP-0334 §4.3
        return True
    return any(
        isinstance(c.tag, str) and c.tag != _THREAD and namespace_of(c) not in _NOT_PAYLOAD
        for c in stanza
    )


def utc_stamp() -> str:
    """XEP-0082 DateTime in UTC with milliseconds."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Offline:
    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.store: MapStore = module.open_map("offline")
        self.max_messages: int = module.options["max_messages"]
        self.max_bytes: int = module.options["max_bytes"]
        self.log = module.log
        # One entry per account touched since start (bounded by the number of accounts).
        self.queues: dict[str, _Queue] = {}

    async def account_deleted(self, event: AccountDeleted) -> bool:
        q = self.queues.pop(event.local, None) or _Queue()
        async with q.lock:  # after a delivery or a store under way
            await self.store.delete_user(event.local)
        return False

    def queue(self, user: str) -> _Queue:
        q = self.queues.get(user)
        if q is None:
            q = self.queues[user] = _Queue()
        return q

    async def load(self, user: str, q: _Queue) -> dict[str, Document] | None:
        """Count the account's stored messages once (call with q.lock held); the documents
        when they were read now. In cluster mode other nodes store and deliver too: count
        every time (a cached zero would hide what another node stored)."""
        if q.loaded and self.host.remote_delivery is None:
            return None
        docs = await self.store.get_all(user)
        q.count = len(docs)
        q.bytes = sum(len(doc["xml"].encode()) for doc in docs.values())
        q.next_seq = max((int(key) for key in docs), default=0) + 1
        q.loaded = True
        return docs

    # ---- storing ----------------------------------------------------------------------------

    async def on_offline(self, event: StanzaEvent) -> bool:
        if not worth_storing(event.stanza):
            return False  # the router answers service-unavailable (RFC 6121 §8.5.2.2.1)
        target = event.to or event.sender
        assert target is not None and target.local is not None
        bare, user = str(target.bare), target.local
        data = etree.tostring(self.stamped(event, bare))
        try:
            return await self.store_one(event, user, bare, data)
        except StorageError:  # unreachable (breaker.py answers at once): retry later
            return await event.reply_error("resource-constraint", STORAGE_DOWN)

    async def store_one(self, event: StanzaEvent, user: str, bare: str, data: bytes) -> bool:
        q = self.queue(user)
        async with q.lock:
            await self.load(user, q)
            if q.count >= self.max_messages or q.bytes + len(data) > self.max_bytes:
                # RFC 6120 §8.3.3.18: the account's storage is exhausted; nothing is kept.
                return await event.reply_error(
                    "resource-constraint", "the recipient's offline message storage is full"
                )
            if self.host.remote_delivery is not None:  # keys from two nodes must not collide
                q.next_seq = max(q.next_seq, time.time_ns() // 1000)
            key = f"{q.next_seq:016d}"
            q.next_seq += 1
            await self.store.set(user, key, {"xml": data.decode()})
            q.count += 1
            q.bytes += len(data)
        await self.catch_up(bare)
        return True

    def stamped(self, event: StanzaEvent, bare: str) -> Element:
        """A copy with the storage delay (XEP-0203) and our stanza-id (XEP-0359)."""
        stanza = copy(event.stanza)
        domain = self.host.domain
        ours_delay = ours_id = None
        # With MAM, ids claimed by clients were removed where they entered and the one left is
        # the archive id (XEP-0313 §3.5): keep it rather than assign a second one.
        archived = "mam" in self.host.services
        for child in list(stanza):
            if not isinstance(child.tag, str):
                continue
            if child.tag == qname(ns.SID, "stanza-id") and child.get("by") == bare:
                if archived and ours_id is None:
                    ours_id = child
                else:
                    stanza.remove(child)  # XEP-0359: an id "by" the account is ours to assign
            elif child.tag == qname(ns.DELAY, "delay") and child.get("from") == domain:
                if event.origin is not None:
                    stanza.remove(child)  # a client cannot speak for the server
                else:
                    ours_delay = child  # re-routed by us: keep the first storage time
        if ours_delay is None:
            delay = sub(stanza, ns.DELAY, "delay", "Offline Storage", stamp=utc_stamp())
            delay.set("from", domain)
        if ours_id is None:
            sub(stanza, ns.SID, "stanza-id", by=bare, id=str(uuid.uuid4()))
        return stanza

    async def catch_up(self, bare: str) -> None:
        """A resource may have come online while we stored: hand it what it missed."""
        ready = [
            s
            for s in self.host.resources_of(bare).values()
            if s.available and s.priority >= 0 and not s.closed
        ]
        if ready:
            await self.deliver(max(ready, key=lambda s: s.priority))

    # ---- delivering -------------------------------------------------------------------------

    async def deliver(self, session: Session) -> None:
        """Send every stored message to the session, oldest first, then forget them."""
        assert session.jid is not None and session.jid.local is not None
        try:
            await self.deliver_stored(session, session.jid.local)
        except StorageError as exc:  # kept; the next login or presence tries again
            self.log.warning("offline messages for %s not delivered: %s", session.full, exc)

    async def deliver_stored(self, session: Session, user: str) -> None:
        q = self.queue(user)
        async with q.lock:
            docs = await self.load(user, q)
            if q.count == 0 or session.closed:
                return
            if docs is None:
                docs = await self.store.get_all(user)
            delivered = self.hand_over(session, docs)
            if len(delivered) == len(docs):
                await self.store.delete_user(user)
            else:  # the session went away part way: keep the rest
                for key in delivered:
                    await self.store.set(user, key, None)
            q.count -= len(delivered)
            q.bytes -= sum(len(docs[key]["xml"].encode()) for key in delivered)
            self.log.info("delivered %d offline messages to %s", len(delivered), session.full)

    def hand_over(self, session: Session, docs: dict[str, Document]) -> list[str]:
        delivered = []
        for key, doc in docs.items():
            stanza = etree.fromstring(doc["xml"].encode(), _PARSER)
            if not self.host.deliver_to_full(session.full, stanza):
                break
            delivered.append(key)
        return delivered

    async def on_initial(self, session: Session) -> bool:
        # RFC 6121 §8.5.2.1.1: a negative priority never gets messages for the account.
        if session.priority >= 0:
            await self.deliver(session)
        return False

    async def on_presence(self, event: StanzaEvent) -> bool:
        """A resource that was negative may now be non-negative: deliver then."""
        session = event.origin
        if session is None or not session.available or event.stanza.get("type") is not None:
            return False
        q = self.queues.get(session.jid.local or "") if session.jid else None
        priority = parse_priority(event.stanza.findtext(qname(ns.CLIENT, "priority")))
        if priority >= 0 and (q is None or q.count > 0):  # None: not counted since start
            await self.deliver(session)  # before anything the client sends next
        return False


def load(module: Module) -> None:
    offline = Offline(module)
    module.add_feature(ns.MSGOFFLINE)
    module.hook("message-offline", offline.on_offline)
    module.hook("presence-initial", offline.on_initial)
    module.hook("pre-presence/self", offline.on_presence)
    module.hook("account-deleted", offline.account_deleted)


spec = ModuleSpec(
    name="offline",
    summary="stores messages for accounts with no available resource, delivers them at login",
    load=load,
    options={
        "max_messages": Option(int, 1000, "stored messages per account", min=1),
        "max_bytes": Option(int, 10 * 1024 * 1024, "stored bytes per account", min=1024),
    },
    implements=(
        Implements("XEP-0160", "1.0.1"),
        Implements("XEP-0203", "2.0", status="partial", note="stamps offline messages"),
        Implements("XEP-0359", "0.7.0", status="partial", note="stanza-id on offline messages"),
        Implements("XEP-0334", "0.3.0", status="partial", note="store / no-store for offline"),
    ),
)
