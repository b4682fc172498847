"""XEP-0352 Client State Indication: hold unimportant traffic while the client is inactive.

The `<csi xmlns='urn:xmpp:csi:0'/>` stream feature is offered after login. On `<inactive/>` an
out-filter is installed on the session (`session.csi` holds the state; None means active):

- important stanzas pass, after everything held is flushed first so that order is kept: iq,
  errors, subscription presence, messages with a body or subject (also inside a carbon copy),
  invitations and call signalling (XEP-0353);
- the rest is held, stamped with XEP-0203 delay: presence updates keep only the latest per
  sender, other messages (chat states, receipts, headlines...) all, in order;
- at most `queue_size` stanzas are held; one more flushes them.

`<active/>` flushes and removes the filter before the next stanza from the client is processed
(§5.1 in-order processing); so does a XEP-0198 resumption (§5.2: resumed streams are active).
When the session ends, held messages are routed again, like anything else it could not
deliver (RFC 6121 §8.5.3.2); held presence is dropped.
"""

from __future__ import annotations

import datetime
import itertools
from typing import TYPE_CHECKING

from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import (
    Element,
    copy,
    element,
    get_child,
    local_name,
    namespace_of,
    qname,
    sub,
)

if TYPE_CHECKING:
    from ..session import Session

_CALLS = "urn:xmpp:jingle-message:"  # :0 and later versions
_SUBSCRIPTION = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
_FORWARDED_MESSAGE = (
    f"{qname(ns.FORWARD, 'forwarded')}/{qname(ns.CLIENT, 'message')}"  # inside <sent/received>
)


class CsiState:
    """Per-session state while inactive: held stanzas, in arrival order."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[object, Element] = {}


def important(stanza: Element) -> bool:
    kind, type_ = local_name(stanza), stanza.get("type")
    if kind == "iq" or type_ == "error":
        return True
    if kind == "presence":
        return type_ in _SUBSCRIPTION
    for direction in ("sent", "received"):
        carbon = get_child(stanza, ns.CARBONS, direction)
        if carbon is not None:
            inner = carbon.find(_FORWARDED_MESSAGE)
            stanza = inner if inner is not None else stanza
    if any(get_child(stanza, ns.CLIENT, name) is not None for name in ("body", "subject")):
        return True
    if get_child(stanza, ns.CONFERENCE, "x") is not None:
        return True
    if any(namespace_of(c).startswith(_CALLS) for c in stanza if isinstance(c.tag, str)):
        return True  # XEP-0353 call signalling has no body; held, the phone would not ring
    muc = get_child(stanza, ns.MUC_USER, "x")
    return muc is not None and get_child(muc, ns.MUC_USER, "invite") is not None


def load(module: Module) -> None:
    host = module.host
    queue_size: int = module.options["queue_size"]
    keys = itertools.count()
    module.add_stream_feature(element(ns.CSI, "csi"))

    def stamped(stanza: Element) -> Element:
        """XEP-0203: say when the server got what it held back."""
        if get_child(stanza, ns.DELAY, "delay") is not None:
            return stanza
        stanza = copy(stanza)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sub(stanza, ns.DELAY, "delay", **{"from": host.domain, "stamp": now})
        return stanza

    def flush(session: Session) -> None:
        state = session.csi
        if state is None or not state.held:
            return
        held, state.held = state.held, {}
        for stanza in held.values():
            if not session.closed:
                session.write_stanza(stanza)

    def hold(session: Session, stanza: Element) -> Element | None:
        state: CsiState | None = session.csi
        if state is None:
            return stanza
        if important(stanza):
            flush(session)
            return stanza
        key: object = next(keys)
        if local_name(stanza) == "presence":
            key = stanza.get("from")  # only the latest presence of each sender matters
            state.held.pop(key, None)
        if len(state.held) >= queue_size:
            flush(session)
            return stanza
        state.held[key] = stamped(stanza)
        return None

    async def inactive(session: Session, _element: Element) -> None:
        if session.csi is None:
            session.csi = CsiState()
            session.add_out_filter(hold)

    async def active(session: Session, _element: object = None) -> None:
        if session.csi is not None:
            flush(session)
            session.csi = None
            session.remove_out_filter(hold)

    async def resumed(session: Session) -> bool:
        await active(session)  # §5.2: a resumed stream starts active again
        return False

    async def closed(session: Session) -> bool:
        state = session.csi
        if state is not None:
            session.csi = None
            for stanza in state.held.values():
                if local_name(stanza) == "message":
                    session.server.undeliverable(session, stanza)
        return False

    module.hook_nonza(ns.CSI, "inactive", inactive)
    module.hook_nonza(ns.CSI, "active", active)
    module.hook("session-closed", closed)
    host.events.declare("session-resumed")  # XEP-0198's (modules/sm.py); fired only when loaded
    module.hook("session-resumed", resumed)


spec = ModuleSpec(
    name="csi",
    summary="holds presence updates and chat states while a client says it is inactive",
    load=load,
    options={
        "queue_size": Option(int, 256, "stanzas held per inactive session", min=1),
    },
    implements=(Implements("XEP-0352", "1.0.0"),),
)
