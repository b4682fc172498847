"""Stanza routing (RFC 6120 §8, §10; RFC 6121 §8.5) as events on the host's bus.

`route()` validates and stamps a stanza, computes its event names and fires them:

1. `pre-<kind>/<scope>` on the sender's host, only for stanzas from our own clients (filters,
   blocking, carbons, presence broadcast hook here);
2. `<kind>/<scope>` on the recipient's host. The default handlers installed here run last
   (priority -1) and deliver per RFC 6121 §8.5; for iq to the server or an account they fire
   `iq-<type>/<scope>/<ns>:<child>` and answer `service-unavailable` when nobody handles it.

scope: `full` (a resource), `bare` (an account), `self` (the sender's own account, or no `to`),
`host` (the server itself). Stanzas to other domains fire `route/remote`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from auth.base import AuthError

from .protocol import namespaces as ns
from .protocol.jid import JID, JIDError
from .protocol.stanza import Element, error_reply, first_child, local_name, namespace_of, qname
from .storage.base import StorageUnavailable

if TYPE_CHECKING:
    from .host import Host
    from .session import Session

log = logging.getLogger("xmppd.router")
DELIVERY = -1.0
# RFC 6120 §8.3.3.18 resource-constraint (type wait): the server lacks, for now, what it needs
# to handle the stanza (its storage) and the sender may retry later. internal-server-error
# (§8.3.3.8) names a misconfiguration or bug and is typed cancel in the RFC's example.
STORAGE_DOWN = "storage is temporarily unavailable; try again later"
_DELAY = qname(ns.DELAY, "delay")
_JMI = f"{{{ns.JINGLE_MESSAGE}}}*"
_VALID_TYPES = {
    "message": frozenset({"normal", "chat", "groupchat", "headline", "error"}),
    "presence": frozenset(
        {"unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"}
    ),
    "iq": frozenset({"get", "set", "result", "error"}),
}


class Owed(Protocol):
    """Work a handler put off (a durable write) that must be done before the stanza, or
    anything made from it, leaves the server for someone other than its sender."""

    async def settle(self) -> None: ...


class StanzaEvent:
    """What handlers receive. `host` is the host whose bus fired the event."""

    __slots__ = ("host", "origin", "stanza", "kind", "to", "sender", "owed")

    def __init__(
        self,
        host: Host,
        origin: Session | None,
        stanza: Element,
        kind: str,
        to: JID | None,
        sender: JID | None,
    ) -> None:
        self.host = host
        self.origin = origin
        self.stanza = stanza
        self.kind = kind
        self.to = to
        self.sender = sender
        self.owed: list[Owed] = []  # see settle()

    def owe(self, work: Owed) -> None:
        """Put `work` off until `settle`: a later handler may join it (the archive writes
        both sides of a 1:1 message in one transaction)."""
        self.owed.append(work)

    async def settle(self) -> None:
        """Do the work put off. Called before the stanza (or a copy of it) is delivered to
        anyone else and before routing returns, so the sender's acknowledgement still
        comes after it."""
        while self.owed:
            await self.owed.pop(0).settle()

    async def reply_error(self, condition: str, text: str | None = None) -> bool:
        """Bounce an error to the sender (never in answer to an error). Returns True."""
        if self.stanza.get("type") != "error":
            await self.host.route(None, error_reply(self.stanza, condition, text))
        return True

    async def reply(self, stanza: Element) -> bool:
        await self.host.route(None, stanza)
        return True


def scope_of(to: JID | None, sender: JID | None) -> str:
    if to is None:
        return "self"
    if to.local is None:
        return "host"
    if (
        sender is not None
        and to.resource is None
        and to.local == sender.local
        and to.domain == sender.domain
    ):
        return "self"
    return "bare" if to.resource is None else "full"


async def route(host: Host, origin: Session | None, stanza: Element) -> None:
    kind = local_name(stanza)
    if origin is not None and not _stamp_sender(origin, stanza):
        return
    to: JID | None = None
    if (to_attr := stanza.get("to")) is not None:
        try:
            to = JID.parse(to_attr)
        except JIDError as exc:
            if stanza.get("type") != "error":
                stanza.attrib.pop("to")
                await host.route(None, error_reply(stanza, "jid-malformed", str(exc)))
            return
    sender = origin.jid if origin is not None else _parse_from(stanza)
    if origin is not None and not await _valid(host, stanza, kind):
        return
    scope = scope_of(to, sender)
    event = StanzaEvent(host, origin, stanza, kind, to, sender)
    try:
        await _fire(host, event, kind, scope)
        await event.settle()
    except (StorageUnavailable, AuthError) as exc:
        await _storage_down(event, exc)


async def _storage_down(event: StanzaEvent, exc: Exception) -> None:
    """A handler needed the database (or the account backend) and it is unreachable: a
    temporary error for requests and messages (breaker.py logs the outage once), nothing for
    answers, errors and plain presence."""
    type_ = event.stanza.get("type")
    presence = event.kind == "presence"
    if type_ in ("result", "error") or (presence and type_ in (None, "unavailable", "probe")):
        return
    log.debug("%s refused while storage is unavailable: %s", event.kind, exc)
    await event.reply_error("resource-constraint", STORAGE_DOWN)


async def _fire(host: Host, event: StanzaEvent, kind: str, scope: str) -> None:
    if event.origin is not None and await host.events.fire(f"pre-{kind}/{scope}", event):
        return
    to = event.to
    domain = host.domain if to is None else to.domain
    target = host.hosts.get(domain) or host.components.get(domain)
    if target is not host:
        await event.settle()  # only the sender's host joins its own put-off work
    if target is None:
        await host.events.fire("route/remote", event)
        return
    if target is not host:
        event.host = target
    await target.events.fire(f"{kind}/{scope}", event)


def _stamp_sender(origin: Session, stanza: Element) -> bool:
    jid = origin.jid
    assert jid is not None
    frm = stanza.get("from")
    if frm is not None and frm != origin.full and frm != origin.bare:
        try:
            claimed = JID.parse(frm)
        except JIDError:
            claimed = None
        if (
            claimed is None
            or claimed.bare != jid.bare
            or (claimed.resource not in (None, jid.resource))
        ):
            # RFC 6120 §4.9.3.10: a client may not claim another address.
            origin.kill("invalid-from", "the from address is not yours")
            return False
    stanza.set("from", origin.full)
    return True


def _parse_from(stanza: Element) -> JID | None:
    frm = stanza.get("from")
    if frm is None:
        return None
    try:
        return JID.parse(frm)
    except JIDError:
        return None


async def _valid(host: Host, stanza: Element, kind: str) -> bool:
    """RFC 6120 §8.2-8.3 checks on client stanzas; answers bad-request when they fail."""
    type_ = stanza.get("type")
    problem = None
    if type_ is not None and type_ not in _VALID_TYPES[kind]:
        problem = f"invalid type {type_!r} for {kind}"
    elif kind == "iq":
        children = [c for c in stanza if isinstance(c.tag, str)]
        if not stanza.get("id"):
            problem = "an iq needs an id"
        elif type_ is None:
            problem = "an iq needs a type"
        elif type_ in ("get", "set") and len(children) != 1:
            problem = "an iq get/set carries exactly one child element"
        elif type_ == "result" and len(children) > 1:
            problem = "an iq result carries at most one child element"
    if problem is None:
        return True
    if type_ != "error":
        await host.route(None, error_reply(stanza, "bad-request", problem))
    return False


# ---- default handlers (delivery), installed on every host ---------------------------------------


def install(host: Host) -> None:
    events = host.events
    events.declare("message-offline")  # a message for an account with no available resource
    events.hook("message/full", _message_full, DELIVERY)
    events.hook("message/bare", _message_bare, DELIVERY)
    events.hook("message/self", _message_bare, DELIVERY)
    events.hook("message/host", _message_host, DELIVERY)
    events.hook("presence/full", _presence_full, DELIVERY)
    events.hook("presence/bare", _presence_bare, DELIVERY)
    events.hook("presence/host", _ignore, DELIVERY)
    events.hook("presence/self", _ignore, DELIVERY)
    events.hook("iq/full", _iq_full, DELIVERY)
    for scope in ("bare", "self", "host"):
        events.hook(f"iq/{scope}", _iq_to_server, DELIVERY)
    events.hook("route/remote", _remote, DELIVERY)


async def _ignore(event: StanzaEvent) -> bool:
    return True


async def _message_full(event: StanzaEvent) -> bool:
    assert event.to is not None
    if event.host.deliver_to_full(str(event.to), event.stanza):
        return True
    # RFC 6121 §8.5.3.2.1: the resource is gone. Only chat is handled as if sent to the bare
    # JID; normal and groupchat "MUST either be ignored or bounced" (we bounce).
    type_ = event.stanza.get("type", "normal")
    if type_ == "chat":
        return await _message_bare(event)
    if type_ in ("normal", "groupchat"):
        return await event.reply_error("service-unavailable")
    return True  # headline and error: silently dropped


def rings_everywhere(stanza: Element) -> bool:
    """XEP-0353 call signals go to every non-negative resource, as §8.5.2.1.1 allows, so a
    call rings on each client of the account, carbons enabled or not."""
    return stanza.find(_JMI) is not None


async def _message_bare(event: StanzaEvent) -> bool:
    """RFC 6121 §8.5.2: highest-priority non-negative resources, else offline or an error."""
    host, stanza = event.host, event.stanza
    bare = str(event.to.bare) if event.to is not None else event.origin.bare  # type: ignore[union-attr]
    type_ = stanza.get("type", "normal")
    if type_ == "groupchat":
        return await event.reply_error("service-unavailable")
    metas = [m for m in host.available_resources(bare) if m.get("priority", 0) >= 0]
    if metas and type_ != "error":
        if type_ != "headline" and not rings_everywhere(stanza):
            top = max(m.get("priority", 0) for m in metas)
            metas = [m for m in metas if m.get("priority", 0) == top]
        delivered = False
        for meta in metas:
            delivered |= host.deliver_to_full(f"{bare}/{meta['resource']}", stanza)
        if delivered:
            return True
    if type_ in ("error", "headline"):
        return True
    local = bare.partition("@")[0]
    try:
        exists = await host.auth.user_exists(local)
    except AuthError:  # the account store is unreachable: try again later, not "no such user"
        return await event.reply_error("resource-constraint", STORAGE_DOWN)
    if not exists:
        return await event.reply_error("service-unavailable")
    if await host.events.fire("message-offline", event):
        return True
    return await event.reply_error("service-unavailable", "the recipient is offline")


async def _message_host(event: StanzaEvent) -> bool:
    if event.stanza.get("type") in ("error", "headline", "groupchat"):
        return True
    return await event.reply_error("service-unavailable")


async def _presence_full(event: StanzaEvent) -> bool:
    assert event.to is not None
    event.host.deliver_to_full(str(event.to), event.stanza)
    return True


async def _presence_bare(event: StanzaEvent) -> bool:
    """Directed presence to an account goes to each available resource (RFC 6121 §8.5.2.1.2)."""
    assert event.to is not None
    bare = str(event.to.bare)
    for meta in event.host.available_resources(bare):
        event.host.deliver_to_full(f"{bare}/{meta['resource']}", event.stanza)
    return True


async def _iq_full(event: StanzaEvent) -> bool:
    assert event.to is not None
    if event.host.deliver_to_full(str(event.to), event.stanza):
        return True
    if event.stanza.get("type") in ("get", "set"):
        return await event.reply_error("service-unavailable")
    return True


async def _iq_to_server(event: StanzaEvent) -> bool:
    """iq to the server or to an account: handled here on the account's behalf (RFC 6121 §8.5)."""
    stanza = event.stanza
    type_ = stanza.get("type")
    if type_ not in ("get", "set"):
        return True  # results and errors for the server: nothing waits for them yet
    child = first_child(stanza)
    if child is None:
        return await event.reply_error("bad-request")
    scope = scope_of(event.to, event.sender)
    name = f"iq-{type_}/{scope}/{namespace_of(child)}:{local_name(child)}"
    if event.host.events.has_handlers(name) and await event.host.events.fire(name, event):
        return True
    return await event.reply_error("service-unavailable")


