"""RFC 6121 §2: the roster — get, set, remove, pushes to interested resources, versioning.

Storage: map store "roster", one document per contact bare JID (key) of an account (user = the
local part). A document also carries subscription state that is not shown to clients (a pending
inbound request from someone not in the roster), and a removed item stays as a tombstone
(`listed` false) so that versioning (§2.6) can push removals. Each visible change stamps the
item with the next version number; the roster's version is the highest stamp. Tombstones beyond
`max_items` are pruned oldest first and the keyval store "roster_meta" remembers the newest
pruned stamp (`horizon`): clients older than that get the full roster. The meta also holds a
random `epoch`, part of every version string, so a wiped roster never matches a cached one.

A roster is cached in memory while its account has sessions (and while a change is under way);
every change is written to storage first and only then becomes visible in memory, pushed or
answered. `host.services["roster"]` is the `Rosters` object below (see its public methods).

Shared items (directory groups) are not stored: `Rosters.shared`, when a module sets it, computes
them per account, and every view of a roster (results, pushes, `get_item`, `items`, `peek`) shows
them merged with the stored item by `merge()`. Their tag joins the version string
(`epoch-number~tag`), so a change of shared membership changes the version.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, first_child, make, qname, reply, sub
from ..router import StanzaEvent
from ..storage import StorageError
from .roster_items import VISIBLE, Doc, Shared, blank, merge, public

if TYPE_CHECKING:
    from ..host import Host
    from ..session import Session

# For shared items the server rendered itself (no DTD, no entities): never the network.
_ITEMS_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_push_ids = itertools.count(1)


CAS_ATTEMPTS = 5  # a roster item changed by other nodes meanwhile: read again and redo


def _unchanged(cached: Doc | None) -> Callable[[Doc | None], bool]:
    """Is the stored document still the one we cached (compared as `_read` caches it)?"""

    def check(stored: Doc | None) -> bool:
        if stored is None or cached is None:
            return stored is None and cached is None
        return {**blank(), **stored} == cached

    return check


class RosterError(Exception):
    """A change refused with a stanza error condition."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(slots=True)
class Change:
    contact: str
    old: Doc
    new: Doc
    version: str

    @property
    def visible(self) -> bool:
        return any(self.old[k] != self.new[k] for k in VISIBLE)


class Roster:
    """One account's documents, as stored."""

    __slots__ = ("bare", "items", "epoch", "horizon", "lock", "users", "loaded")

    def __init__(self, bare: str) -> None:
        self.bare = bare
        self.items: dict[str, Doc] = {}
        self.epoch: str | None = None
        self.horizon = 0
        self.lock = trio.Lock()
        self.users = 0  # tasks using it; it stays cached while > 0
        self.loaded = False

    @property
    def number(self) -> int:
        return max([self.horizon, *(d["ver"] for d in self.items.values())])

    @property
    def version(self) -> str:
        return f"{self.epoch or '0'}-{self.number}"

    def listed(self) -> dict[str, Doc]:
        return {jid: d for jid, d in self.items.items() if d["listed"]}

    def known_number(self, ver: str) -> int | None:
        """The number in a client's version string if we can compute changes since it."""
        epoch, _, number = ver.rpartition("-")
        if ver == "0-0" and self.horizon == 0:
            return 0  # the empty roster before any change, whatever the epoch
        if epoch != (self.epoch or "0") or not number.isdigit():
            return None
        known = int(number)
        return known if self.horizon <= known <= self.number else None


