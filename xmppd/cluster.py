"""Cluster mode: this process is one node of several sharing Redis and PostgreSQL.

What crosses nodes, and how (docs/cluster.md):

* **Who is where.** Besides presence (`presence:<domain>`, one meta per available
  resource), every bound session is tracked in `bound:<domain>` with its node. The Tracker
  gossips both over the Redis adapter, so every node holds the cluster-wide view the router
  already reads (`host.available_resources`): RFC 6121 §8.5 rules and priorities run
  unchanged on it.
* **Delivery.** `host.deliver_to_full` delivers locally, else asks `deliver_remote`, which
  looks the full JID up in `bound:` and sends ``("deliver", domain, full, stanza)`` to that
  node only (one direct publish; the stanza is serialised once). A node that no longer
  has the session routes the stanza again there, as for a resource that just went away.
  The receiving node acknowledges; a delivery not acknowledged within ``ack_timeout`` (the
  node died, or Redis is down) is routed again, so it ends in offline storage once the
  node is declared down instead of being lost.
* **Presence to an account** with no session here but sessions elsewhere (subscription
  requests and answers) is routed again on one of those nodes, where its roster is cached.
  Probes go to every node with an available resource of the account; each answers for its
  own sessions.
* **Rosters** are cached per node: a change stored on one node tells the others to drop
  their copy, and to push the change to the account's sessions they hold. Each item change
  is a compare-and-set in storage (modules/roster.py), so a stale copy costs a re-read,
  never a lost change.
* **The account's sessions on other nodes** get what RFC 6121 gives "interested" or
  "available" resources: subscription answers (``interested``), the presence of the
  account's other resources at login (``own``); blocking-list edits (``blocking``) replace
  every node's copy. Carbons need nothing here: who has them on is in the Tracker.
* **One session per full JID.** When a session bound elsewhere shows up with the same full
  JID as one of ours, the older of the two (bound_at, then node name) gets <conflict/>:
  each node decides the same way, so no coordination is needed.
* **A failed node.** When the Tracker declares a node down (silent for ``down_period``)
  its sessions leave the view (messages to them go to offline storage), and each surviving
  node tells its *own* sessions that those contacts are unavailable: every contact hears
  it once, from the node it is connected to.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from pubsub import PubSub, Tracker
from pubsub.codec import Codec
from pubsub.state import Entry
from pubsub.topics import session_topic

from .protocol.stanza import copy, error_reply, local_name, make

if TYPE_CHECKING:
    from .config import Config
    from .host import Host
    from .router import StanzaEvent
    from .session import Session

log = logging.getLogger("xmppd.cluster")

ROUTE_TOPIC = "cluster:route"  # direct messages between the nodes' Cluster objects
_SEES_US = ("from", "both")  # roster subscriptions that receive the user's presence
# Set while routing a stanza another node handed us, so it is not forwarded again.
_FORWARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarded", default=False)
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
)


def bound_topic(domain: str) -> str:
    return f"bound:{domain}"


def stanza_codec() -> Codec:
    """The pubsub codec, taught to carry lxml stanzas as their XML bytes, and a room's
    messages (for room-topic subscribers on other nodes: JSON channel sessions)."""
    from .muc.room import RoomMessage

    codec = Codec()
    codec.register(etree._Element, "xml", etree.tostring, _parse)
    codec.register(
        RoomMessage, "room", lambda m: etree.tostring(m.stanza), lambda d: RoomMessage(_parse(d))
    )
    return codec


def _parse(data: bytes) -> Any:
    return etree.fromstring(data, _PARSER)


def make_bus(config: Config) -> tuple[PubSub, Tracker]:
    """The server's PubSub and presence Tracker: in-process, or over Redis in cluster mode."""
    cluster = config.cluster
    if not cluster["enabled"]:
        return _local()
    from pubsub.adapters.redis import RedisAdapter

    adapter = RedisAdapter(
        cluster["redis"],
        prefix=cluster["prefix"],
        codec=stanza_codec(),
        heartbeat=cluster["heartbeat"],
        down_period=cluster["down_period"],
        permdown_period=cluster["permdown_period"],
    )
    bus = PubSub(cluster["node"], adapter)
    heartbeat, down = cluster["heartbeat"], cluster["down_period"]
    tracker = Tracker(
        bus,
        broadcast_period=heartbeat,
        # An idle node still heartbeats at least three times per down period.
        max_silent_periods=max(1, int(down / heartbeat / 3)),
        down_period=down,
        permdown_period=cluster["permdown_period"],
        flush_delay=0.005,  # logins and presence changes reach the other nodes at once
    )
    return bus, tracker


