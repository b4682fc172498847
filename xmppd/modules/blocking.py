"""XEP-0191 Blocking Command: a user blocks communications with JIDs.

- Lists live in keyval store `blocklist` (`{"items": [jid, ...]}` per user) and are all held in
  memory once loaded, so `is_blocked()` (published as `host.services["blocking"]`) answers
  synchronously. Only accounts that block someone have a list, so loading them all at the
  first stanza is cheap.
- Matching (§6): an item `user@domain/resource` or `domain/resource` matches that address only,
  `user@domain` any of its resources, `domain` everything at that domain and its subdomains. A
  user's own resources and own server are never blocked (§5 note).
- Inbound from a blocked JID (§3.3): presence dropped, message (normal, chat) and iq get/set
  answered `service-unavailable`, anything else dropped. Outbound to a blocked JID: `not-acceptable`
  with `<blocked xmlns='urn:xmpp:blocking:errors'/>`; errors and iq results silently dropped.
- The user's availability presence never reaches a blocked JID: server-made broadcasts only run
  `presence/*` hooks on the recipient's host, so those check the sender's list too.
  Subscription management presence (e.g. the unsubscribe of a roster removal) still passes.
- Block: unavailable presence from each available resource to a newly blocked JID allowed to see
  it (subscription from/both, or directed presence); its pending subscription request is dropped
  (it could not be answered: the answer would bounce). Unblock: current presence to each
  unblocked JID with subscription from/both, a probe to those with to/both. Pushes go to the
  user's sessions that fetched the list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import (
    element,
    error_reply,
    first_child,
    local_name,
    make,
    qname,
    reply,
    sub,
)
from ..router import StanzaEvent
from ..storage import StorageError

if TYPE_CHECKING:
    from ..session import Session

_ITEM = qname(ns.BLOCKING, "item")
_AVAILABILITY = (None, "unavailable", "probe")


def matches(items: frozenset[str], jid: JID) -> bool:
    """XEP-0191 §6 JID matching of one address against a list of blocked JIDs."""
    if str(jid) in items or (jid.local is not None and str(jid.bare) in items):
        return True
    domain: str | None = jid.domain
    while domain:  # a <domain> item also matches addresses at its subdomains
        if domain in items:
            return True
        domain = domain.partition(".")[2]
    return False


class Blocking:
    """The blocklists of one host and the handlers that enforce them."""

    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.log = module.log
        self.store = module.open_keyval("blocklist")
        self.max_items: int = module.options["max_items"]
        self.lists: dict[str, frozenset[str]] = {}  # bare JID -> blocked JIDs (non-empty only)
        self.loaded = False
        self.lock = trio.Lock()  # one edit at a time: read, store, then cache
        self.interested: dict[str, set[Session]] = {}  # bare -> sessions that fetched the list
        self.pushes = 0
        # Cluster mode (xmppd/cluster.py): called after each stored edit, so the other nodes
        # replace their copy of the list and push the change to their sessions.
        self.replicate: Callable[[str, frozenset[str], str, list[str]], None] | None = None

    # ---- the service others use ---------------------------------------------------------------

    def is_blocked(self, user_bare: str, jid: JID | str) -> bool:
        """Does `user_bare` block `jid`? Answers from memory (see `ready()`)."""
        items = self.lists.get(user_bare)
        if not items:
            return False
        if isinstance(jid, str):
            try:
                jid = JID.parse(jid)
            except JIDError:
                return False
        if str(jid.bare) == user_bare or (jid.local is None and jid.domain == self.host.domain):
            return False  # own resources and own server
        return matches(items, jid)

    async def account_deleted(self, event: AccountDeleted) -> bool:
        async with self.lock:
            await self.store.set(event.local, None)
            self.lists.pop(event.bare, None)
            self.interested.pop(event.bare, None)
        return False

    async def ready(self) -> None:
        """Load every stored list once; later calls return at once."""
        if self.loaded:
            return
        async with self.lock:
            if self.loaded:
                return
            for user in await self.store.users():
                items = frozenset(((await self.store.get(user)) or {}).get("items", ()))
                if items:
                    self.lists[f"{user}@{self.host.domain}"] = items
            self.loaded = True

    # ---- enforcement --------------------------------------------------------------------------

    async def inbound(self, event: StanzaEvent) -> bool:
        """`<kind>/full|bare` on the recipient's host."""
        if event.sender is None or event.to is None:
            return False
        await self.ready()
        if self.is_blocked(str(event.to.bare), event.sender):
            return await self.refuse(event)
        if event.kind == "presence":
            return await self.from_blocking_user(event)
        return False

    async def refuse(self, event: StanzaEvent) -> bool:
        type_ = event.stanza.get("type")
        if event.kind == "iq" and type_ in ("get", "set"):
            return await event.reply_error("service-unavailable")
        if event.kind == "message" and type_ in (None, "normal", "chat"):
            return await event.reply_error("service-unavailable")
        return True  # presence and everything else: dropped without a word

    async def from_blocking_user(self, event: StanzaEvent) -> bool:
        """Availability presence from a local user to a JID that user blocks is dropped."""
        sender, to = event.sender, event.to
        assert sender is not None and to is not None
        if event.stanza.get("type") not in _AVAILABILITY or sender.local is None:
            return False
        sender_host = self.host.hosts.get(sender.domain)
        service = sender_host.services.get("blocking") if sender_host is not None else None
        if service is None:
            return False
        await service.ready()
        return service.is_blocked(str(sender.bare), to)

    async def outbound(self, event: StanzaEvent) -> bool:
        """`pre-<kind>/full|bare|host`: the user's own stanzas to a JID it blocks."""
        session, to = event.origin, event.to
        if session is None or to is None:
            return False
        await self.ready()
        if not self.is_blocked(session.bare, to):
            return False
        type_ = event.stanza.get("type")
        if type_ == "error" or (event.kind == "iq" and type_ == "result"):
            return True
        error = error_reply(
            event.stanza,
            "not-acceptable",
            "you have blocked this address",
            type_="cancel",
            app_condition=element(ns.BLOCKING_ERRORS, "blocked"),
        )
        # Straight to the session: routed, it would come "from" the blocked JID and be dropped.
        self.host.deliver_to_full(session.full, error)
        return True

    # ---- the protocol -------------------------------------------------------------------------

    async def get_list(self, event: StanzaEvent) -> bool:
        session = event.origin
        assert session is not None
        await self.ready()
        self.interested.setdefault(session.bare, set()).add(session)  # §3.3: gets pushes
        result = reply(event.stanza)
        blocklist = sub(result, ns.BLOCKING, "blocklist")
        for jid in sorted(self.lists.get(session.bare, ())):
            sub(blocklist, ns.BLOCKING, "item", jid=jid)
        return await event.reply(result)

    async def edit(self, event: StanzaEvent) -> bool:
        session, action = event.origin, first_child(event.stanza)
        assert session is not None and action is not None
        blocking = local_name(action) == "block"
        jids: list[str] = []
        for item in action.iterchildren(_ITEM):
            try:
                jids.append(str(JID.parse(item.get("jid") or "")))
            except JIDError as exc:
                return await event.reply_error("jid-malformed", str(exc))
        if blocking and not jids:
            return await event.reply_error("bad-request", "block at least one <item/>")
        await self.ready()
        async with self.lock:
            old = self.lists.get(session.bare, frozenset())
            if blocking:
                new = old | frozenset(jids)
            else:
                new = old - frozenset(jids) if jids else frozenset()
            if len(new) > self.max_items:
                return await event.reply_error(
                    "not-acceptable", f"at most {self.max_items} blocked addresses"
                )
            try:
                doc = {"items": sorted(new)} if new else None
                await self.store.set(session.jid.local or "", doc)
            except StorageError as exc:
                self.log.error("cannot store the blocklist of %s: %s", session.bare, exc)
                return await event.reply_error("internal-server-error")
            if blocking:
                await self.went_away(session.bare, new - old)  # while not yet blocked in memory
            self.replace(session.bare, new)
            if self.replicate is not None:
                self.replicate(session.bare, new, local_name(action), jids)
        await event.reply(reply(event.stanza))
        self.push(session.bare, local_name(action), jids)
        if blocking:
            await self.drop_requests(session.bare)
        else:
            await self.came_back(session.bare, old - new)
        return True

    async def drop_requests(self, bare: str) -> None:
        """Pending subscription requests from now blocked JIDs go (see subscriptions.py)."""
        subscriptions = self.host.services.get("subscriptions")
        if subscriptions is None:
            return
        try:
            await subscriptions.drop_requests(bare, lambda jid: self.is_blocked(bare, jid))
        except StorageError as exc:
            self.log.error("cannot drop the blocked requests of %s: %s", bare, exc)

    def replace(self, bare: str, items: frozenset[str]) -> None:
        """The list in memory (also when another node stored a new one)."""
        if items:
            self.lists[bare] = items
        else:
            self.lists.pop(bare, None)

    def push(self, bare: str, action: str, jids: list[str]) -> None:
        """§3.3-§3.5: the change goes to every resource that has fetched the list."""
        for session in list(self.interested.get(bare, ())):
            self.pushes += 1
            iq = make(
                "iq", {"type": "set", "id": f"blocklist-push-{self.pushes}", "to": session.full}
            )
            change = sub(iq, ns.BLOCKING, action)
            for jid in jids:
                sub(change, ns.BLOCKING, "item", jid=jid)
            self.host.deliver_to_full(session.full, iq)

    def forget(self, session: Session) -> None:
        sessions = self.interested.get(session.bare)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.interested[session.bare]

    # ---- presence on block and unblock --------------------------------------------------------

    async def contacts(self, bare: str, items: frozenset[str]) -> dict[str, str]:
        """Roster contacts the items cover, address -> subscription: a contact whose JID an
        item matches (a bare JID, or a domain with its subdomains), and an item that is a full
        JID of a contact (that resource alone)."""
        roster = self.host.services.get("roster")
        if roster is None:
            return {}
        resources: dict[str, list[str]] = {}
        for blocked in items:
            if "/" in blocked:
                resources.setdefault(blocked.partition("/")[0], []).append(blocked)
        found: dict[str, str] = {}
        for item in await roster.items(bare):
            contact, subscription = item["jid"], item["subscription"]
            if _matches_text(items, contact):
                found[contact] = subscription
            for full in resources.get(contact, ()):
                found[full] = subscription
        return found

    async def went_away(self, bare: str, blocked: frozenset[str]) -> None:
        """§3.3: unavailable from each available resource to each JID that could see it."""
        sessions = [s for s in self.host.resources_of(bare).values() if s.available]
        if not sessions:
            return
        covered = await self.contacts(bare, blocked)
        subscribers = {jid for jid, sub in covered.items() if sub in ("from", "both")}
        for session in sessions:
            targets = subscribers | {d for d in session.directed or () if _matches_text(blocked, d)}
            for target in sorted(targets):
                gone = make("presence", {"type": "unavailable", "from": session.full})
                gone.set("to", target)
                await self.host.route(None, gone)

    async def came_back(self, bare: str, unblocked: frozenset[str]) -> None:
        """§3.4: current presence to each unblocked JID allowed to see it; and since its own
        presence was dropped while blocked, a probe for it."""
        presence = self.host.services.get("presence")
        if presence is None or not self.host.resources_of(bare):
            return
        probed: set[str] = set()
        for jid, subscription in sorted((await self.contacts(bare, unblocked)).items()):
            if subscription in ("from", "both"):
                await presence.send_current(bare, jid)
            contact = jid.partition("/")[0]
            if subscription in ("to", "both") and contact not in probed:
                probed.add(contact)
                probe = {"type": "probe", "from": bare, "to": contact}
                await self.host.route(None, make("presence", probe))


