"""XEP-0313 Message Archive Management for accounts, with XEP-0441 preferences.

Archiving. A message a user's client sends (`pre-message/*`, owner = the sender) and a message
an account receives (`message/*`, owner = the recipient) is appended to that owner's archive
(store `mam`, owner = the local part) when it is worth keeping (`archivable`, XEP-0313 §6.1.1)
and the owner's preferences allow it. A message between two local users is in both archives,
under different ids; one between two resources of an account is kept once, as received.
Archiving runs before delivery and is awaited, so stream management acknowledges a message
only after the archive (or, while the database is unreachable, the durable spool of
`mam_spool.py`) holds it; live delivery never waits for a database outage. Both records of a
message between two local accounts are written in one transaction (`mam_pending.py`).

Stanza ids (XEP-0359, XEP-0313 §3.5). `<stanza-id by=...>` naming any JID of our hosts is
removed from what clients send (only the server speaks for its archives). Each archived incoming
message then carries `<stanza-id by=account id=archive id>`, which carbons and offline storage
keep. Outgoing messages carry the sender's id only while sent carbons are made.

Queries: `mam_query.py`, shared with room archives.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from lxml import etree

from auth.base import AuthError

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol import stanza as st
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, get_child, sub
from ..router import StanzaEvent
from ..storage.base import ArchiveRecord, StorageError
from .carbons import copies_wanted
from .mam_pending import Entry, PendingArchive
from .mam_query import QueryError, metadata, query_form, serve_query
from .mam_spool import OutageSpool

if TYPE_CHECKING:
    from ..session import Session

_STANZA_ID = st.qname(ns.SID, "stanza-id")
_BODY = st.qname(ns.CLIENT, "body")
# Payloads that are conversation although they lack a body: encrypted messages, receipts and
# markers, invitations, call setup.
_CONVERSATION = frozenset({ns.EME, ns.RECEIPTS, ns.MARKERS, ns.CONFERENCE, ns.JINGLE_MESSAGE})
POLICIES = ("always", "roster", "never")


# ---- what is archived -------------------------------------------------------------------------


def archivable(stanza: Element) -> bool:
    """XEP-0313 §6.1.1 for user archives: chat and normal messages with something to read."""
    if stanza.get("type", "normal") not in ("chat", "normal"):
        return False  # groupchat lives in room archives; headline and errors are ephemeral
    if get_child(stanza, ns.MAM, "result") is not None:
        return False  # a query result: it is in the archive already
    if any(get_child(stanza, ns.CARBONS, d) is not None for d in ("sent", "received")):
        return False  # a carbon copy: the original was archived
    hints = {st.local_name(c) for c in stanza.iterchildren(f"{{{ns.HINTS}}}*")}  # XEP-0334
    if hints & {"no-store", "no-permanent-store"}:
        return False
    if "store" in hints:
        return True
    if stanza.find(_BODY) is not None:
        return True
    muc = get_child(stanza, ns.MUC_USER, "x")
    if muc is not None and get_child(muc, ns.MUC_USER, "invite") is not None:
        return True
    return any(isinstance(c.tag, str) and st.namespace_of(c) in _CONVERSATION for c in stanza)


def stanza_id_by(stanza: Element, by: str) -> str | None:
    for child in stanza.iterchildren(_STANZA_ID):
        if child.get("by") == by:
            return child.get("id")
    return None


def with_stanza_id(stanza: Element, by: str, id_: str) -> Element:
    stamped = st.copy(stanza)
    sub(stamped, ns.SID, "stanza-id", by=by, id=id_)
    return stamped


def without_stanza_ids(stanza: Element, drop: Callable[[str], bool]) -> Element:
    """`stanza`, or a copy without the stanza-ids whose `by` `drop` selects."""
    if not any(drop(c.get("by") or "") for c in stanza.iterchildren(_STANZA_ID)):
        return stanza
    stanza = st.copy(stanza)
    for child in list(stanza.iterchildren(_STANZA_ID)):
        if drop(child.get("by") or ""):
            stanza.remove(child)
    return stanza


# ---- preferences (XEP-0441) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prefs:
    default: str
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def rule(self, peer: JID) -> str:
        """always/never for a listed JID (full first, then bare), else the default."""
        for candidate in (str(peer), str(peer.bare)):
            if candidate in self.always:
                return "always"
            if candidate in self.never:
                return "never"
        return self.default

    def to_element(self) -> Element:
        el = element(ns.MAM, "prefs", default=self.default)
        for name, jids in (("always", self.always), ("never", self.never)):
            listed = sub(el, ns.MAM, name)
            for jid in sorted(jids):
                sub(listed, ns.MAM, "jid", jid)
        return el

    def to_doc(self) -> dict:
        return {"default": self.default, "always": sorted(self.always), "never": sorted(self.never)}

    @staticmethod
    def from_doc(doc: dict) -> Prefs:
        return Prefs(doc["default"], frozenset(doc["always"]), frozenset(doc["never"]))


def parse_prefs(el: Element, max_jids: int) -> Prefs:
    default = el.get("default")
    if default not in POLICIES:
        raise QueryError("bad-request", "'default' must be always, roster or never")
    lists: dict[str, frozenset[str]] = {}
    for name in ("always", "never"):
        jids = set()
        for jid_el in el.iterfind(f"{{{ns.MAM}}}{name}/{{{ns.MAM}}}jid"):
            try:
                jids.add(str(JID.parse((jid_el.text or "").strip())))
            except JIDError as exc:
                raise QueryError("jid-malformed", f"{jid_el.text!r}: {exc}") from exc
        lists[name] = frozenset(jids)
    if len(lists["always"]) + len(lists["never"]) > max_jids:
        raise QueryError("policy-violation", f"at most {max_jids} JIDs in the preferences")
    if lists["always"] & lists["never"]:
        raise QueryError("bad-request", "a JID cannot be both always and never archived")
    return Prefs(default, lists["always"], lists["never"])


# ---- the account archive module ---------------------------------------------------------------


class Archiver:
    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.log = module.log
        self.store = module.open_archive("mam")
        self.prefs_store = module.open_keyval("mam_prefs")
        self.opts = opts = module.options
        self.default_limit: int = min(opts["default_page_size"], opts["max_page_size"])
        self.max_limit: int = opts["max_page_size"]
        self.expiry_started = False
        self.prefs: dict[str, Prefs] = {}  # accounts that sent or got a message since start
        self.spool = OutageSpool(self, opts["spool_max_messages"], opts["spool_max_bytes"])

    # ---- archiving --------------------------------------------------------------------------

    def ours(self, by: str) -> bool:
        """A stanza-id `by` one of our hosts' JIDs: only the server may assign those."""
        try:
            return JID.parse(by).domain in self.host.hosts
        except JIDError:
            return False

    async def strip_claimed_ids(self, event: StanzaEvent) -> bool:
        event.stanza = without_stanza_ids(event.stanza, self.ours)  # XEP-0359 §5
        return False

    async def outgoing(self, event: StanzaEvent) -> bool:
        """The sender's record waits on the event (`mam_pending.py`) for the recipient's."""
        session, to, stanza = event.origin, event.to, event.stanza
        assert session is not None and session.jid is not None
        if to is None or str(to.bare) == session.bare or not archivable(stanza):
            return False  # to the own account: archived once, as received
        user, bare = session.jid.local or "", session.bare
        checked = await self.wanted_or_unknown(user, bare, to)
        if checked is False:
            return False
        record = ArchiveRecord(user, str(to), etree.tostring(stanza).decode(), str(uuid.uuid4()))
        pending = PendingArchive.of(self, event)
        if pending is None:
            event.owe(pending := PendingArchive(self, event))
        pending.add(record, bare, sent=True, checked=checked)
        if copies_wanted(self.host, bare, session.jid.resource or ""):
            # Sent carbons (made next) carry the sender's archive id (XEP-0313 §3.5).
            event.stanza = with_stanza_id(stanza, bare, record.id)
        return False

    async def after_carbons(self, event: StanzaEvent) -> bool:
        """The recipient must not see the sender's archive id (§3.5)."""
        assert event.origin is not None
        bare = event.origin.bare
        event.stanza = without_stanza_ids(event.stanza, lambda by: by == bare)
        return False

    async def incoming(self, event: StanzaEvent) -> bool:
        """The recipient's record joins the sender's (if any): one write, before delivery."""
        pending = PendingArchive.of(self, event, take=True)
        mine = await self.recipient_entry(event)
        if mine is not None:
            pending = pending or PendingArchive(self, event)
            pending.entries.append(mine)
        if pending is None:
            return False
        await pending.settle()
        if mine is not None and mine.record.id in pending.stored:
            event.stanza = with_stanza_id(event.stanza, mine.bare, mine.record.id)
        return False

    async def recipient_entry(self, event: StanzaEvent) -> Entry | None:
        """The record for the recipient's archive, None when nothing is archived."""
        stanza, target = event.stanza, event.to or event.sender
        if target is None or target.local is None or not archivable(stanza):
            return None
        bare, user = str(target.bare), target.local
        if stanza_id_by(stanza, bare) is not None:
            return None  # routed again (its session went away): archived the first time
        try:
            if self.bounced(event, bare) or not await self.exists(user, bare):
                return None
        except AuthError:  # accounts unreadable: nobody is online there, the router answers
            return None
        peer = event.sender or JID(None, self.host.domain, prepared=True)
        checked = await self.wanted_or_unknown(user, bare, peer)
        if checked is False:
            return None
        record = ArchiveRecord(user, str(peer), etree.tostring(stanza).decode(), str(uuid.uuid4()))
        return Entry(record, bare, sent=False, checked=checked)

    async def wanted_or_unknown(self, user: str, bare: str, peer: JID) -> bool | None:
        """`wanted`, or None while the preferences are unreadable (then the record goes to
        the spool, whose replay checks them)."""
        try:
            return await self.wanted(user, bare, peer)
        except StorageError:
            return None

    def without_own_id(self, stanza: Element, bare: str) -> Element:
        return without_stanza_ids(stanza, lambda by: by == bare)

    def bounced(self, event: StanzaEvent, bare: str) -> bool:
        """A non-chat message to a resource that is gone gets an error (RFC 6121 §8.5.3.2.1):
        it was not received, so it is not archived."""
        to = event.to
        if to is None or to.resource is None or event.stanza.get("type") == "chat":
            return False
        return to.resource not in self.host.resources_of(bare)

    async def stored_in_archive(self, event: StanzaEvent) -> bool:
        """`message-offline` with no offline storage: an archived message is not lost."""
        target = event.to or event.sender
        return target is not None and stanza_id_by(event.stanza, str(target.bare)) is not None

    async def account_deleted(self, event: AccountDeleted) -> bool:
        await self.store.delete_owner(event.local)
        await self.prefs_store.set(event.local, None)
        return False

    async def exists(self, user: str, bare: str) -> bool:
        return bool(self.host.resources_of(bare)) or await self.host.auth.user_exists(user)

    async def archive(self, user: str, bare: str, peer: JID, stanza: Element) -> str | None:
        """Archive for `user` if wanted; the archive id, or None (not wanted, or a gap while
        the database is down). Spooled while the database cannot take it."""
        xml = ""
        try:
            if not await self.wanted(user, bare, peer):
                return None
            xml = etree.tostring(stanza).decode()
            return await self.store.append(user, with_jid=str(peer), stanza_xml=xml)
        except StorageError as exc:
            xml = xml or etree.tostring(stanza).decode()
            return await self.spool.keep(user, bare, str(peer), xml, exc)

    async def wanted(self, user: str, bare: str, peer: JID) -> bool:
        rule = (await self.prefs_of(user)).rule(peer)
        if rule != "roster":
            return rule == "always"
        contact = str(peer.bare)
        if contact == bare:
            return True  # the account's own resources
        roster = self.host.services.get("roster")
        return roster is not None and await roster.get_item(bare, contact) is not None

    async def prefs_of(self, user: str) -> Prefs:
        prefs = self.prefs.get(user)
        if prefs is None:
            doc = await self.prefs_store.get(user)
            prefs = Prefs.from_doc(doc) if doc else Prefs(self.opts["default_policy"])
            self.prefs[user] = prefs
        return prefs

    # ---- retention --------------------------------------------------------------------------

    async def on_bound(self, session: Session) -> bool:
        """Start the retention task with the first login (hosts have no nursery of their own;
        nothing is archived before someone logs in)."""
        if self.spool.server is None:
            self.spool.start(session.server)
        if self.opts["archive_expires_after"] > 0 and not self.expiry_started:
            self.expiry_started = True
            session.server.nursery_soon(self.expire_forever)
        return False

    async def expire_forever(self) -> None:
        keep = datetime.timedelta(seconds=self.opts["archive_expires_after"])
        while True:
            cutoff = datetime.datetime.now(datetime.UTC) - keep
            try:
                removed = await self.store.expire(cutoff)
                if removed:
                    self.log.info("removed %d archived messages older than %s", removed, cutoff)
            except StorageError:
                self.log.exception("archive expiry failed; trying again later")
            await trio.sleep(self.opts["expire_interval"])

    # ---- iq handlers ------------------------------------------------------------------------

    async def query(self, event: StanzaEvent) -> bool:
        stanza, sender = event.stanza, event.sender
        assert sender is not None and sender.local is not None
        if stanza.get("type") == "get":
            return await self.answer(event, query_form())
        try:
            messages, done = await serve_query(
                self.store,
                sender.local,
                stanza[0],  # the router checked: exactly one child element
                archive=str(sender.bare),
                to=str(sender),
                default_limit=self.default_limit,
                max_limit=self.max_limit,
            )
        except QueryError as exc:
            return await event.reply_error(exc.condition, exc.text)
        for message in messages:
            if not self.host.deliver_to_full(str(sender), message):
                return True  # the querying session is gone
        return await self.answer(event, done)

    async def get_metadata(self, event: StanzaEvent) -> bool:
        assert event.sender is not None and event.sender.local is not None
        return await self.answer(event, await metadata(self.store, event.sender.local))

    async def prefs_iq(self, event: StanzaEvent) -> bool:
        stanza, sender = event.stanza, event.sender
        assert sender is not None and sender.local is not None
        user = sender.local
        if stanza.get("type") == "set":
            try:
                prefs = parse_prefs(stanza[0], self.opts["max_prefs_jids"])
            except QueryError as exc:
                return await event.reply_error(exc.condition, exc.text)
            await self.prefs_store.set(user, prefs.to_doc())
            self.prefs[user] = prefs
        return await self.answer(event, (await self.prefs_of(user)).to_element())

    @staticmethod
    async def answer(event: StanzaEvent, payload: Element) -> bool:
        (result := st.reply(event.stanza)).append(payload)
        return await event.reply(result)

    @staticmethod
    async def forbidden(event: StanzaEvent) -> bool:
        """Another account's archive (§8.1)."""
        return await event.reply_error("forbidden", "only the account may use its archive")


