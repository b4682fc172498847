"""XEP-0313 Message Archive Management for accounts, with XEP-0441 preferences.

Archiving. A message a user's client sends (`pre-message/*`, owner = the sender) and a message
an account receives (`message/*`, owner = the recipient) is appended to that owner's archive
(store `mam`, owner = the local part) when it is worth keeping (`archivable`, XEP-0313 §6.1.1)
and the owner's preferences allow it. A message between two local users is in both archives,
under different ids; one between two resources of an account is kept once, as received.
Archiving runs before delivery and is awaited, so stream management acknowledges a message
only after the archive (or, while the database is unreachable, the durable spool of
`mam_spool.py`) holds it; live delivery never waits for a database outage.

Stanza ids (XEP-0359, XEP-0313 §3.5). `<stanza-id by=...>` naming any JID of our hosts is
removed from what clients send (only the server speaks for its archives). Each archived incoming
message then carries `<stanza-id by=account id=archive id>`, which carbons and offline storage
keep. Outgoing messages carry the sender's id only while sent carbons are made.

Queries. `serve_query` (store + owner + query element -> result messages + fin) and its parts
`parse_query`, `run_query`, `result_messages`, `fin`, `query_form`, `metadata` are independent
of accounts: a MUC room serves its archive with them.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from lxml import etree

from auth.base import AuthError

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import forms, rsm
from ..protocol import namespaces as ns
from ..protocol import stanza as st
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, get_child, sub
from ..router import StanzaEvent
from ..storage.base import (
    ArchiveItem,
    ArchivePage,
    ArchiveRecord,
    ArchiveStore,
    StorageError,
    UnknownArchiveId,
)
from .carbons import copies_wanted
from .mam_pending import Entry, PendingArchive
from .mam_spool import OutageSpool

if TYPE_CHECKING:
    from ..session import Session

XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"  # XEP-0122
_STANZA_ID = st.qname(ns.SID, "stanza-id")
_BODY = st.qname(ns.CLIENT, "body")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
# Payloads that are conversation although they lack a body: encrypted messages, receipts and
# markers, invitations, call setup.
_CONVERSATION = frozenset({ns.EME, ns.RECEIPTS, ns.MARKERS, ns.CONFERENCE, ns.JINGLE_MESSAGE})
_FIELDS = frozenset({"with", "start", "end", "before-id", "after-id", "ids", "include-groupchat"})
# XEP-0082 DateTime: the time zone is required.
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
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


def stamp(when: datetime.datetime) -> str:
    """XEP-0082 DateTime in UTC, to the microsecond the archive keeps (a client can reuse it
    as an exact start or end)."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- queries (shared with room archives) ------------------------------------------------------