def _local() -> tuple[PubSub, Tracker]:
    bus = PubSub()
    return bus, Tracker(bus)


class Cluster:
    """Glue between the hosts of this node and the other nodes (one per server)."""

    def __init__(
        self,
        pubsub: PubSub,
        tracker: Tracker,
        spawn: Callable[..., None],
        ack_timeout: float = 3.0,
        room_lease: float = 10.0,
    ) -> None:
        self.node = pubsub.node
        self.pubsub = pubsub
        self.tracker = tracker
        self._spawn = spawn  # server.nursery_soon: background work from sync callbacks
        self.hosts: dict[str, Host] = {}
        # Deliveries sent to other nodes and not yet acknowledged: id -> (sent, host, stanza).
        self.ack_timeout = ack_timeout
        self._pending: dict[int, tuple[float, Host, Any]] = {}
        self._ids = itertools.count(1)
        # node -> its entries as they came back after it was down (see _on_peer)
        self._back: dict[str, list[Entry]] = {}
        self.redelivered = 0  # unacknowledged deliveries routed again
        self.room_lease = room_lease  # seconds a MUC room's owner node holds it (muc/lease.py)
        # Other messages on ROUTE_TOPIC: (kind, domain) -> handler(*rest) (muc/placement.py).
        self.handlers: dict[tuple[str, str], Callable[..., None]] = {}
        pubsub.subscribe(ROUTE_TOPIC, self)
        if hasattr(pubsub.adapter, "info"):  # the Redis adapter: shown by `xmppd check`
            pubsub.adapter.info = self.figures
        spawn(self._expire_loop)
        tracker.listen(self._on_diff)
        tracker.listen_peers(self._on_peer)

    def figures(self) -> dict[str, int]:
        """This node's figures for the cluster's node registry."""
        sessions = sum(len(r) for host in self.hosts.values() for r in host.sessions.values())
        return {"sessions": sessions, "pending_deliveries": len(self._pending)}

    def install(self, host: Host) -> None:
        self.hosts[host.domain] = host
        host.remote_delivery = self.deliver_remote
        host.events.hook("session-bound", self._bound, 10)
        host.events.hook("session-closed", self._closed, 10)
        # Above every module: subscriptions and probes are handled on the account's node.
        host.events.hook("presence/bare", self._to_account, 100)
        host.events.hook("presence/full", self._to_account, 100)
        host.remote_interested = self._to_interested
        # RFC 6121 §4.2.2: the account's resources on other nodes show themselves to a new one.
        host.events.hook("presence-initial", self._initial, 10)
        rosters = host.services.get("roster")
        if rosters is not None:
            rosters.replicate = lambda user, change: self._roster_changed(host, user, change)
        blocking = host.services.get("blocking")
        if blocking is not None:
            blocking.replicate = lambda *change: self._send_all(("blocking", host.domain, *change))
        muc = host.services.get("muc")
        if muc is not None:  # rooms: one owner node each, the others forward to it
            muc.join_cluster(self, self.room_lease)

    # ---- who is where -----------------------------------------------------------------------

    async def _bound(self, session: Session) -> bool:
        host = session.host
        if host is not None and session.jid is not None and not session.closed:
            meta = {"resource": session.jid.resource, "node": self.node, "at": session.bound_at}
            with contextlib.suppress(ValueError):  # already tracked: a resumed session
                self.tracker.track(session, bound_topic(host.domain), session.bare, meta)
        return False

    async def _closed(self, session: Session) -> bool:
        if session.host is not None and session.bare:
            self.tracker.untrack(session, bound_topic(session.host.domain), session.bare)
        return False

    def nodes_of(self, domain: str, bare: str) -> set[str]:
        """The other nodes where the account has a bound session."""
        metas = self.tracker.get_by_key(bound_topic(domain), bare)
        return {m["node"] for m in metas} - {self.node}

    def node_of(self, domain: str, bare: str, resource: str) -> str | None:
        """The other node where ``bare/resource`` is bound, if any."""
        for meta in self.tracker.get_by_key(bound_topic(domain), bare):
            if meta["resource"] == resource and meta["node"] != self.node:
                return meta["node"]
        return None

    def _on_diff(self, diff: Any) -> None:
        """A session bound elsewhere with the full JID of one of ours: the older one goes."""
        if not diff.topic.startswith("bound:") or not diff.joins:
            return
        host = self.hosts.get(diff.topic[6:])
        if host is None:
            return
        for bare, metas in diff.joins.items():
            for meta in metas:
                if meta["node"] == self.node:
                    continue
                ours = host.resources_of(bare).get(meta["resource"])
                if ours is not None and (ours.bound_at, self.node) < (meta["at"], meta["node"]):
                    log.info("%s/%s bound again on %s", bare, meta["resource"], meta["node"])
                    ours.replaced()

    # ---- delivery ---------------------------------------------------------------------------

    def deliver_remote(self, host: Host, full: str, stanza: Any) -> bool:
        bare, _, resource = full.partition("/")
        node = self.node_of(host.domain, bare, resource)
        if node is None:
            return False
        self.tracker.flush()  # who is where reaches that node before what refers to it
        ident = next(self._ids)
        self._pending[ident] = (time.monotonic(), host, stanza)
        message = ("deliver", host.domain, full, stanza, self.node, ident)
        self.pubsub.direct_broadcast(node, ROUTE_TOPIC, message)
        return True

    def deliver(self, topic: str, message: object) -> None:
        """pubsub Subscriber of ROUTE_TOPIC: what other nodes send this one."""
        kind, domain, *rest = message  # type: ignore[misc]
        if kind == "again":  # a node that had us down hears us again: probe it once more
            entries = self._back.get(rest[0])
            if entries:
                self._spawn(self._available_again, entries)
            return
        handler = self.handlers.get((kind, domain))
        if handler is not None:
            handler(*rest)
            return
        host = self.hosts.get(domain)
        if host is None:
            return
        if kind == "deliver":
            full, stanza, sender, ident = rest
            if self.pubsub.local_broadcast(session_topic(full), stanza) == 0:
                # Gone from here meanwhile: route it again, as for a resource that just left.
                self._spawn(self._route_forwarded, host, stanza)
            # Ours now (queued for the session, or routed again from here).
            self.pubsub.direct_broadcast(sender, ROUTE_TOPIC, ("ack", domain, ident))
        elif kind == "ack":
            self._pending.pop(rest[0], None)
        elif kind == "route":
            self._spawn(self._route_forwarded, host, rest[0])
        elif kind == "roster":
            self._roster_from_peer(host, *rest)
        elif kind == "interested":
            bare, stanza = rest
            for session in list(host.resources_of(bare).values()):
                if session.interested:
                    host.deliver_to_full(session.full, stanza)
        elif kind == "own":
            self._show_own(host, *rest)
        elif kind == "blocking":
            self._blocking_from_peer(host, *rest)

    async def _expire_loop(self) -> None:
        """A delivery nobody acknowledged went to a node that died (or to a Redis that is
        down): never a silent loss. Messages are routed again, which keeps trying that node
        until the Tracker declares it down and then stores them offline; an iq request gets
        an error; anything else is dropped."""
        while True:
            await trio.sleep(self.ack_timeout / 4)
            deadline = time.monotonic() - self.ack_timeout
            late = [i for i, (sent, _h, _s) in self._pending.items() if sent < deadline]
            for ident in late:
                _sent, host, stanza = self._pending.pop(ident)
                kind, type_ = local_name(stanza), stanza.get("type")
                if kind == "message" and type_ != "error":
                    self.redelivered += 1
                    await self._route_again(host, stanza)
                elif kind == "iq" and type_ in ("get", "set"):
                    await self._route_again(host, error_reply(stanza, "service-unavailable"))

    async def _route_again(self, host: Host, stanza: Any) -> None:
        try:
            await host.route(None, stanza)
        except Exception:
            log.exception("routing an unacknowledged stanza again failed")

    async def _route_forwarded(self, host: Host, stanza: Any) -> None:
        token = _FORWARDED.set(True)
        try:
            await host.route(None, stanza)
        finally:
            _FORWARDED.reset(token)

    # ---- presence to an account ------------------------------------------------------------

    async def _to_account(self, event: StanzaEvent) -> bool:
        """Presence for an account is handled where its sessions are: that node has its
        roster cached and answers for its sessions. Probes go to every node with an
        available resource of the account; each answers for its own."""
        if _FORWARDED.get() or event.to is None:
            return False
        host, to, stanza = event.host, event.to, event.stanza
        bare, probe = str(to.bare), stanza.get("type") == "probe"
        if to.resource is not None:  # the router delivers the rest to any node
            node = self.node_of(host.domain, bare, to.resource) if probe else None
            return node is not None and self._forward(node, host, stanza)
        if probe:
            available = {m["resource"] for m in host.available_resources(bare)}
            nodes = {self.node_of(host.domain, bare, r) for r in available} - {None}
            for node in nodes:
                self._forward(node, host, stanza)  # type: ignore[arg-type]
            here = any(s.available for s in host.resources_of(bare).values())
            return bool(nodes) and not here
        if host.resources_of(bare):
            return False
        homes = sorted(
            {m["node"] for m in self.tracker.get_by_key(bound_topic(host.domain), bare)}
            - {self.node}
        )
        return bool(homes) and self._forward(homes[0], host, stanza)

    def _forward(self, node: str, host: Host, stanza: Any) -> bool:
        self.tracker.flush()  # e.g. a probe from a session that just bound: its answer
        self.pubsub.direct_broadcast(node, ROUTE_TOPIC, ("route", host.domain, stanza))
        return True

    # ---- the account's sessions on other nodes ----------------------------------------------

    def _send_all(self, message: tuple) -> None:
        self.pubsub.broadcast_from(self, ROUTE_TOPIC, message)

    def _to_interested(self, host: Host, bare: str, stanza: Any) -> None:
        """E.g. a `subscribed` for the account: to its interested sessions on other nodes."""
        nodes = self.nodes_of(host.domain, bare)
        if nodes:
            self.tracker.flush()
        for node in sorted(nodes):
            message = ("interested", host.domain, bare, stanza)
            self.pubsub.direct_broadcast(node, ROUTE_TOPIC, message)

    async def _initial(self, session: Session) -> bool:
        """A resource became available: the account's available resources on other nodes
        send it their presence (those nodes hold it)."""
        host = session.host
        if host is None or session.jid is None:
            return False
        available = {m["resource"] for m in host.available_resources(session.bare)}
        nodes = {self.node_of(host.domain, session.bare, r) for r in available} - {None}
        if nodes:
            self.tracker.flush()  # the new session is known there before its answer comes
        for node in sorted(nodes):  # type: ignore[type-var]
            message = ("own", host.domain, session.bare, session.full)
            self.pubsub.direct_broadcast(node, ROUTE_TOPIC, message)
        return False

    def _show_own(self, host: Host, bare: str, to: str) -> None:
        for other in list(host.resources_of(bare).values()):
            if other.available and other.presence is not None and other.full != to:
                presence = copy(other.presence)
                presence.set("from", other.full)
                presence.set("to", to)
                host.deliver_to_full(to, presence)

    def _blocking_from_peer(
        self, host: Host, bare: str, items: frozenset[str], action: str, jids: list[str]
    ) -> None:
        blocking = host.services.get("blocking")
        if blocking is not None:
            blocking.replace(bare, frozenset(items))
            blocking.push(bare, action, jids)

    # ---- rosters ---------------------------------------------------------------------------

    def _roster_changed(self, host: Host, user: str, change: Any) -> None:
        """A roster stored here: other nodes drop their cached copy (and push, if visible)."""
        push = None if change is None else (change.contact, change.new, change.version)
        self.pubsub.broadcast_from(self, ROUTE_TOPIC, ("roster", host.domain, user, push))

    def _roster_from_peer(self, host: Host, user: str, push: Any) -> None:
        rosters = host.services.get("roster")
        if rosters is None:
            return
        rosters.stale(user)
        if push is not None:
            contact, doc, version = push
            for session in list(host.resources_of(user).values()):
                if session.interested:
                    rosters.push_to(session, contact, doc, version)

    # ---- failed nodes -----------------------------------------------------------------------

    def _on_peer(self, node: str, state: str, entries: list[Entry]) -> None:
        if state != "up":
            self._back.pop(node, None)
        if state in ("down", "gone") and entries:
            log.warning("node %s is %s: %d presence(s) left with it", node, state, len(entries))
            self._spawn(self._unavailable_for, entries)
        elif state == "up":
            log.info("node %s is up (%d presence(s) back)", node, len(entries))
            if entries:  # back after a partition or a Redis outage
                self._back[node] = entries
                self._spawn(self._available_again, entries)
                # Our probes can reach that node before it listens again (it may publish
                # before its subscription is back): now that we hear it, it can hear us,
                # so it probes our users once more, and our answers reach it.
                self.pubsub.direct_broadcast(node, ROUTE_TOPIC, ("again", "", self.node))

    async def _watchers_here(self, host: Host, entry: Entry) -> list[Session]:
        """Our available sessions that see ``entry``'s presence: the account's own, and its
        contacts subscribed to it."""
        watchers = [entry.key]
        roster = host.services.get("roster")
        if roster is not None:
            try:
                watchers += await roster.contacts(entry.key, _SEES_US)
            except Exception:
                log.exception("cannot read the roster of %s", entry.key)
        return [
            session
            for watcher in watchers
            for session in list(host.resources_of(watcher).values())
            if session.available and not session.closed
        ]

    def _presence_entries(self, entries: list[Entry]) -> list[tuple[Host, Entry]]:
        found = []
        for entry in entries:
            host = self.hosts.get(entry.topic.partition(":")[2])
            if host is not None and entry.topic == host.presence_topic:
                found.append((host, entry))
        return found

    async def _unavailable_for(self, entries: list[Entry]) -> None:
        """Tell our own sessions that the failed node's users went unavailable."""
        for host, entry in self._presence_entries(entries):
            full = f"{entry.key}/{entry.meta['resource']}"
            for session in await self._watchers_here(host, entry):
                gone = make("presence", {"type": "unavailable", "from": full, "to": session.full})
                self.pubsub.local_broadcast(session_topic(session.full), gone)

    async def _available_again(self, entries: list[Entry]) -> None:
        """A node heard again: its users' current presence, for our sessions that were told
        they had gone. Asked as probes (RFC 6121 §4.3) from each watcher's account, answered
        by the node holding the session, with the presence it has now. After a few
        heartbeats: the answer comes back through that node's view of us, which may not
        have us up yet."""
        await trio.sleep(3 * self.tracker.broadcast_period)
        for host, entry in self._presence_entries(entries):
            full = f"{entry.key}/{entry.meta['resource']}"
            for bare in sorted({s.bare for s in await self._watchers_here(host, entry)}):
                if bare != entry.key:  # one's own resources: §4.2.2 has no probe for them
                    probe = make("presence", {"type": "probe", "from": bare, "to": full})
                    await self._route_again(host, probe)


