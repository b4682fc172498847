"""Pure mergeable presence state (no trio, no I/O), after Phoenix.Tracker.State.

Theory of operation
-------------------
The state is an observed-remove set of entries ``(topic, key, meta)`` held by replicas
(one per running node, named ``"<node>#<incarnation>"`` so a restarted node is a new
replica). Every local change takes the next *dot* ``(replica, n)`` of this replica's
counter; an entry is identified by the dot (its *tag*) that created it.

Each state remembers which dots it has *seen*: a compact vector ``context``
(``{replica: n}`` = all dots up to n) plus ``clouds`` (seen dots beyond a gap). Merging a
remote state or delta follows two rules:

* a remote entry whose tag we have not seen is a join (we have never heard of it);
* one of our entries whose tag the remote has seen but no longer holds is a leave
  (the remote observed its removal).

Then the seen-sets are unioned. Both rules only look at what each side has seen, so
merges commute, are idempotent, and converge whatever the order of delivery. Only the
owning replica removes its own entries; other replicas learn removals by merging.

Replication uses *deltas*: the local changes since the last ``take_delta`` (entries
added and still present, plus the dots of everything changed). Deltas may be lost or
reordered: a receiver whose context is still behind the sender's advertised clocks after
merging (``needs_sync``) asks the sender for a full ``extract``. A replica that stops
heartbeating is marked down (its entries hide and are reported as leaves); it comes back
with ``replica_up`` (joins) or is purged with ``remove_down_replicas``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, KeysView
from dataclasses import dataclass, field

__all__ = ["Delta", "Entry", "State", "Tag"]

Tag = tuple[str, int]


class Entry:
    """One tracked presence. ``owner`` is local-only (None for remote entries)."""

    __slots__ = ("tag", "topic", "key", "meta", "owner")

    def __init__(self, tag: Tag, topic: str, key: str, meta: dict, owner: Hashable) -> None:
        self.tag = tag
        self.topic = topic
        self.key = key
        self.meta = meta
        self.owner = owner

    def __repr__(self) -> str:
        return f"Entry({self.tag!r}, {self.topic!r}, {self.key!r}, {self.meta!r})"


@dataclass(slots=True)
class Delta:
    """What one replica sends another: a delta (``start`` > 0 possible) or a full extract.

    ``context``/``clouds`` are the dots the sender had seen, ``values`` the entries it
    holds among them. Only plain data (str, int, dict, tuple), so a codec can ship it.
    """

    replica: str
    start: int = 0  # the sender's counter when this delta began (0: no predecessor)
    end: int = 0
    context: dict[str, int] = field(default_factory=dict)
    clouds: dict[str, set[int]] = field(default_factory=dict)
    values: dict[Tag, tuple[str, str, dict]] = field(default_factory=dict)

    def seen(self, tag: Tag) -> bool:
        replica, n = tag
        if n <= self.context.get(replica, 0):
            return True
        cloud = self.clouds.get(replica)
        return cloud is not None and n in cloud

    def __len__(self) -> int:
        return len(self.values) + sum(len(c) for c in self.clouds.values())


class State:
    """Presence entries of all replicas, as seen by ``replica``."""

    def __init__(self, replica: str, *, keep_delta: bool = True) -> None:
        self.replica = replica
        self.context: dict[str, int] = {replica: 0}
        self.clouds: dict[str, set[int]] = {}
        self.values: dict[Tag, Entry] = {}
        self.down: set[str] = set()
        # topic -> key -> tag -> entry (insertion order = join order)
        self._topics: dict[str, dict[str, dict[Tag, Entry]]] = {}
        # owner -> (topic, key) -> entry, for local entries only
        self._owners: dict[Hashable, dict[tuple[str, str], Entry]] = {}
        # Single-node trackers have nobody to replicate to: keep no delta at all.
        self._keep_delta = keep_delta
        self.delta = Delta(replica)

    # -- queries -----------------------------------------------------------------------------

    def clocks(self) -> dict[str, int]:
        """The compact context without down replicas (what heartbeats advertise)."""
        down = self.down
        return {r: n for r, n in self.context.items() if r not in down}

    def get_by_topic(self, topic: str) -> dict[str, list[dict]]:
        """key -> metas (join order) of online replicas' entries in ``topic``."""
        keys = self._topics.get(topic)
        if not keys:
            return {}
        if not self.down:
            return {key: [e.meta for e in tags.values()] for key, tags in keys.items()}
        out: dict[str, list[dict]] = {}
        for key, tags in keys.items():
            metas = [e.meta for e in tags.values() if e.tag[0] not in self.down]
            if metas:
                out[key] = metas
        return out

    def keys(self, topic: str) -> KeysView[str]:
        """Keys in ``topic`` without copying (may include entries of down replicas: check
        with ``get_by_key``)."""
        return self._topics.get(topic, {}).keys()

    def get_by_key(self, topic: str, key: str) -> list[dict]:
        tags = self._topics.get(topic, {}).get(key)
        if not tags:
            return []
        return [e.meta for e in tags.values() if e.tag[0] not in self.down]

    def get_by_owner(self, owner: Hashable, topic: str, key: str) -> Entry | None:
        entries = self._owners.get(owner)
        return None if entries is None else entries.get((topic, key))

    def owner_entries(self, owner: Hashable) -> list[Entry]:
        return list(self._owners.get(owner, {}).values())

    def online(self) -> Iterator[Entry]:
        down = self.down
        return (e for e in self.values.values() if e.tag[0] not in down)

    def topics(self) -> list[str]:
        return list(self._topics)

    def seen(self, tag: Tag) -> bool:
        replica, n = tag
        if n <= self.context.get(replica, 0):
            return True
        cloud = self.clouds.get(replica)
        return cloud is not None and n in cloud

    def __len__(self) -> int:
        return len(self.values)

    # -- index maintenance -------------------------------------------------------------------

    def _insert(self, entry: Entry) -> None:
        self.values[entry.tag] = entry
        keys = self._topics.get(entry.topic)
        if keys is None:
            keys = self._topics[entry.topic] = {}
        tags = keys.get(entry.key)
        if tags is None:
            tags = keys[entry.key] = {}
        tags[entry.tag] = entry
        if entry.owner is not None:
            owned = self._owners.get(entry.owner)
            if owned is None:
                owned = self._owners[entry.owner] = {}
            owned[(entry.topic, entry.key)] = entry

    def _delete(self, entry: Entry) -> None:
        del self.values[entry.tag]
        keys = self._topics[entry.topic]
        tags = keys[entry.key]
        del tags[entry.tag]
        if not tags:
            del keys[entry.key]
            if not keys:
                del self._topics[entry.topic]
        if entry.owner is not None:
            owned = self._owners[entry.owner]
            del owned[(entry.topic, entry.key)]
            if not owned:
                del self._owners[entry.owner]

    # -- local changes -----------------------------------------------------------------------

    def _next_dot(self) -> int:
        n = self.context[self.replica] + 1
        self.context[self.replica] = n
        if self._keep_delta:
            self.delta.clouds.setdefault(self.replica, set()).add(n)
            self.delta.end = n
        return n

    def join(self, owner: Hashable, topic: str, key: str, meta: dict) -> Entry:
        """Track ``owner`` in ``topic`` under ``key``; ValueError if it already is."""
        if owner is None:
            raise ValueError("owner must not be None")
        if self.get_by_owner(owner, topic, key) is not None:
            raise ValueError(f"{owner!r} already tracked in {topic!r} as {key!r}")
        tag = (self.replica, self._next_dot())
        entry = Entry(tag, topic, key, meta, owner)
        self._insert(entry)
        if self._keep_delta:
            self.delta.values[tag] = (topic, key, meta)
        return entry

    def leave(self, owner: Hashable, topic: str, key: str) -> Entry | None:
        """Untrack; returns the removed entry, or None if it was not tracked."""
        entry = self.get_by_owner(owner, topic, key)
        if entry is not None:
            self._remove_local(entry)
        return entry

    def leave_owner(self, owner: Hashable) -> list[Entry]:
        entries = self.owner_entries(owner)
        for entry in entries:
            self._remove_local(entry)
        return entries

    def leave_join(self, owner: Hashable, topic: str, key: str, meta: dict) -> tuple[Entry, Entry]:
        """Replace the meta of a tracked entry (a leave plus a join with a new tag)."""
        old = self.get_by_owner(owner, topic, key)
        if old is None:
            raise KeyError((topic, key))
        self._remove_local(old)
        return old, self.join(owner, topic, key, meta)

    def _remove_local(self, entry: Entry) -> None:
        self._delete(entry)
        # A new dot makes the removal visible in clocks (a missed removal-only delta is
        # then detected as a gap); the removed tag goes into the delta's seen-set.
        self._next_dot()
        if self._keep_delta:
            self.delta.values.pop(entry.tag, None)
            self.delta.clouds[self.replica].add(entry.tag[1])

    # -- replication ---------------------------------------------------------------------------

    def has_delta(self) -> bool:
        return bool(self.delta.clouds)

    def take_delta(self) -> Delta:
        """Return the pending delta and start a new one."""
        delta = self.delta
        n = self.context[self.replica]
        self.delta = Delta(self.replica, start=n, end=n)
        return delta

    def extract(self, remote: str, remote_context: dict[str, int]) -> Delta:
        """The full state for ``remote``, restricted to replicas it knows, minus its own."""
        known = remote_context.keys()
        context = {r: n for r, n in self.context.items() if r in known}
        clouds = {r: set(c) for r, c in self.clouds.items() if r in known}
        values = {
            tag: (e.topic, e.key, e.meta)
            for tag, e in self.values.items()
            if tag[0] != remote and tag[0] in known
        }
        n = self.context[self.replica]
        return Delta(self.replica, start=0, end=n, context=context, clouds=clouds, values=values)

    def has_gap(self, delta: Delta) -> bool:
        """True if ``delta`` follows a delta of its sender that we have not seen."""
        return delta.start > self.context.get(delta.replica, 0)

    def needs_sync(self, remote_clocks: dict[str, int]) -> bool:
        """True if the remote has seen dots we have not (of replicas we know, not us)."""
        context = self.context
        for replica, n in remote_clocks.items():
            if replica == self.replica or replica in self.down:
                continue
            mine = context.get(replica)
            if mine is not None and n > mine:
                return True
        return False

    def merge(self, delta: Delta) -> tuple[list[Entry], list[Entry]]:
        """Merge a delta or extract; returns the (joins, leaves) visible to readers."""
        context = self.context
        down = self.down
        joins: list[Entry] = []
        for tag, (topic, key, meta) in delta.values.items():
            if tag[0] not in context or self.seen(tag):
                continue  # unknown (or purged) replica, or already seen
            entry = Entry(tag, topic, key, meta, None)
            self._insert(entry)
            if tag[0] not in down:
                joins.append(entry)
        leaves: list[Entry] = []
        for tag in self._removal_candidates(delta):
            entry = self.values.get(tag)
            if entry is None or tag[0] == self.replica or tag in delta.values:
                continue
            if delta.seen(tag):
                self._delete(entry)
                if tag[0] not in down:
                    leaves.append(entry)
        self._merge_seen(delta)
        return joins, leaves

    def _removal_candidates(self, delta: Delta) -> Iterable[Tag]:
        if delta.context:
            # A full extract: anything we hold may have been removed remotely.
            return list(self.values)
        return [(r, n) for r, cloud in delta.clouds.items() for n in cloud]

    def _merge_seen(self, delta: Delta) -> None:
        context = self.context
        for replica, n in delta.context.items():
            mine = context.get(replica)
            if mine is not None and n > mine and replica != self.replica:
                context[replica] = n
        for replica, cloud in delta.clouds.items():
            if replica in context and replica != self.replica:
                mine_cloud = self.clouds.get(replica)
                if mine_cloud is None:
                    self.clouds[replica] = set(cloud)
                else:
                    mine_cloud |= cloud
        for replica in delta.clouds.keys() | delta.context.keys():
            if replica in self.clouds:
                self._compact(replica)

    def _compact(self, replica: str) -> None:
        cloud = self.clouds[replica]
        n = self.context[replica]
        while n + 1 in cloud:
            n += 1
        self.context[replica] = n
        rest = {d for d in cloud if d > n}
        if rest:
            self.clouds[replica] = rest
        else:
            del self.clouds[replica]

    # -- membership --------------------------------------------------------------------------

    def replica_up(self, replica: str) -> list[Entry]:
        """Know ``replica`` (again); returns its entries if it was down (now visible)."""
        self.context.setdefault(replica, 0)
        if replica not in self.down:
            return []
        self.down.discard(replica)
        return self._entries_of(replica)

    def replica_down(self, replica: str) -> list[Entry]:
        """Hide ``replica``'s entries; returns them (now left) if it was up."""
        if replica == self.replica or replica in self.down or replica not in self.context:
            return []
        self.down.add(replica)
        return self._entries_of(replica)

    def remove_down_replicas(self, replica: str) -> None:
        """Forget ``replica`` for good: its entries, its dots; later deltas are ignored."""
        if replica == self.replica:
            raise ValueError("cannot remove the local replica")
        for entry in self._entries_of(replica):
            self._delete(entry)
        self.context.pop(replica, None)
        self.clouds.pop(replica, None)
        self.down.discard(replica)

    def _entries_of(self, replica: str) -> list[Entry]:
        return [e for tag, e in self.values.items() if tag[0] == replica]

    def replicas(self) -> dict[str, bool]:
        """Known replicas -> up?"""
        return {r: r not in self.down for r in self.context}