def load(module: Module) -> None:
    archiver = Archiver(module)
    module.host.services["mam"] = archiver
    module.host.account_features.update((ns.MAM, ns.MAM_EXTENDED, ns.MAM_GROUPCHAT_FIELD, ns.SID))
    handlers: list[tuple[str, str, Callable[[StanzaEvent], Awaitable[bool]]]] = [
        ("get/self set/self", "query", archiver.query),
        ("get/self", "metadata", archiver.get_metadata),
        ("get/self set/self", "prefs", archiver.prefs_iq),
        ("get/bare set/bare", "query", archiver.forbidden),
        ("get/bare", "metadata", archiver.forbidden),
        ("get/bare set/bare", "prefs", archiver.forbidden),
    ]
    for types_scopes, child, handler in handlers:
        module.hook_iq(types_scopes, ns.MAM, child, handler)
    for scope in ("full", "bare", "self", "host"):
        module.hook(f"pre-message/{scope}", archiver.strip_claimed_ids, 200)
    for scope in ("full", "bare"):
        # Observers: after blocking (100), around carbons (-0.5), before delivery (-1).
        module.hook(f"pre-message/{scope}", archiver.outgoing, -0.4)
        module.hook(f"pre-message/{scope}", archiver.after_carbons, -0.6)
    for scope in ("full", "bare", "self"):
        module.hook(f"message/{scope}", archiver.incoming, -0.25)
    module.hook("message-offline", archiver.stored_in_archive, -10)
    module.hook("session-bound", archiver.on_bound)
    module.hook("account-deleted", archiver.account_deleted)


