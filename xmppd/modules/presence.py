"""Own presence: availability and priority in the Tracker, echoed to the account's resources.

Roster-based broadcast, probes and subscriptions (RFC 6121 §3-§4) build on this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, child_text, make
from ..router import StanzaEvent

if TYPE_CHECKING:
    from ..session import Session


def parse_priority(text: str | None) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127, default 0."""
    try:
        value = int((text or "0").strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))


def load(module: Module) -> None:
    host = module.host

    def echo(session: Session, stanza: Element) -> None:
        # RFC 6121 §4.2.2 / §4.5.2: the account's available resources see its presence.
        for meta in host.available_resources(session.bare):
            host.deliver_to_full(f"{session.bare}/{meta['resource']}", stanza)

    async def broadcast(event: StanzaEvent) -> bool:
        session, stanza = event.origin, event.stanza
        assert session is not None
        type_ = stanza.get("type")
        if type_ is None:
            session.priority = parse_priority(child_text(stanza, ns.CLIENT, "priority"))
            meta = {"resource": session.jid.resource, "priority": session.priority}
            if session.available:
                host.tracker.update(session, host.presence_topic, session.bare, meta)
            else:
                host.tracker.track(session, host.presence_topic, session.bare, meta)
            session.available = True
            session.presence = stanza
            echo(session, stanza)
        elif type_ == "unavailable":
            went_away(session, stanza)
        return True

    def went_away(session: Session, stanza: Element) -> None:
        if not session.available:
            return
        session.available = False
        session.presence = None
        host.tracker.untrack(session, host.presence_topic, session.bare)
        echo(session, stanza)

    async def session_closed(session: Session) -> bool:
        went_away(session, make("presence", {"type": "unavailable", "from": session.full}))
        return False

    module.hook("pre-presence/self", broadcast, -0.5)
    module.hook("session-closed", session_closed)


spec = ModuleSpec(
    name="presence",
    summary="availability and priority of each resource; echo to the account's own resources",
    load=load,
    implements=(Implements("RFC 6121", status="partial", note="own resources only for now"),),
)