# ---- xmppd check ---------------------------------------------------------------------------


def check(config: Config) -> list[str]:
    """`xmppd check`: reach Redis, list the nodes it knows; returns the problems found."""
    try:
        from pubsub.adapters.redis import open_redis, read_nodes
    except ImportError:
        return ["cluster: the Redis client is missing: pip install 'xmppd[cluster]' (coredis)"]
    c = config.cluster

    async def run() -> list[str]:
        try:
            with trio.fail_after(10):
                async with open_redis(c["redis"]) as (client, sharded):
                    nodes = await read_nodes(
                        client, c["prefix"], c["down_period"], c["permdown_period"]
                    )
        except Exception as exc:
            return [f"cluster.redis: cannot reach Redis ({', '.join(c['redis'])}): {exc}"]
        kind = "Redis Cluster, sharded pub/sub" if sharded else "single Redis"
        print(f"cluster: Redis ok ({kind}); this node: {c['node']}; prefix: {c['prefix']}")
        if not nodes:
            print("cluster nodes: none running")
        for n in nodes:
            figures = "".join(f", {k.replace('_', ' ')}: {v}" for k, v in sorted(n.info.items()))
            print(f"cluster node: {n.name} {n.state} (last seen {_ago(n.last_seen)} ago{figures})")
        if any(n.name == c["node"] and n.state == "up" for n in nodes):
            print(f"note: a node named {c['node']!r} is running (this one, or a name clash)")
        return []

    return trio.run(run)


def _ago(when: float) -> str:
    import time

    return f"{max(0.0, time.time() - when):.1f}s"
