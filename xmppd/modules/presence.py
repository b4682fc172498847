"""RFC 6121 §4: presence broadcast, probes, directed presence and unavailable on logout.

Each available resource is tracked in the Tracker (metas {"resource", "priority"}): the router's
bare-JID message delivery reads them. Broadcasts go to the contacts allowed to see the user's
presence (subscription from/both) as one routed copy per contact bare JID, so `presence/*`
filters (blocking) see each copy, and straight to the account's own available resources.
`host.services["presence"]` sends a user's current or unavailable presence to one JID (used by
subscription handling, RFC 6121 §3.1.5 and §3.2.2).

Shared roster items (directory groups, `Rosters.shared`) count as subscription "both" without a
stored subscription: broadcasts and probes go to the shared contacts that are online (found
through the Tracker), never to every member of a big group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, child_text, copy, make
from ..router import StanzaEvent
from ..storage import StorageError

if TYPE_CHECKING:
    from ..host import Host
    from ..session import Session
    from .roster import Rosters

SEES_US = ("from", "both")  # contacts subscribed to the user's presence
WE_SEE = ("to", "both")  # contacts whose presence the user is subscribed to


def parse_priority(text: str | None) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, default 0."""
    try:
        value = int((text or "0").strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))


class Presence:
    """Presence of one host's sessions; also the "presence" service."""

    def __init__(self, host: Host, rosters: Rosters) -> None:
        self.host = host
        self.rosters = rosters

    def available(self, bare: str) -> list[Session]:
        """The account's local sessions that are available, with their last presence."""
        sessions = self.host.resources_of(bare).values()
        return [s for s in sessions if s.available and s.presence is not None]

    # ---- the service API ------------------------------------------------------------------

    async def send_current(self, user: str, to: str) -> None:
        """The last presence of each of the user's available resources, to one JID."""
        for session in self.available(user):
            presence = copy(session.presence)  # type: ignore[arg-type]
            presence.set("from", session.full)
            presence.set("to", to)
            await self.host.route(None, presence)

    async def send_unavailable(self, user: str, to: str) -> None:
        """Unavailable from each of the user's available resources, to one JID."""
        for session in self.available(user):
            await self.host.route(
                None, make("presence", {"type": "unavailable", "from": session.full, "to": to})
            )

    # ---- the user's own presence ------------------------------------------------------------

    async def broadcast(self, session: Session, stanza: Element) -> set[str]:
        """RFC 6121 §4.2.2, §4.4.2, §4.5.2: to subscribers and the account's own resources.

        Returns the bare JIDs it was routed to.
        """
        contacts = await self.rosters.presence_contacts(session.bare, SEES_US)
        for contact in contacts:
            out = copy(stanza)
            out.set("to", contact)
            await self.host.route(None, out)
        for meta in self.host.available_resources(session.bare):
            self.host.deliver_to_full(f"{session.bare}/{meta['resource']}", stanza)
        return set(contacts)

    async def available_presence(self, session: Session, stanza: Element) -> None:
        initial = not session.available
        priority = parse_priority(child_text(stanza, ns.CLIENT, "priority"))
        meta = {"resource": session.jid.resource, "priority": priority}  # type: ignore[union-attr]
        if initial:
            self.host.tracker.track(session, self.host.presence_topic, session.bare, meta)
        elif priority != session.priority:
            self.host.tracker.update(session, self.host.presence_topic, session.bare, meta)
        session.available, session.priority, session.presence = True, priority, stanza
        await self.broadcast(session, stanza)
        if initial:
            await self.initial(session)

    async def initial(self, session: Session) -> None:
        """RFC 6121 §4.2.2: probe the contacts we see; show the account's other resources."""
        for contact in await self.rosters.presence_contacts(session.bare, WE_SEE):
            probe = make("presence", {"type": "probe", "from": session.full, "to": contact})
            await self.host.route(None, probe)
        for other in self.available(session.bare):
            if other is not session:
                presence = copy(other.presence)  # type: ignore[arg-type]
                presence.set("from", other.full)
                presence.set("to", session.full)
                self.host.deliver_to_full(session.full, presence)
        await self.host.events.fire("presence-initial", session)

    async def went_away(self, session: Session, stanza: Element) -> None:
        """Unavailable: to subscribers, own resources and every JID given directed presence."""
        directed, session.directed = session.directed or set(), None
        told: set[str] = set()
        if session.available:
            session.available, session.presence = False, None
            self.host.tracker.untrack(session, self.host.presence_topic, session.bare)
            told = await self.broadcast(session, stanza) | {session.bare}
            if not session.closed:
                self.host.deliver_to_full(session.full, stanza)
        for target in sorted(directed):
            if _bare_of(target) not in told:  # §4.6.3, but not twice
                out = copy(stanza)
                out.set("to", target)
                await self.host.route(None, out)

    # ---- probes from contacts ---------------------------------------------------------------

    async def answer_probe(self, event: StanzaEvent) -> None:
        """RFC 6121 §4.3.2: presence only for subscribers; the same answer for everyone else."""
        assert event.to is not None and event.sender is not None
        user, prober = str(event.to.bare), str(event.sender.bare)
        reply_to = event.stanza.get("from") or prober
        if prober == user:
            return
        doc = await self.rosters.peek(user, prober)
        if doc is None or not doc["listed"] or doc["sub"] not in SEES_US:
            # "unsubscribed" tells a stale subscriber it is not one; it would also cancel the
            # request of someone waiting for an answer, who knows they are not subscribed.
            if doc is None or not doc["pending_in"]:
                answer = {"type": "unsubscribed", "from": user, "to": prober}
                await self.host.route(None, make("presence", answer))
            return
        sessions = self.available(user)
        if event.to.resource is not None:
            sessions = [s for s in sessions if s.full == str(event.to)]
        if not sessions:
            answer = {"type": "unavailable", "from": str(event.to), "to": reply_to}
            await self.host.route(None, make("presence", answer))
        for session in sessions:
            presence = copy(session.presence)  # type: ignore[arg-type]
            presence.set("from", session.full)
            presence.set("to", reply_to)
            await self.host.route(None, presence)