async def _remote(event: StanzaEvent) -> bool:
    # No server-to-server links yet (federation comes later).
    return await event.reply_error("remote-server-not-found")


# ---- what a session that ended never got ------------------------------------------------------


def reached_elsewhere(host: Host, session: Session, message: Element, stamp: float) -> bool:
    """Did a resource of the account other than `session`, bound before `message` was routed
    to `session` at `stamp` (time.time()), get it as well? One to the bare JID went to every
    top-priority resource (§8.5.2.1.1 above); one eligible for carbons, to every
    carbons-enabled one (XEP-0280 §7). Routing it again would show it there twice.

    Only for messages routed live: one stamped with a delay by this server came out of
    storage or a hold, to this session alone, and must be routed again (better twice than
    lost). Priorities and availability are today's: a resource that changed them since may
    get a message twice, or (bound but not yet available then) miss one that went elsewhere.
    """
    for delay in message.iterchildren(_DELAY):
        if delay.get("from") == host.domain:
            return False
    to = message.get("to")
    to_account = to is None or "/" not in to  # a bare JID has no '/' (RFC 7622 §3)
    # to every non-negative resource
    headline = message.get("type") == "headline" or rings_everywhere(message)
    copied = host.services.get("carbons")  # modules/carbons.py: copied(session, msg, stamp)
    for other in host.resources_of(session.bare).values():
        if other is session or other.closed or other.bound_at > stamp:
            continue
        if (
            to_account
            and other.available
            and other.priority >= 0
            and (headline or other.priority == session.priority)
        ):
            return True
        if copied is not None and copied(other, message, stamp):
            return True
    return False