def _matches_text(items: frozenset[str], jid_text: str) -> bool:
    try:
        return matches(items, JID.parse(jid_text))
    except JIDError:
        return False


def load(module: Module) -> None:
    service = Blocking(module)
    module.host.services["blocking"] = service
    module.add_feature(ns.BLOCKING)
    module.hook_iq("get/self", ns.BLOCKING, "blocklist", service.get_list)
    module.hook_iq("set/self", ns.BLOCKING, "block", service.edit)
    module.hook_iq("set/self", ns.BLOCKING, "unblock", service.edit)
    for kind in ("message", "presence", "iq"):
        for scope in ("full", "bare"):
            module.hook(f"{kind}/{scope}", service.inbound, 100)
        for scope in ("full", "bare", "host"):
            module.hook(f"pre-{kind}/{scope}", service.outbound, 100)

    async def bound(_session: Session) -> bool:
        await service.ready()  # loaded by the first login, before others may ask is_blocked()
        return False

    async def closed(session: Session) -> bool:
        service.forget(session)
        return False

    module.hook("session-bound", bound)
    module.hook("session-closed", closed)
    module.hook("account-deleted", service.account_deleted)


spec = ModuleSpec(
    name="blocking",
    summary="lets users block communications with JIDs (XEP-0191)",
    load=load,
    options={
        "max_items": Option(int, 1000, "blocked JIDs per account", min=1),
    },
    implements=(Implements("XEP-0191", "1.3"),),
)