def _bare_of(text: str) -> str:
    try:
        return str(JID.parse(text).bare)
    except JIDError:
        return text


def load(module: Module) -> None:
    host = module.host
    presence = Presence(host, host.services["roster"])
    host.services["presence"] = presence

    async def own(event: StanzaEvent) -> bool:
        """Presence with no 'to' (or to the own bare JID): broadcast presence."""
        session, stanza = event.origin, event.stanza
        assert session is not None
        type_ = stanza.get("type")
        if type_ is None:
            await presence.available_presence(session, stanza)
        elif type_ == "unavailable":
            await presence.went_away(session, stanza)
        # Subscription stanzas, probes and errors addressed to oneself mean nothing: dropped.
        return True

    async def directed(event: StanzaEvent) -> bool:
        """RFC 6121 §4.6: remember who got directed presence, for the unavailable at the end."""
        session, type_ = event.origin, event.stanza.get("type")
        assert session is not None and event.to is not None
        if type_ is None:
            if session.directed is None:
                session.directed = set()
            session.directed.add(str(event.to))
        elif type_ == "unavailable" and session.directed:
            session.directed.discard(str(event.to))
        return False  # routed as usual

    async def inbound(event: StanzaEvent) -> bool:
        if event.stanza.get("type") != "probe":
            return False
        if event.sender is not None and event.to is not None:
            try:
                await presence.answer_probe(event)
            except StorageError:  # §4.3.2 allows no answer; the prober's stream goes on
                module.log.exception("cannot answer a probe to %s", event.to)
        return True

    async def session_closed(session: Session) -> bool:
        if session.available or session.directed:
            gone = make("presence", {"type": "unavailable", "from": session.full})
            await presence.went_away(session, gone)
        return False

    module.hook("pre-presence/self", own, -0.5)
    for scope in ("bare", "full", "host"):
        module.hook(f"pre-presence/{scope}", directed, -0.5)
    module.hook("presence/bare", inbound, -0.5)
    module.hook("presence/full", inbound, -0.5)
    module.hook("session-closed", session_closed)


spec = ModuleSpec(
    name="presence",
    summary="presence broadcast to subscribers, probes, directed presence, priorities",
    load=load,
    depends=("roster",),
    implements=(
        Implements("RFC 6121", status="complete", note="§4 presence (probes, directed, priority)"),
    ),
)