class Rosters:
    """Roster storage, cache and pushes for one host; also the "roster" service."""

    def __init__(self, module: Module) -> None:
        self.host: Host = module.host
        self.store = module.open_map("roster")
        self.meta = module.open_keyval("roster_meta")
        self.max_items: int = module.options["max_items"]
        self.max_pending: int = module.options["max_pending"]
        self.cache: dict[str, Roster] = {}
        self.shared: Shared | None = None  # set by a module computing items (directory)
        # Cluster mode (xmppd/cluster.py): told of every stored change (change None) and
        # every push, so other nodes drop their cached copy and push to their sessions.
        self.replicate: Callable[[str, Change | None], None] | None = None

    # ---- the service API ------------------------------------------------------------------

    async def get_item(self, user: str, contact: str) -> dict[str, Any] | None:
        """The item for `contact` in `user`'s roster (bare JIDs), or None."""
        doc = self.view(user, contact, (await self.load(user)).items.get(contact))
        return public(contact, doc) if doc is not None and doc["listed"] else None

    async def items(self, user: str) -> list[dict[str, Any]]:
        return [public(jid, d) for jid, d in self.listed(user, await self.load(user)).items()]

    async def contacts(self, user: str, subscriptions: tuple[str, ...]) -> list[str]:
        """Bare JIDs of stored listed contacts whose subscription is one of `subscriptions`
        (shared contacts are not listed here: presence reaches the online ones its own way)."""
        roster = await self.load(user)
        return [jid for jid, d in roster.listed().items() if d["sub"] in subscriptions]

    async def presence_contacts(self, user: str, subscriptions: tuple[str, ...]) -> list[str]:
        """`contacts`, then the shared contacts that are online: whom presence (and PEP events)
        go to, without walking every member of a big shared group."""
        contacts = await self.contacts(user, subscriptions)
        if self.shared is not None:
            stored = set(contacts)
            contacts += [c for c in self.shared.online_contacts(user) if c not in stored]
        return contacts

    async def peek(self, user: str, contact: str) -> Doc | None:
        """One document, listed or not: from the cache, else one keyed read that caches nothing
        (a probe to an offline account costs a lookup, not a read of its whole roster)."""
        roster = self.cache.get(user)
        if roster is not None and roster.loaded:
            return self.view(user, contact, roster.items.get(contact))
        doc = await self.store.get(_local(user), contact)
        return self.view(user, contact, {**blank(), **doc} if doc is not None else None)

    def view(self, user: str, contact: str, doc: Doc | None) -> Doc | None:
        """The stored document merged with the shared item, as clients see it."""
        if self.shared is None:
            return doc
        return merge(doc, self.shared.item(user, contact))

    def listed(self, user: str, roster: Roster) -> dict[str, Doc]:
        """Every item the client sees: stored listed ones merged with the shared ones."""
        items = roster.listed()
        if self.shared is not None:
            for contact, name, groups in self.shared.items(user):
                items[contact] = merge(items.get(contact), (name, groups))  # type: ignore[assignment]
        return items

    def full_query(self, user: str, roster: Roster, version: str | None) -> Element:
        """The <query/> of a full roster result: shared items come pre-serialized; the stored
        listed items (merged with their shared part) are added as elements."""
        personal = roster.listed()
        if self.shared is None:
            query = element(ns.ROSTER, "query")
        else:
            inner = self.shared.render(user, set(personal))
            text = b"<query xmlns='%s'>%s</query>" % (ns.ROSTER.encode(), inner)
            query = etree.fromstring(text, _ITEMS_PARSER)
        if version is not None:
            query.set("ver", version)
        for jid, doc in sorted(personal.items()):
            item_element(query, jid, self.view(user, jid, doc) or doc)
        return query

    def version_of(self, roster: Roster) -> str:
        tag = self.shared.tag(roster.bare) if self.shared is not None else ""
        return f"{roster.version}~{tag}" if tag else roster.version

    def known_number(self, roster: Roster, ver: str) -> int | None:
        """Like `Roster.known_number`, and only while the shared tag is still the same."""
        ver, _, tag = ver.partition("~")
        mine = self.shared.tag(roster.bare) if self.shared is not None else ""
        return roster.known_number(ver) if tag == mine else None

    async def push_shared(self, user: str, contact: str) -> None:
        """A shared item changed: push what the user now sees of `contact` (a removal when
        nothing is left)."""
        if not any(s.interested for s in self.host.resources_of(user).values()):
            return
        roster = await self.load(user)
        doc = self.view(user, contact, roster.items.get(contact)) or blank()
        for session in list(self.host.resources_of(user).values()):
            if session.interested:
                self.push_to(session, contact, doc, self.version_of(roster), merged=True)

    async def load(self, user: str) -> Roster:
        """The account's roster; read-only for callers (use `update` to change it)."""
        roster = self.cache.get(user)
        if roster is not None and roster.loaded:
            return roster
        if roster is None and not self.host.resources_of(user):
            return await self._read(Roster(user))  # offline and idle: not cached
        async with self._use(user) as roster:
            return roster

    async def update(self, user: str, contact: str, change: Callable[[Doc], Doc]) -> Change:
        """Apply `change` to a copy of the item's document and store the result durably.

        `change` may raise RosterError. Nothing is pushed here: call `push()` when ready.
        """
        async with self._use(user) as roster:
            for _attempt in range(CAS_ATTEMPTS):
                cached = roster.items.get(contact)
                old = cached or blank()
                new = change({**old, "groups": list(old["groups"])})
                result = Change(contact, old, new, self.version_of(roster))
                if new == old:
                    return result
                self._check_limits(roster, old, new)
                if result.visible:
                    await self._ensure_epoch(roster)
                    new["ver"] = roster.number + 1
                key = _local(user)
                forget = not new["listed"] and not new["pending_in"] and new["ver"] == 0
                value = None if forget else new
                if await self.store.replace(key, contact, _unchanged(cached), value):
                    break
                # Another node changed the item since we cached it: read again, redo.
                await self._read(roster)
            else:
                raise StorageError(f"the roster item {contact} of {user} keeps changing")
            if self.replicate is not None:
                self.replicate(user, None)
            if forget:
                roster.items.pop(contact, None)
            else:
                roster.items[contact] = new
            if old["listed"] and not new["listed"]:
                await self._prune(roster)
            result.version = self.version_of(roster)
            return result

    async def apply(self, user: str, contact: str, change: Callable[[Doc], Doc]) -> Change:
        """`update` then `push`."""
        result = await self.update(user, contact, change)
        self.push(user, result)
        return result

    def push(self, user: str, change: Change) -> None:
        """RFC 6121 §2.1.6: a roster push to every interested resource."""
        if change.visible:
            if self.replicate is not None:
                self.replicate(user, change)
            for session in list(self.host.resources_of(user).values()):
                if session.interested:
                    self.push_to(session, change.contact, change.new, change.version)

    def push_to(
        self, session: Session, contact: str, doc: Doc, version: str, merged: bool = False
    ) -> None:
        if not merged:
            doc = self.view(session.bare, contact, doc) or doc
        iq = make("iq", {"type": "set", "id": f"push{next(_push_ids)}", "to": session.full})
        query = sub(iq, ns.ROSTER, "query", ver=version)
        item_element(query, contact, doc)
        self.host.deliver_to_full(session.full, iq)

    # ---- a deleted account ------------------------------------------------------------------

    async def account_deleted(self, event: AccountDeleted) -> bool:
        """Its roster goes, and so does every item naming it in the rosters of every host here
        (contacts, pending requests): the contact's sessions get `unsubscribed` and a push
        removing the item. Remote contacts are told with unsubscribe + unsubscribed."""
        own = await self._read(Roster(event.bare))
        for contact, doc in own.items.items():
            if doc["listed"] and contact.partition("@")[2] not in self.host.hosts:
                for type_ in ("unsubscribe", "unsubscribed"):
                    attrs = {"type": type_, "from": event.bare, "to": contact}
                    await self.host.route(None, make("presence", attrs))
        await self.store.delete_user(event.local)
        await self.meta.set(event.local, None)
        self.cache.pop(event.bare, None)
        for host in self.host.hosts.values():
            rosters = host.services.get("roster")
            if isinstance(rosters, Rosters):
                for user in await rosters.store.users_with_key(event.bare):
                    await rosters.drop_contact(f"{user}@{host.domain}", event.bare)
        return False

    async def drop_contact(self, user: str, contact: str) -> None:
        """Remove `contact` from `user`'s roster without a trace: the item (pushed as removed),
        then its tombstone, moving the horizon so older versions get the full roster."""
        doc = await self.peek(user, contact)
        if doc is not None and doc["listed"] and (doc["sub"] in ("to", "both") or doc["ask"]):
            gone = make("presence", {"type": "unsubscribed", "from": contact, "to": user})
            for session in list(self.host.resources_of(user).values()):
                if session.available:
                    self.host.deliver_to_full(session.full, gone)
        self.push(user, await self.update(user, contact, lambda d: {**blank(), "ver": d["ver"]}))
        async with self._use(user) as roster:
            tombstone = roster.items.pop(contact, None)
            if tombstone is None:
                return
            roster.horizon = max(roster.horizon, tombstone["ver"])
            key = _local(user)
            await self.meta.set(key, {"epoch": roster.epoch, "horizon": roster.horizon})
            await self.store.set(key, contact, None)

    # ---- limits ----------------------------------------------------------------------------

    def _check_limits(self, roster: Roster, old: Doc, new: Doc) -> None:
        listed = sum(1 for d in roster.items.values() if d["listed"])
        if new["listed"] and not old["listed"] and listed >= self.max_items:
            raise RosterError("not-allowed", f"the roster is full ({self.max_items} items)")
        if new["pending_in"] and not new["listed"] and not old["pending_in"]:
            pending = sum(1 for d in roster.items.values() if d["pending_in"] and not d["listed"])
            if pending >= self.max_pending:
                raise RosterError("not-allowed", "too many subscription requests are pending")

    # ---- storage and cache -----------------------------------------------------------------

    @asynccontextmanager
    async def _use(self, user: str) -> AsyncIterator[Roster]:
        roster = self.cache.get(user)
        if roster is None:
            roster = self.cache[user] = Roster(user)
        roster.users += 1
        try:
            async with roster.lock:
                if not roster.loaded:
                    await self._read(roster)
                yield roster
        except StorageError:
            # Memory may now differ from the disk: start again from the disk next time.
            roster.loaded = False
            self.cache.pop(user, None)
            raise
        finally:
            roster.users -= 1
            self.evict(user)

    def stale(self, user: str) -> None:
        """Another node changed this roster in storage: read it again at the next use."""
        roster = self.cache.get(user)
        if roster is not None:
            roster.loaded = False

    def evict(self, user: str) -> None:
        """Drop the cached roster of an account nobody is using any more."""
        roster = self.cache.get(user)
        if roster is not None and roster.users == 0 and not self.host.resources_of(user):
            del self.cache[user]

    async def _read(self, roster: Roster) -> Roster:
        key = _local(roster.bare)
        docs = await self.store.get_all(key)
        meta = await self.meta.get(key) or {}
        roster.items = {jid: {**blank(), **doc} for jid, doc in docs.items()}
        roster.epoch = meta.get("epoch")
        roster.horizon = meta.get("horizon", 0)
        roster.loaded = True
        return roster

    async def _ensure_epoch(self, roster: Roster) -> None:
        if roster.epoch is None:
            epoch = secrets.token_hex(4)
            await self.meta.set(_local(roster.bare), {"epoch": epoch, "horizon": roster.horizon})
            roster.epoch = epoch

    async def _prune(self, roster: Roster) -> None:
        """Keep at most `max_items` tombstones; remember the newest one forgotten."""
        tombstones = sorted(
            (d["ver"], jid)
            for jid, d in roster.items.items()
            if not d["listed"] and not d["pending_in"]
        )
        excess = tombstones[: max(0, len(tombstones) - self.max_items)]
        if not excess:
            return
        horizon = excess[-1][0]
        key = _local(roster.bare)
        # Horizon first: a crash in between only makes some clients fetch the full roster.
        await self.meta.set(key, {"epoch": roster.epoch, "horizon": horizon})
        roster.horizon = horizon
        for _ver, jid in excess:
            await self.store.set(key, jid, None)
            del roster.items[jid]


