"""XEP-0280 Message Carbons: every carbons-enabled resource sees both sides of each chat.

- received copies (§7): after a message for the account is delivered per RFC 6121 §8.5, each
  other carbons-enabled resource that did not get the original gets a copy. Who got it is
  computed the way the router delivers (the addressed resource, else the highest-priority
  non-negative ones).
- sent copies (§8): a message a resource sends goes, wrapped, to the account's other
  carbons-enabled resources. A message between two resources of one account is copied once,
  as a received copy, and never to the sending resource.
- eligibility: the rules of §6.1, advertised as urn:xmpp:carbons:rules:0. An error is taken to
  answer an eligible message when it echoes a body or an IM payload (errors carry the original
  payload, RFC 6120 §8.3.1), since the server keeps no record of what it routed.
- copies are handed to sessions directly; one that bounces back because its session went away
  is dropped, never re-routed (§10.3).
- who has carbons on is tracked in the presence Tracker (`carbons:<domain>`), so in cluster mode
  the node that routes a message copies it to the account's resources on every node.
- `host.services["carbons-switch"]` is `switch(session, since)`: carbons on from `since`
  (time.time()), or off with 0; the JSON channels' user topic turns them on this way.
- `host.services["carbons"]` is `copied(session, message, stamp)`: did that session get a copy
  of a message delivered to another resource of its account at `stamp`? Routing undelivered
  messages again (`Server.reroute`) asks, so as not to show one twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import router
from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import (
    Element,
    copy,
    first_child,
    get_child,
    make,
    namespace_of,
    reply,
    sub,
)
from ..router import StanzaEvent

if TYPE_CHECKING:
    from ..host import Host
    from ..session import Session

_IM_PAYLOADS = frozenset({ns.RECEIPTS, ns.CHATSTATES, ns.MARKERS})
_DIRECTIONS = ("sent", "received")


def eligible(stanza: Element, inbound: bool) -> bool:
    """XEP-0280 §6.1: is this message one a user's other clients should see?"""
    if get_child(stanza, ns.CARBONS, "private") is not None:
        return False
    if get_child(stanza, ns.HINTS, "no-copy") is not None:
        return False
    type_ = stanza.get("type", "normal")
    if type_ == "groupchat":
        return False
    muc_x = get_child(stanza, ns.MUC_USER, "x")
    if inbound and muc_x is not None and "/" in stanza.get("from", ""):
        return False  # a private message from a room occupant: the room copies it already
    if type_ == "chat":
        return True
    if type_ in ("normal", "error") and get_child(stanza, ns.CLIENT, "body") is not None:
        return True
    if any(namespace_of(child) in _IM_PAYLOADS for child in stanza if isinstance(child.tag, str)):
        return True
    if get_child(stanza, ns.CONFERENCE, "x") is not None:
        return True
    return muc_x is not None and get_child(muc_x, ns.MUC_USER, "invite") is not None


def is_carbon(stanza: Element) -> bool:
    return any(get_child(stanza, ns.CARBONS, d) is not None for d in _DIRECTIONS)


def wrap(direction: str, stanza: Element, bare: str, to: str) -> Element:
    """§7/§8: from the user's bare JID, same type, the original inside a XEP-0297 forward."""
    carbon = make("message", {"from": bare, "to": to, "type": stanza.get("type")})
    forwarded = sub(sub(carbon, ns.CARBONS, direction), ns.FORWARD, "forwarded")
    forwarded.append(copy(stanza))
    return carbon


def top_resources(host: Host, bare: str, type_: str, everywhere: bool = False) -> set[str]:
    """The resources RFC 6121 §8.5.2.1.1 delivers a message to the bare JID to (router rules)."""
    metas = [m for m in host.available_resources(bare) if m.get("priority", 0) >= 0]
    if metas and type_ != "headline" and not everywhere:
        top = max(m.get("priority", 0) for m in metas)
        metas = [m for m in metas if m.get("priority", 0) == top]
    return {m["resource"] for m in metas}


def original_recipients(event: StanzaEvent, bare: str) -> set[str] | None:
    """The resources that get the message itself; None when the router will not deliver it."""
    to, type_ = event.to, event.stanza.get("type", "normal")
    if to is not None and to.resource is not None:
        if to.resource in event.host.all_resources(bare):
            return {to.resource}
        if type_ != "chat":
            return None  # RFC 6121 §8.5.3.2.1: only chat falls back to the bare JID
    return top_resources(event.host, bare, type_, router.rings_everywhere(event.stanza))


