"""Presence Tracker (after Phoenix.Tracker): who is online where, as join/leave diffs.

One key per user (bare JID / user id), one meta per session (resource / browser tab).
Local changes are applied to the pure `State` and reported *synchronously*: before
``track``/``untrack``/``update`` return, every listener has been called and the topic's
local subscribers have received the `PresenceDiff` via ``pubsub.local_broadcast``.

Cross-node gossip (only when the pubsub adapter has other nodes, e.g. Redis)
-------------------------------------------------------------------------------
All trackers of one name subscribe to ``tracker:<name>`` and talk through the adapter:

* every ``broadcast_period`` a tracker with local changes broadcasts a heartbeat carrying
  its delta and clocks; without changes it still heartbeats every ``max_silent_periods``;
* a receiver merges the delta and reports the resulting diffs to its own listeners and
  local subscribers (diffs are never re-broadcast: each node computes its own);
* if, after merging, the sender's clocks are still ahead of ours, the receiver asks
  the sender directly for a full state (``treq``) and merges the answer (``tack``);
* a peer silent for ``down_period`` is marked down (its entries leave); one silent for
  ``permdown_period``, or replaced by a new incarnation on the same node, or saying
  ``bye``, is purged. A peer heard again after being down rejoins (its entries join).

No leader, no consensus: the state is a CRDT, so any delivery order converges.
With the local adapter none of this runs: no delta is kept and ``run`` just sleeps.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Hashable, KeysView
from dataclasses import dataclass

import trio

from .bus import PubSub
from .state import Delta, Entry, State
from .topics import tracker_topic

__all__ = ["PresenceDiff", "Tracker"]

_log = logging.getLogger(__name__)

Listener = Callable[["PresenceDiff"], None]
# (node, "up" | "down" | "gone" | "bye", entries that joined or left because of it)
PeerListener = Callable[[str, str, list[Entry]], None]


@dataclass(slots=True, frozen=True)
class PresenceDiff:
    """Changes in one topic: key -> metas that joined / left (metas carry ``phx_ref``)."""

    topic: str
    joins: dict[str, list[dict]]
    leaves: dict[str, list[dict]]


class _Peer:
    __slots__ = ("node", "last_seen", "treq_at")

    def __init__(self, node: str, now: float) -> None:
        self.node = node
        self.last_seen = now
        self.treq_at = float("-inf")


class Tracker:
    """Tracks presences of local owners (sessions) and merges those of other nodes."""

    def __init__(
        self,
        pubsub: PubSub,
        replica: str | None = None,
        *,
        name: str = "presence",
        broadcast_period: float = 1.5,
        max_silent_periods: int = 10,
        down_period: float | None = None,
        permdown_period: float = 1200.0,
        flush_delay: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if down_period is None:
            down_period = broadcast_period * max_silent_periods * 2
        if down_period < 2 * broadcast_period or permdown_period <= down_period:
            raise ValueError("need down_period >= 2*broadcast_period < permdown_period")
        self.pubsub = pubsub
        self.replica = replica if replica is not None else pubsub.node
        # A restarted node must not reuse its old dots: name each incarnation.
        self.replica_id = f"{self.replica}#{secrets.token_hex(4)}"
        self.broadcast_period = broadcast_period
        self.max_silent_periods = max_silent_periods
        self.down_period = down_period
        self.permdown_period = permdown_period
        self._clock = clock if clock is not None else trio.current_time
        self._fanout = pubsub.adapter.fanout
        self._state = State(self.replica_id, keep_delta=self._fanout)
        self._listeners: list[Listener] = []
        self._peer_listeners: list[PeerListener] = []
        self._ref_prefix = secrets.token_urlsafe(6)
        self._refs = itertools.count(1)
        self._topic = tracker_topic(name)
        self._peers: dict[str, _Peer] = {}
        self._silent = 0
        # With a flush_delay, a local change is gossiped that long after it happened instead
        # of at the next period: a session that just logged in is reachable from other
        # nodes in milliseconds, not after up to broadcast_period.
        self.flush_delay = flush_delay
        self._wake: trio.Event | None = None
        if self._fanout:
            # Two trackers of one name on one node would take each other for restarts.
            if pubsub.subscriber_count(self._topic):
                raise ValueError(f"a tracker named {name!r} already runs on this bus")
            pubsub.subscribe(self._topic, self)

    # -- local API -------------------------------------------------------------------------

    def track(self, owner: Hashable, topic: str, key: str, meta: dict) -> str:
        """Track ``owner`` under ``key`` in ``topic``; returns the ref (``phx_ref``)."""
        ref = self._new_ref()
        meta = {**meta, "phx_ref": ref}
        self._state.join(owner, topic, key, meta)  # ValueError if already tracked
        self._poke()
        self._emit(PresenceDiff(topic, {key: [meta]}, {}))
        return ref

    def untrack(self, owner: Hashable, topic: str, key: str) -> None:
        entry = self._state.leave(owner, topic, key)
        self._poke()
        if entry is not None:
            self._emit(PresenceDiff(topic, {}, {key: [entry.meta]}))

    def untrack_all(self, owner: Hashable) -> None:
        self._report([], self._state.leave_owner(owner))
        self._poke()

    def update(
        self, owner: Hashable, topic: str, key: str, meta: dict | Callable[[dict], dict]
    ) -> str:
        """Replace the meta; reported as a leave of the old meta plus a join of the new
        one carrying ``phx_ref_prev``. ValueError if not tracked. A callable gets the old
        meta (read-only) and returns the new one."""
        old = self._state.get_by_owner(owner, topic, key)
        if old is None:
            raise ValueError(f"{owner!r} is not tracked in {topic!r} as {key!r}")
        new = meta(old.meta) if callable(meta) else meta
        ref = self._new_ref()
        new = {**new, "phx_ref": ref, "phx_ref_prev": old.meta["phx_ref"]}
        self._state.leave_join(owner, topic, key, new)
        self._poke()
        self._emit(PresenceDiff(topic, {key: [new]}, {key: [old.meta]}))
        return ref

    def list(self, topic: str) -> dict[str, list[dict]]:
        """key -> metas of everyone online in ``topic`` (metas are shared: read-only)."""
        return self._state.get_by_topic(topic)

    def get_by_key(self, topic: str, key: str) -> list[dict]:
        return self._state.get_by_key(topic, key)

    def keys(self, topic: str) -> KeysView[str]:
        """Keys online in ``topic``, a live view (cheap to test membership or count)."""
        return self._state.keys(topic)

    def listen(self, callback: Listener) -> None:
        """Call ``callback(diff)`` synchronously on every change (must not block)."""
        self._listeners.append(callback)

    def unlisten(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    def listen_peers(self, callback: PeerListener) -> None:
        """Call ``callback(node, state, entries)`` when a peer comes up ("up": its entries
        joined), goes silent ("down": they left), is purged ("gone") or says goodbye
        ("bye": its sessions were told to leave by their node), just before the
        diffs are reported. A leave seen in a diff is either a session that ended (its own
        node says so) or one whose node failed; only this callback tells them apart."""
        self._peer_listeners.append(callback)

    def _peer_event(self, node: str, state: str, entries: list[Entry]) -> None:
        for listener in tuple(self._peer_listeners):
            try:
                listener(node, state, entries)
            except Exception:
                _log.exception("peer listener %r failed", listener)

    @property
    def state(self) -> State:
        return self._state

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _new_ref(self) -> str:
        return f"{self._ref_prefix}{next(self._refs):x}"

    # -- reporting ---------------------------------------------------------------------------

    def _emit(self, diff: PresenceDiff) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(diff)
            except Exception:
                _log.exception("presence listener %r failed", listener)
        self.pubsub.local_broadcast(diff.topic, diff)

    def _report(self, joins: list[Entry], leaves: list[Entry]) -> None:
        if not joins and not leaves:
            return
        by_topic: dict[str, PresenceDiff] = {}
        for entries, joined in ((joins, True), (leaves, False)):
            for e in entries:
                diff = by_topic.get(e.topic)
                if diff is None:
                    diff = by_topic[e.topic] = PresenceDiff(e.topic, {}, {})
                side = diff.joins if joined else diff.leaves
                side.setdefault(e.key, []).append(e.meta)
        for diff in by_topic.values():
            self._emit(diff)

    # -- gossip ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat loop; start in a nursery after ``pubsub.run``. Idle without peers."""
        task_status.started()
        if not self._fanout:
            await trio.sleep_forever()
        self.announce()
        while True:
            if self.flush_delay is None:
                await trio.sleep(self.broadcast_period)
            else:
                self._wake = trio.Event()
                with trio.move_on_after(self.broadcast_period):
                    await self._wake.wait()
                    await trio.sleep(self.flush_delay)  # let a burst of changes gather
            self.tick()

    def tick(self, now: float | None = None) -> None:
        """One heartbeat period: send delta/heartbeat, detect down peers."""
        if not self._fanout:
            return
        now = self._clock() if now is None else now
        if self.flush():
            pass  # the delta was the heartbeat
        elif self._silent >= self.max_silent_periods:
            self._send(("hb", self.replica_id, self.replica, self._state.clocks(), None))
            self._silent = 0
        else:
            self._silent += 1
        self._detect_downs(now)

    def flush(self) -> bool:
        """Send the local changes not yet gossiped, now. Call it before sending another node
        something that refers to them: the adapter keeps one node's messages in order, so
        the receiver merges the change first. Returns whether there was anything."""
        state = self._state
        if not self._fanout or not state.has_delta():
            return False
        delta = state.take_delta()
        self._send(("hb", self.replica_id, self.replica, state.clocks(), delta))
        self._silent = 0
        return True

    def announce(self) -> None:
        """Heartbeat now with our clocks (peers that do not know us answer and sync)."""
        self._send(("hb", self.replica_id, self.replica, self._state.clocks(), None))

    def graceful_permdown(self) -> None:
        """Tell peers we are leaving for good (they drop our entries at once)."""
        self._send(("bye", self.replica_id, self.replica))

    def _send(self, message: tuple) -> None:
        self.pubsub.broadcast_from(self, self._topic, message)

    def deliver(self, topic: str, message: object) -> None:
        """Gossip from other nodes' trackers (we are our own topic's subscriber)."""
        kind, sender, node, *rest = message  # type: ignore[misc]
        if sender == self.replica_id:
            return
        now = self._clock()
        if kind == "bye":
            if sender in self._peers:
                self._permdown(sender, "bye")
            return
        peer = self._heard(sender, node, now)
        state = self._state
        if kind == "hb":
            clocks, delta = rest
            if delta is not None:
                self._report(*state.merge(delta))
            # Behind the sender's clocks after merging: a delta was lost (or we are new).
            if state.needs_sync(clocks):
                self._request_transfer(sender, peer, now)
        elif kind == "treq":
            (clocks,) = rest
            reply = ("tack", self.replica_id, self.replica, state.extract(sender, clocks))
            self.pubsub.direct_broadcast(node, self._topic, reply)
        elif kind == "tack":
            extract: Delta = rest[0]
            self._report(*state.merge(extract))

    def _heard(self, sender: str, node: str, now: float) -> _Peer:
        peer = self._peers.get(sender)
        if peer is None:
            # Same node, new incarnation: the old one's sessions died with it.
            for old in [r for r, p in self._peers.items() if p.node == node]:
                self._permdown(old)
            peer = self._peers[sender] = _Peer(node, now)
            joined = self._state.replica_up(sender)
            self._peer_event(node, "up", joined)
            self._report(joined, [])
            # Introduce ourselves so the newcomer can sync without waiting for a heartbeat.
            hello = ("hb", self.replica_id, self.replica, self._state.clocks(), None)
            self.pubsub.direct_broadcast(node, self._topic, hello)
            return peer
        peer.last_seen = now
        if sender in self._state.down:
            joined = self._state.replica_up(sender)
            self._peer_event(node, "up", joined)
            self._report(joined, [])
        return peer

    def _request_transfer(self, sender: str, peer: _Peer, now: float) -> None:
        if now - peer.treq_at < self.broadcast_period:
            return
        peer.treq_at = now
        request = ("treq", self.replica_id, self.replica, self._state.clocks())
        self.pubsub.direct_broadcast(peer.node, self._topic, request)

    def _detect_downs(self, now: float) -> None:
        for replica, peer in list(self._peers.items()):
            silent = now - peer.last_seen
            if silent > self.permdown_period:
                self._permdown(replica)
            elif silent > self.down_period and replica not in self._state.down:
                left = self._state.replica_down(replica)
                self._peer_event(peer.node, "down", left)
                self._report([], left)

    def _permdown(self, replica: str, why: str = "gone") -> None:
        left = self._state.replica_down(replica)
        self._peer_event(self._peers[replica].node, why, left)
        self._report([], left)
        self._state.remove_down_replicas(replica)
        del self._peers[replica]

    def peers(self) -> dict[str, str]:
        """Known peer replica ids -> "up" | "down"."""
        return {r: "down" if r in self._state.down else "up" for r in self._peers}

    def __repr__(self) -> str:
        return f"<Tracker {self.replica_id} entries={len(self._state)} peers={len(self._peers)}>"
