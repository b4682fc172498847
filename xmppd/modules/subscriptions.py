"""RFC 6121 §3 and Appendix A: presence subscriptions, pre-approval, pending requests.

The state of a contact (RFC 6121 Appendix A.1: "None", "None + Pending Out", ... "Both") is kept
in the roster document as `sub`, `ask` (pending out) and `pending_in`. The tables below are
Appendix A.2 (the sender's server, outbound) and A.3 (the recipient's server, inbound): each
maps the states that change to their new state; the others keep theirs.

Outbound subscription stanzas are stamped with the bare JIDs of both parties (§3.1.2) and routed
by the server itself, so the contact's host sees them as inbound ones. An unanswered request is
stored with the contact's roster and delivered again at each initial presence until answered,
or dropped when the user blocks its sender (`host.services["subscriptions"].drop_requests`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import PRESENCE, Element, copy, element, make
from ..router import StanzaEvent
from ..storage import StorageError
from .roster import Doc, ItemRemoved, RosterError, Rosters

if TYPE_CHECKING:
    from ..host import Host
    from ..session import Session
    from .presence import Presence

TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})

# Appendix A.1: state name -> (subscription, pending out, pending in)
STATES: dict[str, tuple[str, bool, bool]] = {
    "None": ("none", False, False),
    "None + Pending Out": ("none", True, False),
    "None + Pending In": ("none", False, True),
    "None + Pending Out+In": ("none", True, True),
    "To": ("to", False, False),
    "To + Pending In": ("to", False, True),
    "From": ("from", False, False),
    "From + Pending Out": ("from", True, False),
    "Both": ("both", False, False),
}
# Appendix A.2: the user's server, on a stanza the user sends.
OUTBOUND: dict[str, dict[str, str]] = {
    "subscribe": {
        "None": "None + Pending Out",
        "None + Pending In": "None + Pending Out+In",
        "From": "From + Pending Out",
    },
    "unsubscribe": {
        "None + Pending Out": "None",
        "None + Pending Out+In": "None + Pending In",
        "To": "None",
        "To + Pending In": "None + Pending In",
        "From + Pending Out": "From",
        "Both": "From",
    },
    "subscribed": {
        "None + Pending In": "From",
        "None + Pending Out+In": "From + Pending Out",
        "To + Pending In": "Both",
    },
    "unsubscribed": {
        "None + Pending In": "None",
        "None + Pending Out+In": "None + Pending Out",
        "To + Pending In": "To",
        "From": "None",
        "From + Pending Out": "None + Pending Out",
        "Both": "To",
    },
}
# Appendix A.3: the contact's server, on a stanza addressed to the contact.
INBOUND: dict[str, dict[str, str]] = {
    "subscribe": {
        "None": "None + Pending In",
        "None + Pending Out": "None + Pending Out+In",
        "To": "To + Pending In",
    },
    "unsubscribe": {
        "None + Pending In": "None",
        "None + Pending Out+In": "None + Pending Out",
        "To + Pending In": "To",
        "From": "None",
        "From + Pending Out": "None + Pending Out",
        "Both": "To",
    },
    "subscribed": {
        "None + Pending Out": "To",
        "None + Pending Out+In": "To + Pending In",
        "From + Pending Out": "Both",
    },
    "unsubscribed": {
        "None + Pending Out": "None",
        "None + Pending Out+In": "None + Pending In",
        "To": "None",
        "To + Pending In": "None + Pending In",
        "From + Pending Out": "From",
        "Both": "From",
    },
}
SUBSCRIBED_FROM = frozenset({"From", "From + Pending Out", "Both"})  # the contact sees us
# §3.4: a pre-approval is noted in these states, and turns a later request into these.
PRE_APPROVED = {"None": "From", "None + Pending Out": "From + Pending Out", "To": "Both"}
MAX_STORED_REQUEST = 4096  # bytes of a pending request kept for re-delivery
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def state_of(doc: Doc) -> str:
    sub, ask, pending_in = doc["sub"], doc["ask"], doc["pending_in"]
    ask = ask and sub in ("none", "from")
    pending_in = pending_in and sub in ("none", "to")
    for name, fields in STATES.items():
        if fields == (sub, ask, pending_in):
            return name
    return "None"


def with_state(doc: Doc, state: str) -> Doc:
    sub, ask, pending_in = STATES[state]
    request = doc["request"] if pending_in else None
    return {**doc, "sub": sub, "ask": ask, "pending_in": pending_in, "request": request}


class Subscriptions:
    def __init__(self, module: Module) -> None:
        self.host: Host = module.host
        self.rosters: Rosters = self.host.services["roster"]
        self.presence: Presence = self.host.services["presence"]
        self.pre_approval: bool = module.options["pre_approval"]
        self.log = module.log

    # ---- outbound: what the user sends (Appendix A.2) ----------------------------------------

    async def outbound(self, event: StanzaEvent) -> bool:
        stanza, session = event.stanza, event.origin
        type_ = stanza.get("type")
        if type_ not in TYPES:
            return False
        assert session is not None and event.to is not None
        user, contact = session.bare, str(event.to.bare)
        if contact == user:
            return True  # no subscriptions to oneself
        out = copy(stanza)
        out.set("from", user)
        out.set("to", contact)
        try:
            change = await self.rosters.apply(user, contact, self._outbound_change(type_))
        except RosterError as exc:
            return await event.reply_error(exc.condition, exc.text)
        except StorageError:
            self.log.exception("subscription change for %s failed", user)
            return await event.reply_error("internal-server-error", "the roster was not saved")
        before, after = state_of(change.old), state_of(change.new)
        if type_ in ("subscribe", "unsubscribe"):
            await self.host.route(None, out)  # §3.1.2, §3.3.2: always routed
        elif before != after and type_ == "subscribed":
            await self.host.route(None, out)
            await self.presence.send_current(user, contact)  # §3.1.5
        elif before != after:  # unsubscribed, §3.2.2: unavailable while still subscribed
            if before in SUBSCRIBED_FROM:
                await self.presence.send_unavailable(user, contact)
            await self.host.route(None, out)
        return True

    def _outbound_change(self, type_: str) -> Callable[[Doc], Doc]:
        def change(doc: Doc) -> Doc:
            state = state_of(doc)
            new = OUTBOUND[type_].get(state, state)
            if type_ == "subscribed" and new == state and state in PRE_APPROVED:
                # §3.4: no request to approve yet: a pre-approval, if offered.
                return {**doc, "listed": True, "approved": True} if self.pre_approval else doc
            if type_ == "unsubscribed" and doc["approved"]:
                return {**doc, "approved": False}  # §3.4.1: cancels the pre-approval
            # A request or an approval (§3.1.5) puts the contact in the roster; a denial of a
            # stranger's request only drops it.
            listed = (
                doc["listed"] or type_ == "subscribe" or (type_ == "subscribed" and new != state)
            )
            return {**with_state(doc, new), "listed": listed}

        return change

    # ---- inbound: what the contact's server receives (Appendix A.3) --------------------------

    async def inbound(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        type_ = stanza.get("type")
        if type_ not in TYPES:
            return False
        if event.to is None or event.sender is None or event.to.local is None:
            return True
        user, contact = str(event.to.bare), str(event.sender.bare)
        if user == contact:
            return True
        if not await self.host.auth.user_exists(event.to.local):
            if type_ == "subscribe":
                await self._answer(user, contact, "unsubscribed")
            return True
        stanza = copy(stanza)
        stanza.set("from", contact)
        stanza.set("to", user)
        try:
            if type_ == "subscribe":
                await self._inbound_subscribe(user, contact, stanza)
            else:
                await self._inbound_answer(type_, user, contact, stanza)
        except RosterError as exc:
            if type_ == "subscribe":
                await event.reply_error(exc.condition, exc.text)
        except StorageError:
            self.log.exception("%s from %s to %s was lost", type_, contact, user)
            if type_ == "subscribe":
                await event.reply_error("internal-server-error", "the request was not saved")
        return True

    async def _inbound_subscribe(self, user: str, contact: str, stanza: Element) -> None:
        """§3.1.3: auto-reply, auto-approve (§3.4), or keep the request and deliver it."""
        outcome = ""

        def change(doc: Doc) -> Doc:
            nonlocal outcome
            state = state_of(doc)
            if state in SUBSCRIBED_FROM:
                outcome = "already"
                return doc
            if doc["approved"] and state in PRE_APPROVED:
                outcome = "approved"
                return {**with_state(doc, PRE_APPROVED[state]), "approved": False}
            new = INBOUND["subscribe"].get(state, state)
            if new == state:
                return doc  # §A.3.1: already pending, not delivered again
            outcome = "new"
            return {**with_state(doc, new), "request": _keep(stanza)}

        await self.rosters.apply(user, contact, change)
        if outcome in ("already", "approved"):
            await self._answer(user, contact, "subscribed")
            await self.presence.send_current(user, contact)
        elif outcome == "new":
            for meta in self.host.available_resources(user):
                self.host.deliver_to_full(f"{user}/{meta['resource']}", stanza)

    async def _inbound_answer(self, type_: str, user: str, contact: str, stanza: Element) -> None:
        """§3.1.6, §3.2.3, §3.3.3: state change, delivery to interested resources, push."""

        def change(doc: Doc) -> Doc:
            state = state_of(doc)
            return with_state(doc, INBOUND[type_].get(state, state))

        result = await self.rosters.update(user, contact, change)
        before, after = state_of(result.old), state_of(result.new)
        if before == after:
            return
        self.host.deliver_to_interested(user, stanza)
        self.rosters.push(user, result)
        if type_ == "unsubscribe" and before in SUBSCRIBED_FROM:
            await self.presence.send_unavailable(user, contact)

    async def _answer(self, user: str, contact: str, type_: str) -> None:
        await self.host.route(None, make("presence", {"type": type_, "from": user, "to": contact}))

    # ---- the rest --------------------------------------------------------------------------

    async def redeliver(self, session: Session) -> bool:
        """§3.1.3: pending requests again at each initial presence, until answered."""
        try:
            roster = await self.rosters.load(session.bare)
        except StorageError:
            self.log.exception("cannot read the pending requests of %s", session.bare)
            return False
        for contact, doc in sorted(roster.items.items()):
            if doc["pending_in"]:
                self.host.deliver_to_full(session.full, _restore(doc, contact, session.bare))
        return False

    async def drop_requests(self, user: str, blocked: Callable[[str], bool]) -> None:
        """XEP-0191: pending requests from JIDs the user now blocks go unanswered (an answer to
        a blocked JID bounces), so that they stop counting against `max_pending`."""
        roster = await self.rosters.load(user)
        for contact in [c for c, d in roster.items.items() if d["pending_in"] and blocked(c)]:
            await self.rosters.update(user, contact, _without_request)

    async def removed(self, info: ItemRemoved) -> bool:
        """RFC 6121 §2.5.2: removing an item cancels the subscriptions both ways."""
        user, contact, old = info.user, info.contact, info.item
        state = state_of(old)
        if state in SUBSCRIBED_FROM or old["pending_in"]:
            if state in SUBSCRIBED_FROM:
                await self.presence.send_unavailable(user, contact)
            await self._answer(user, contact, "unsubscribed")
        if old["sub"] in ("to", "both") or old["ask"]:
            await self._answer(user, contact, "unsubscribe")
        return False


def _without_request(doc: Doc) -> Doc:
    return {**doc, "pending_in": False, "request": None}


def _keep(stanza: Element) -> str | None:
    data = etree.tostring(stanza, encoding="unicode")
    return data if len(data.encode()) <= MAX_STORED_REQUEST else None


def _restore(doc: Doc, contact: str, user: str) -> Element:
    """The stored request (with its status or nick), or a plain one when none was kept."""
    if doc["request"]:
        try:
            stanza = etree.fromstring(doc["request"], _PARSER)
            if stanza.tag == PRESENCE:
                stanza.set("from", contact)
                stanza.set("to", user)
                return stanza
        except etree.XMLSyntaxError:
            pass
    return make("presence", {"type": "subscribe", "from": contact, "to": user})


def load(module: Module) -> None:
    subs = Subscriptions(module)
    module.host.services["subscriptions"] = subs
    if subs.pre_approval:
        module.add_stream_feature(element(ns.PRE_APPROVAL, "sub"))
    for scope in ("bare", "full"):
        module.hook(f"pre-presence/{scope}", subs.outbound)
        module.hook(f"presence/{scope}", subs.inbound, -0.5)
    module.hook("presence-initial", subs.redeliver)
    module.hook("roster-item-removed", subs.removed)


spec = ModuleSpec(
    name="subscriptions",
    summary="presence subscriptions (RFC 6121 §3, Appendix A), pre-approval, pending requests",
    load=load,
    depends=("roster", "presence"),
    options={"pre_approval": Option(bool, True, "offer subscription pre-approval (§3.4)")},
    implements=(
        Implements("RFC 6121", status="complete", note="§3 subscriptions, Appendix A states"),
    ),
)