def carbons_topic(domain: str) -> str:
    return f"carbons:{domain}"


def enabled_resources(host: Host, bare: str) -> set[str]:
    """The account's carbons-enabled resources, on any node."""
    return {m["resource"] for m in host.tracker.get_by_key(carbons_topic(host.domain), bare)}


def copies_wanted(host: Host, bare: str, skip: str) -> bool:
    """Has another resource of `bare` (on any node) carbons enabled?"""
    return bool(enabled_resources(host, bare) - {skip})


def send_copies(host: Host, direction: str, stanza: Element, bare: str, skip: set[str]) -> None:
    for resource in sorted(enabled_resources(host, bare) - skip):
        full = f"{bare}/{resource}"
        host.deliver_to_full(full, wrap(direction, stanza, bare, full))


def copied(session: Session, message: Element, stamp: float) -> bool:
    """Did `session` get a received copy of `message`, delivered to another resource of the
    account at `stamp` (time.time())? Only if carbons were on by then and it was eligible."""
    return 0 < session.carbons <= stamp and eligible(message, inbound=True)


def load(module: Module) -> None:
    host = module.host
    module.add_feature(ns.CARBONS)
    module.add_feature(ns.CARBONS_RULES)
    host.services["carbons"] = copied

    def switch(session: Session, since: float) -> None:
        """Carbons on from `since` (kept if already on), or off with 0, on every node."""
        topic = carbons_topic(host.domain)
        if not since:
            if session.carbons:
                host.tracker.untrack(session, topic, session.bare)
            session.carbons = 0.0
        elif not session.carbons:
            session.carbons = since
            host.tracker.track(session, topic, session.bare, {"resource": session.jid.resource})

    host.services["carbons-switch"] = switch

    async def toggle(event: StanzaEvent) -> bool:
        # §10.1: enabling or disabling twice is not an error (and keeps the first time).
        session = event.origin
        assert session is not None
        child = first_child(event.stanza)
        switch(session, time.time() if child is not None and child.tag.endswith("}enable") else 0)
        return await event.reply(reply(event.stanza))

    async def closed(session: Session) -> bool:
        if session.carbons and session.bare:
            host.tracker.untrack(session, carbons_topic(host.domain), session.bare)
        return False

    async def sent(event: StanzaEvent) -> bool:
        session, to = event.origin, event.to
        assert session is not None and to is not None
        if str(to.bare) == session.bare:
            return False  # to another resource of ours: copied once, as received (see below)
        own = session.jid.resource or ""
        if eligible(event.stanza, inbound=False) and copies_wanted(host, session.bare, own):
            await event.settle()  # a copy leaves now: the archive must hold the message first
            send_copies(host, "sent", event.stanza, session.bare, {own})
        return False

    async def received(event: StanzaEvent) -> bool:
        to, sender = event.to, event.sender
        bare = str(to.bare) if to is not None else str(sender.bare)  # type: ignore[union-attr]
        if not enabled_resources(host, bare) or not eligible(event.stanza, inbound=True):
            return False
        skip = original_recipients(event, bare)
        if skip is None:
            return False  # bounced or dropped: delivered nowhere, so copied nowhere (§7)
        if sender is not None and str(sender.bare) == bare and sender.resource:
            skip.add(sender.resource)  # never copy a message back to the resource that sent it
        send_copies(host, "received", event.stanza, bare, skip)
        return False

    async def no_rerouted_copies(event: StanzaEvent) -> bool:
        """A copy whose session went away comes back through routing: drop it (§10.3)."""
        stanza, to = event.stanza, event.to
        assert to is not None
        if event.origin is not None or stanza.get("from") != str(to.bare) or not is_carbon(stanza):
            return False
        host.deliver_to_full(str(to), stanza)
        return True

    module.hook_iq("set/self", ns.CARBONS, "enable", toggle)
    module.hook_iq("set/self", ns.CARBONS, "disable", toggle)
    for scope in ("full", "bare", "host"):
        module.hook(f"pre-message/{scope}", sent, -0.5)
    for scope in ("full", "bare", "self"):
        module.hook(f"message/{scope}", received, -0.5)
    module.hook("message/full", no_rerouted_copies, 1)
    module.hook("session-closed", closed)


spec = ModuleSpec(
    name="carbons",
    summary="copies each chat message to the user's other carbons-enabled clients",
    load=load,
    implements=(
        Implements(
            "XEP-0280",
            "1.0.1",
            note="rules:0; an error is copied when it echoes an eligible payload",
        ),
    ),
)