class QueryError(Exception):
    """A query the archive refuses: answer `condition` (RFC 6120 §8.3.3) with `text`."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(slots=True)
class Query:
    queryid: str | None = None
    with_jid: str | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    after_id: str | None = None  # form 'after-id' (#extended)
    before_id: str | None = None  # form 'before-id'
    ids: list[str] = field(default_factory=list)
    page: rsm.Request = field(default_factory=rsm.Request)
    limit: int = 50
    flip: bool = False


def query_form() -> Element:
    """The fields a query may use (§4.1.5), in the `<query/>` answering a get."""
    query = element(ns.MAM, "query")
    types = {"with": "jid-single", "ids": "list-multi", "include-groupchat": "boolean"}
    names = ("with", "start", "end", "before-id", "after-id", "ids", "include-groupchat")
    x = forms.build(ns.MAM, [forms.Field(n, types.get(n, "text-single")) for n in names])
    for f in x:
        if f.get("var") == "ids":  # §4.1.5: an open list, never the list of all ids
            sub(sub(f, XDATA_VALIDATE, "validate", datatype="xs:string"), XDATA_VALIDATE, "open")
    query.append(x)
    return query


def parse_query(query: Element, *, default_limit: int, max_limit: int) -> Query:
    """Read a `<query xmlns='urn:xmpp:mam:2'/>` (form and RSM set); QueryError when it is bad.

    A page larger than `max_limit` is cut to it (XEP-0313 §4.3.1 lets the server limit pages;
    the fin then says the results are not complete)."""
    if query.get("node") is not None:
        raise QueryError("item-not-found", "this archive has no nodes")
    try:
        values = _form_values(query)
        unknown = sorted(set(values) - _FIELDS)
        if unknown:  # §4.1.5
            raise QueryError("feature-not-implemented", f"unknown query field {unknown[0]!r}")
        forms.boolean(values, "include-groupchat")  # user archives hold no groupchat anyway
        page = rsm.find(query) or rsm.Request()
        q = Query(
            queryid=query.get("queryid"),
            with_jid=_jid(forms.single(values, "with")),
            start=_datetime(forms.single(values, "start")),
            end=_datetime(forms.single(values, "end")),
            after_id=forms.single(values, "after-id") or None,
            before_id=forms.single(values, "before-id") or None,
            ids=list(dict.fromkeys(v for v in values.get("ids", []) if v)),
            page=page,
            flip=get_child(query, ns.MAM, "flip-page") is not None,
        )
    except (forms.FormError, rsm.RSMError, ValueError) as exc:
        raise QueryError("bad-request", str(exc)) from exc
    if page.index is not None:
        raise QueryError("feature-not-implemented", "page with <after/> or <before/>, not <index/>")
    if len(q.ids) > max_limit:
        raise QueryError("policy-violation", f"at most {max_limit} ids in one query")
    q.limit = min(default_limit if page.max is None else page.max, max_limit)
    return q


def _form_values(query: Element) -> dict[str, list[str]]:
    x = get_child(query, ns.DATA_FORMS, "x")
    return {} if x is None else forms.parse_submission(x, ns.MAM)


def _jid(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(JID.parse(text))
    except JIDError as exc:
        raise ValueError(f"'with' is not a JID: {exc}") from exc


def _datetime(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a XEP-0082 DateTime")
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def run_query(store: ArchiveStore, owner: str, q: Query) -> ArchivePage:
    """The page `q` asks for. RSM's cursor pages within the form's range; when both name an
    id on one side, the cursor (taken from an earlier page of this range) bounds the page and
    the form's id is only checked to exist. item-not-found for any unknown id (§4.1.3, §4.3.2).
    """
    try:
        if q.ids:
            return await _by_ids(store, owner, q)
        page = q.page
        after = page.after if page.after is not None else q.after_id
        before = page.before or q.before_id
        for shadowed in (q.after_id if page.after is not None else None, q.before_id):
            if shadowed is not None and shadowed != before:
                await store.query(owner, after_id=shadowed, limit=0)
        return await store.query(
            owner,
            with_jid=q.with_jid,
            start=q.start,
            end=q.end,
            after_id=after,
            before_id=before,
            limit=q.limit,
            backward=page.backward,
        )
    except UnknownArchiveId as exc:
        raise QueryError("item-not-found", "no message with that id in this archive") from exc


async def _by_ids(store: ArchiveStore, owner: str, q: Query) -> ArchivePage:
    """Single-item retrieval (#extended): each id, then the query's other filters."""
    items = [await _fetch(store, owner, id_) for id_ in q.ids]
    items = [item for item in items if _matches(item, q)]
    items.sort(key=lambda item: item.timestamp)
    return ArchivePage(items=items, complete=True)


async def _fetch(store: ArchiveStore, owner: str, id_: str) -> ArchiveItem:
    """One item by id through the store's cursors: the item just before the one after it (or
    the newest). A message archived in between makes the guess miss: try again."""
    for _attempt in range(3):
        following = await store.query(owner, after_id=id_, limit=1)  # UnknownArchiveId if absent
        if following.items:
            page = await store.query(owner, before_id=following.items[0].id, backward=True, limit=1)
        else:
            page = await store.query(owner, backward=True, limit=1)
        if page.items and page.items[0].id == id_:
            return page.items[0]
    raise QueryError("resource-constraint", "the archive is changing too fast; try again")


def _matches(item: ArchiveItem, q: Query) -> bool:
    if q.start is not None and item.timestamp < q.start:
        return False
    if q.end is not None and item.timestamp > q.end:
        return False
    if q.with_jid is None:
        return True
    if "/" in q.with_jid:
        return item.with_jid == q.with_jid
    return item.with_jid.partition("/")[0] == q.with_jid


def result_messages(items: list[ArchiveItem], q: Query, *, archive: str, to: str) -> list[Element]:
    """One `<message><result><forwarded>` per item (§4.2), in archive order, or newest first
    for `<flip-page/>`."""
    out = []
    for item in reversed(items) if q.flip else items:
        message = st.make("message", {"from": archive, "to": to, "id": uuid.uuid4().hex})
        result = sub(message, ns.MAM, "result", id=item.id)
        if q.queryid is not None:
            result.set("queryid", q.queryid)
        forwarded = sub(result, ns.FORWARD, "forwarded")
        sub(forwarded, ns.DELAY, "delay", stamp=stamp(item.timestamp))
        forwarded.append(etree.fromstring(item.stanza_xml.encode(), _PARSER))
        out.append(message)
    return out


def fin(page: ArchivePage) -> Element:
    """The `<fin/>` for the iq result: complete when nothing lies beyond the page in its
    direction; RSM first/last are the page's oldest and newest ids. Results are stable (one
    database), so no 'stable' attribute (§4.3.2: absent means true)."""
    el = element(ns.MAM, "fin")
    if page.complete:
        el.set("complete", "true")
    items = page.items
    el.append(rsm.build(items[0].id if items else None, items[-1].id if items else None))
    return el


async def metadata(store: ArchiveStore, owner: str) -> Element:
    """§5: the oldest and newest items of the archive (nothing for an empty one)."""
    el = element(ns.MAM, "metadata")
    oldest = await store.query(owner, limit=1)
    newest = await store.query(owner, limit=1, backward=True)
    for name, page in (("start", oldest), ("end", newest)):
        for item in page.items:
            sub(el, ns.MAM, name, id=item.id, timestamp=stamp(item.timestamp))
    return el


async def serve_query(
    store: ArchiveStore,
    owner: str,
    query: Element,
    *,
    archive: str,
    to: str,
    default_limit: int,
    max_limit: int,
) -> tuple[list[Element], Element]:
    """Answer a query element: the result messages to send first, then the `<fin/>` for the iq
    result. QueryError for the iq error."""
    q = parse_query(query, default_limit=default_limit, max_limit=max_limit)
    page = await run_query(store, owner, q)
    return result_messages(page.items, q, archive=archive, to=to), fin(page)


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
