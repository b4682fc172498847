"""XEP-0115 for clients: learn which features each resource supports from the caps in its
presence, so PEP can send `<node>+notify` events only to resources that want them.

A client's available presence carries `<c node ver hash/>`. A `ver` seen before with a verified
hash is answered from the cache at once; a new one is asked for once (disco#info to the full JID
at node `<node>#<ver>`, §6.2) while other resources announcing the same `ver` wait for that
answer. The answer is cached for everyone only when its sha-1 verification string equals the
announced `ver` (§5.4); otherwise, or for legacy caps without `hash`, it is kept for the answering
resource alone and the next waiter is asked. `caps-changed` (payload Session) fires when a
resource's features become known after its presence was handled.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, get_child, make, qname, sub
from ..router import StanzaEvent
from .disco import caps_ver

if TYPE_CHECKING:
    from ..session import Session

_FEATURE = qname(ns.DISCO_INFO, "feature")


class Caps:
    """Features by full JID and a verified cache by `ver`; also the "caps" service."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.host = module.host
        self.max_cached: int = module.options["max_cached"]
        self.by_ver: dict[str, frozenset[str]] = {}  # verified sha-1 ver -> features
        self.by_jid: dict[str, frozenset[str]] = {}  # full JID -> features
        self.announced: dict[str, str] = {}  # full JID -> the ver of its last presence
        self.waiting: dict[str, list[tuple[str, str]]] = {}  # ver -> [(full, node)]
        self.asked: dict[str, tuple[str, str, bool]] = {}  # iq id -> (full, ver, verifiable)
        self.outstanding: dict[str, str] = {}  # full JID -> id of the query it has to answer
        self._ids = itertools.count(1)

    def features(self, full: str) -> frozenset[str]:
        """What the resource announced; empty while unknown."""
        return self.by_jid.get(full, frozenset())

    # ---- presence -----------------------------------------------------------------------

    async def presence(self, session: Session, stanza: Element) -> None:
        c = get_child(stanza, ns.CAPS, "c")
        full = session.full
        if c is None or not c.get("ver") or not c.get("node"):
            await self.drop(full)
            return
        ver, node, hash_ = c.get("ver", ""), c.get("node", ""), c.get("hash")
        if self.announced.get(full) == ver:
            return  # known already, or being asked
        await self.drop(full)
        self.announced[full] = ver
        if hash_ == "sha-1" and ver in self.by_ver:
            self.by_jid[full] = self.by_ver[ver]
            return
        if hash_ != "sha-1":
            await self.ask(full, node, ver, verifiable=False)  # legacy or other hash: per JID
            return
        queue = self.waiting.setdefault(ver, [])
        queue.append((full, node))
        if len(queue) == 1:
            await self.ask(full, node, ver, verifiable=True)

    async def ask(self, full: str, node: str, ver: str, verifiable: bool) -> None:
        iq_id = f"caps{next(self._ids)}"
        self.asked[iq_id] = (full, ver, verifiable)
        self.outstanding[full] = iq_id  # one open question per resource, whatever it sends
        iq = make("iq", {"type": "get", "id": iq_id, "from": self.host.domain, "to": full})
        sub(iq, ns.DISCO_INFO, "query", node=f"{node}#{ver}")
        await self.host.route(None, iq)

    async def drop(self, full: str) -> None:
        """Forget a resource's features and any question about them still open; when it was
        the one asked on behalf of others announcing the same hash, ask the next of them."""
        self.by_jid.pop(full, None)
        ver = self.announced.pop(full, None)
        iq_id = self.outstanding.pop(full, None)
        if iq_id is not None:
            self.asked.pop(iq_id, None)
        if ver is None or ver not in self.waiting:
            return
        queue = [w for w in self.waiting.pop(ver) if w[0] != full]
        if queue:
            self.waiting[ver] = queue
            if iq_id is not None:
                await self.ask(queue[0][0], queue[0][1], ver, verifiable=True)

    # ---- answers ------------------------------------------------------------------------

    async def answer(self, event: StanzaEvent) -> bool:
        iq_id = event.stanza.get("id", "")
        if iq_id not in self.asked:
            return False
        full, ver, verifiable = self.asked[iq_id]
        if event.stanza.get("from") != full:
            return True  # not from the resource asked: ignore, keep waiting
        del self.asked[iq_id]
        self.outstanding.pop(full, None)
        query = get_child(event.stanza, ns.DISCO_INFO, "query")
        ok = event.stanza.get("type") == "result" and query is not None
        features = frozenset(f.get("var", "") for f in query.iter(_FEATURE)) if ok else None
        if not verifiable:
            if features is not None and self.announced.get(full) == ver:
                await self.learned(full, features)
            return True
        queue = [w for w in self.waiting.pop(ver, []) if self.announced.get(w[0]) == ver]
        if features is not None and caps_ver(query) == ver:
            self.remember(ver, features)
            for waiter, _node in queue:
                await self.learned(waiter, features)
            return True
        # A wrong or failed answer: believe it for its sender only, then ask the next waiter.
        self.module.log.info("caps of %s do not verify against %r", full, ver)
        if features is not None and self.announced.get(full) == ver:
            await self.learned(full, features)
        rest = [w for w in queue if w[0] != full]
        if rest:
            self.waiting[ver] = rest
            await self.ask(rest[0][0], rest[0][1], ver, verifiable=True)
        return True

    def remember(self, ver: str, features: frozenset[str]) -> None:
        if len(self.by_ver) >= self.max_cached:
            del self.by_ver[next(iter(self.by_ver))]  # the oldest entry
        self.by_ver[ver] = features

    async def learned(self, full: str, features: frozenset[str]) -> None:
        self.by_jid[full] = features
        bare, _, resource = full.partition("/")
        session = self.host.resources_of(bare).get(resource)
        if session is not None:
            await self.host.events.fire("caps-changed", session)


def load(module: Module) -> None:
    host = module.host
    host.events.declare("caps-changed")  # Session: its caps features became known
    caps = Caps(module)
    host.services["caps"] = caps

    async def own_presence(event: StanzaEvent) -> bool:
        session = event.origin
        assert session is not None
        type_ = event.stanza.get("type")
        if type_ is None:
            await caps.presence(session, event.stanza)
        elif type_ == "unavailable":
            await caps.drop(session.full)
        return False  # presence handling goes on

    async def closed(session: Session) -> bool:
        if session.jid is not None:
            await caps.drop(session.full)
        return False

    # Before the presence module (-0.5), so `presence-initial` already sees cached features.
    module.hook("pre-presence/self", own_presence, 0.5)
    module.hook("iq/host", caps.answer, 1)
    module.hook("session-closed", closed)


spec = ModuleSpec(
    name="caps",
    summary="learns each client resource's features from its entity capabilities (XEP-0115)",
    load=load,
    options={
        "max_cached": Option(int, 10000, "verified caps hashes kept in memory", min=1),
    },
    implements=(
        Implements(
            "XEP-0115", "1.6.0", note="clients' caps, verified (§5.4) before caching by hash"
        ),
    ),
)