def _local(bare: str) -> str:
    return bare.partition("@")[0]


def item_element(parent: Element, contact: str, doc: Doc) -> Element:
    """An <item/> as RFC 6121 §2.1.2 shows it; a tombstone is subscription='remove'."""
    if not doc["listed"]:
        return sub(parent, ns.ROSTER, "item", jid=contact, subscription="remove")
    item = sub(parent, ns.ROSTER, "item", jid=contact, subscription=doc["sub"])
    if doc["name"]:
        item.set("name", doc["name"])
    if doc["ask"]:
        item.set("ask", "subscribe")
    if doc["approved"]:
        item.set("approved", "true")
    for group in doc["groups"]:
        sub(item, ns.ROSTER, "group", group)
    return item


@dataclass(frozen=True, slots=True)
class ItemRemoved:
    """Payload of `roster-item-removed`: the item as it was before the client removed it."""

    user: str
    contact: str
    item: Doc


# ---- the iq handlers --------------------------------------------------------------------------


def load(module: Module) -> None:
    host = module.host
    opts = module.options
    rosters = Rosters(module)
    host.services["roster"] = rosters
    host.events.declare("roster-item-removed")  # ItemRemoved, after the removal was pushed
    module.add_feature(ns.ROSTER)
    if opts["versioning"]:
        module.add_stream_feature(element(ns.ROSTER_VER, "ver"))

    async def roster_get(event: StanzaEvent) -> bool:
        session = event.origin
        if session is None:
            return await event.reply_error("forbidden")
        try:
            roster = await rosters.load(session.bare)
        except StorageError:
            module.log.exception("cannot read the roster of %s", session.bare)
            return await event.reply_error("internal-server-error", "the roster is unavailable")
        ver = first_child(event.stanza).get("ver")
        versioned = ver is not None and opts["versioning"]
        known = rosters.known_number(roster, ver) if versioned else None
        session.interested = True
        if known is not None:
            # RFC 6121 §2.6.3: an empty result, then a push per change since `ver`, in order.
            await event.reply(reply(event.stanza))
            changed = sorted((d["ver"], jid) for jid, d in roster.items.items() if d["ver"] > known)
            tag = ver.partition("~")[2]
            for number, jid in changed:
                version = f"{roster.epoch or '0'}-{number}" + (f"~{tag}" if tag else "")
                rosters.push_to(session, jid, roster.items[jid], version)
            return True
        result = reply(event.stanza)
        version = rosters.version_of(roster) if opts["versioning"] else None
        result.append(rosters.full_query(session.bare, roster, version))
        return await event.reply(result)

    async def roster_set(event: StanzaEvent) -> bool:
        session = event.origin
        if session is None:
            return await event.reply_error("forbidden")
        try:
            contact, item = parse_set(first_child(event.stanza), session.bare, opts)
            if item.get("subscription") == "remove":
                change = await rosters.update(session.bare, contact, remove)
            else:
                name = item.get("name") or None
                groups = [g.text or "" for g in item.iterchildren(qname(ns.ROSTER, "group"))]
                change = await rosters.update(session.bare, contact, edit(name, groups))
        except RosterError as exc:
            return await event.reply_error(exc.condition, exc.text)
        except StorageError:
            module.log.exception("roster change for %s failed", session.bare)
            return await event.reply_error("internal-server-error", "the roster was not saved")
        await event.reply(reply(event.stanza))
        rosters.push(session.bare, change)
        if change.old["listed"] and not change.new["listed"]:
            await host.events.fire(
                "roster-item-removed", ItemRemoved(session.bare, contact, change.old)
            )
        return True

    async def not_yours(event: StanzaEvent) -> bool:
        # RFC 6121 §2.1.5 / §2.3.3: only the account itself reads or changes its roster.
        return await event.reply_error("forbidden")

    async def session_closed(session: Session) -> bool:
        rosters.evict(session.bare)
        return False

    module.hook_iq("get/self", ns.ROSTER, "query", roster_get)
    module.hook_iq("set/self", ns.ROSTER, "query", roster_set)
    module.hook_iq("get/bare set/bare get/host set/host", ns.ROSTER, "query", not_yours)
    module.hook("session-closed", session_closed, -1)
    module.hook("account-deleted", rosters.account_deleted)