spec = ModuleSpec(
    name="mam",
    summary="archives each account's messages and answers archive queries (XEP-0313)",
    load=load,
    options={
        "default_policy": Option(
            str, "always", "what is archived without preferences", choices=POLICIES
        ),
        "default_page_size": Option(int, 50, "results per query page when unasked", min=1),
        "max_page_size": Option(int, 250, "most results per query page", min=1),
        "max_prefs_jids": Option(int, 1000, "JIDs in one account's preferences", min=1),
        "archive_expires_after": Option(
            int, 365 * 86400, "seconds a message stays archived (0: forever)", min=0
        ),
        "expire_interval": Option(int, 3600, "seconds between retention runs", min=1),
        "spool_max_messages": Option(
            int, 100_000, "messages kept for the archive while the database is down", min=0
        ),
        "spool_max_bytes": Option(
            int, 64 * 1024 * 1024, "bytes of that spool (data_dir/spool); beyond: a gap", min=0
        ),
    },
    implements=(
        Implements(
            "XEP-0313",
            "1.1.1",
            status="partial",
            note="account archives with #extended; room archives reuse serve_query",
        ),
        Implements("XEP-0441", "0.2.0", note="always/roster/never preferences"),
        Implements("XEP-0059", "1.0", status="partial", note="MAM paging; no <index/>, no count"),
        Implements("XEP-0359", "0.7.0", status="partial", note="stanza-id by the archive"),
        Implements("XEP-0334", "0.3.0", status="partial", note="no-store, no-permanent-store"),
    ),
)