def parse_set(query: Element, own: str, opts: dict[str, Any]) -> tuple[str, Element]:
    """Check a roster set (RFC 6121 §2.3.3, §2.5.3); returns the contact's bare JID and item."""
    children = [c for c in query if isinstance(c.tag, str)]
    if len(children) != 1 or children[0].tag != qname(ns.ROSTER, "item"):
        raise RosterError("bad-request", "a roster set carries exactly one <item/>")
    item = children[0]
    text = item.get("jid")
    if not text:
        raise RosterError("bad-request", "the item has no jid")
    try:
        jid = JID.parse(text)
    except JIDError as exc:
        raise RosterError("jid-malformed", str(exc)) from exc
    if jid.resource is not None:
        raise RosterError("bad-request", "roster items are bare JIDs")
    if str(jid) == own:
        raise RosterError("not-allowed", "your own JID cannot be in your roster")
    if item.get("subscription") == "remove":
        return str(jid), item
    name = item.get("name") or ""
    if len(name) > opts["max_name_length"]:
        raise RosterError(
            "not-acceptable", f"names are limited to {opts['max_name_length']} characters"
        )
    groups = [g.text or "" for g in item.iterchildren(qname(ns.ROSTER, "group"))]
    if len(set(groups)) != len(groups):
        raise RosterError("bad-request", "duplicate groups")
    if "" in groups:
        raise RosterError("not-acceptable", "empty group name")
    if any(len(g) > opts["max_group_length"] for g in groups):
        raise RosterError(
            "not-acceptable", f"group names are limited to {opts['max_group_length']}"
        )
    if len(groups) > opts["max_groups"]:
        raise RosterError("not-acceptable", f"at most {opts['max_groups']} groups per item")
    return str(jid), item


def edit(name: str | None, groups: list[str]) -> Callable[[Doc], Doc]:
    def change(doc: Doc) -> Doc:
        # RFC 6121 §2.1.5: 'subscription', 'ask' and 'approved' from the client are ignored.
        return {**doc, "listed": True, "name": name, "groups": groups}

    return change


def remove(doc: Doc) -> Doc:
    """RFC 6121 §2.5: the item goes; the subscription stanzas follow (roster-item-removed)."""
    if not doc["listed"]:
        raise RosterError("item-not-found", "no such item in the roster")
    return {**blank(), "ver": doc["ver"], "listed": False}


spec = ModuleSpec(
    name="roster",
    summary="contact lists: get, set, remove, pushes to interested resources, versioning",
    load=load,
    options={
        "versioning": Option(bool, True, "offer roster versioning (RFC 6121 §2.6)"),
        "max_items": Option(int, 1000, "items per roster; more is refused with not-allowed", min=1),
        "max_pending": Option(int, 100, "unanswered subscription requests kept per account", min=1),
        "max_name_length": Option(int, 256, "characters in an item's name", min=1),
        "max_groups": Option(int, 32, "groups per item", min=0),
        "max_group_length": Option(int, 256, "characters in a group name", min=1),
    },
    implements=(
        Implements("RFC 6121", status="complete", note="§2 roster management and versioning"),
    ),
)
