import itertools
import random

import pytest

from pubsub.state import Delta, State


def view(state: State) -> set[tuple[str, str, str]]:
    return {(e.topic, e.key, e.meta["id"]) for e in state.online()}


def replicas(*names: str) -> list[State]:
    states = [State(n) for n in names]
    for s in states:
        for other in names:
            if other != s.replica:
                s.replica_up(other)
    return states


def ids(entries) -> list[str]:
    return sorted(e.meta["id"] for e in entries)


def test_local_join_leave_and_queries():
    s = State("a")
    s.join("sess1", "presence:h", "alice", {"id": "1"})
    s.join("sess2", "presence:h", "alice", {"id": "2"})
    s.join("sess3", "presence:h", "bob", {"id": "3"})
    s.join("sess1", "room:r", "alice", {"id": "4"})
    assert s.get_by_topic("presence:h") == {
        "alice": [{"id": "1"}, {"id": "2"}],
        "bob": [{"id": "3"}],
    }
    assert s.get_by_key("presence:h", "alice") == [{"id": "1"}, {"id": "2"}]
    assert s.get_by_key("presence:h", "carol") == []
    assert s.get_by_topic("nothing") == {}
    with pytest.raises(ValueError):
        s.join("sess1", "presence:h", "alice", {"id": "dup"})
    assert s.leave("sess1", "presence:h", "alice").meta == {"id": "1"}
    assert s.leave("sess1", "presence:h", "alice") is None
    assert ids(s.leave_owner("sess1")) == ["4"]
    assert s.leave_owner("sess1") == []
    assert s.topics() == ["presence:h"]
    assert len(s) == 2


def test_two_replicas_exchange_deltas():
    a, b = replicas("a", "b")
    a.join("s1", "t", "alice", {"id": "a1"})
    b.join("s2", "t", "bob", {"id": "b1"})
    da, db = a.take_delta(), b.take_delta()
    joins, leaves = b.merge(da)
    assert ids(joins) == ["a1"] and leaves == []
    joins, leaves = a.merge(db)
    assert ids(joins) == ["b1"] and leaves == []
    assert view(a) == view(b) == {("t", "alice", "a1"), ("t", "bob", "b1")}
    a.leave("s1", "t", "alice")
    joins, leaves = b.merge(a.take_delta())
    assert joins == [] and ids(leaves) == ["a1"]
    assert view(a) == view(b) == {("t", "bob", "b1")}
    assert a.clocks() == b.clocks()


def test_remerge_is_idempotent():
    a, b = replicas("a", "b")
    a.join("s1", "t", "alice", {"id": "a1"})
    a.join("s2", "t", "alice", {"id": "a2"})
    a.leave("s1", "t", "alice")
    delta = a.take_delta()
    assert ids(b.merge(delta)[0]) == ["a2"]
    assert b.merge(delta) == ([], [])
    extract = a.extract("b", b.clocks())
    assert b.merge(extract) == ([], [])
    assert view(a) == view(b)


def test_delta_is_not_mutated_by_merge():
    a, b, c = replicas("a", "b", "c")
    a.join("s1", "t", "k", {"id": "1"})
    delta = a.take_delta()
    before = (dict(delta.context), {r: set(v) for r, v in delta.clouds.items()}, dict(delta.values))
    b.merge(delta)
    c.merge(delta)
    assert (delta.context, delta.clouds, delta.values) == before


def _history() -> tuple[list[State], list[Delta]]:
    """Three replicas making interleaved changes; returns them and all deltas sent."""
    a, b, c = replicas("a", "b", "c")
    sent: list[Delta] = []
    a.join("a1", "room", "alice", {"id": "a1"})
    b.join("b1", "room", "bob", {"id": "b1"})
    sent += [a.take_delta(), b.take_delta()]
    a.join("a2", "room", "alice", {"id": "a2"})  # a second tab of alice
    c.join("c1", "room", "carol", {"id": "c1"})
    c.join("c2", "lobby", "carol", {"id": "c2"})
    sent += [a.take_delta(), c.take_delta()]
    a.leave("a1", "room", "alice")  # removal after its join was sent
    b.leave_join("b1", "room", "bob", {"id": "b1'"})
    c.join("c3", "room", "dave", {"id": "c3"})
    c.leave("c3", "room", "dave")  # join and leave inside one delta
    sent += [a.take_delta(), b.take_delta(), c.take_delta()]
    return [a, b, c], sent


EXPECTED = {
    ("room", "alice", "a2"),
    ("room", "bob", "b1'"),
    ("room", "carol", "c1"),
    ("lobby", "carol", "c2"),
}


@pytest.mark.parametrize("seed", range(30))
def test_three_replicas_converge_in_any_delivery_order(seed):
    (a, b, c), sent = _history()
    rng = random.Random(seed)
    for receiver in (a, b, c):
        incoming = [d for d in sent if d.replica != receiver.replica]
        rng.shuffle(incoming)  # out of order, even for one sender
        for d in incoming:
            receiver.merge(d)
        # duplicates are harmless
        for d in rng.sample(incoming, 3):
            assert receiver.merge(d) == ([], [])
    assert view(a) == view(b) == view(c) == EXPECTED
    assert a.clocks() == b.clocks() == c.clocks()
    assert a.clouds == b.clouds == c.clouds == {}


def test_every_permutation_of_one_senders_deltas_converges():
    (a, b, c), sent = _history()
    from_a = [d for d in sent if d.replica == "a"]
    results = set()
    for order in itertools.permutations(from_a):
        r = State("r")
        r.replica_up("a")
        for d in order:
            r.merge(d)
        results.add(frozenset(view(r)))
    assert results == {frozenset({("room", "alice", "a2")})}


def test_merge_reports_update_as_leave_and_join():
    a, b = replicas("a", "b")
    a.join("s", "t", "alice", {"id": "old"})
    b.merge(a.take_delta())
    a.leave_join("s", "t", "alice", {"id": "new"})
    joins, leaves = b.merge(a.take_delta())
    assert ids(joins) == ["new"] and ids(leaves) == ["old"]


def test_gap_detected_and_repaired_by_extract():
    a, b = replicas("a", "b")
    a.join("s1", "t", "k", {"id": "1"})
    lost = a.take_delta()
    a.join("s2", "t", "k", {"id": "2"})
    later = a.take_delta()
    assert not b.has_gap(lost)
    assert b.has_gap(later)
    b.merge(later)
    assert view(b) == {("t", "k", "2")}
    assert b.clouds == {"a": {2}}  # seen dot 2 but not dot 1
    assert b.needs_sync(a.clocks()) is True
    b.merge(a.extract("b", b.clocks()))
    assert not b.needs_sync(a.clocks())
    assert view(b) == view(a) == {("t", "k", "1"), ("t", "k", "2")}
    b.merge(lost)  # arrives very late: no duplicate
    assert len(b) == 2
    assert b.clocks() == a.clocks()


def test_a_later_removal_covers_a_lost_join():
    a, b = replicas("a", "b")
    a.join("s1", "t", "k", {"id": "1"})
    lost = a.take_delta()
    a.leave("s1", "t", "k")
    later = a.take_delta()
    b.merge(later)  # the removal marks dot 1 seen: nothing is missing any more
    assert not b.needs_sync(a.clocks())
    assert b.merge(lost) == ([], [])
    assert view(b) == set()


def test_extract_carries_third_party_entries_and_removals():
    a, b, c = replicas("a", "b", "c")
    c.join("s", "t", "carol", {"id": "c1"})
    c.join("s2", "t", "carol", {"id": "c2"})
    a.merge(c.take_delta())
    b.merge(a.extract("b", b.clocks()))  # b learns c's entries from a
    assert view(b) == {("t", "carol", "c1"), ("t", "carol", "c2")}
    c.leave("s", "t", "carol")
    a.merge(c.take_delta())
    joins, leaves = b.merge(a.extract("b", b.clocks()))
    assert joins == [] and ids(leaves) == ["c1"]
    assert view(a) == view(b) == view(c)


def test_extract_leaves_out_the_receivers_own_entries_and_unknown_replicas():
    a, b = replicas("a", "b")
    b.join("s", "t", "bob", {"id": "b"})
    a.merge(b.take_delta())
    stranger = State("x")
    stranger.join("s", "t", "x", {"id": "x"})
    a.replica_up("x")
    a.merge(stranger.take_delta())
    extract = a.extract("b", b.clocks())
    assert [tag[0] for tag in extract.values] == []  # b's own, and x unknown to b
    assert "x" not in extract.context


def test_unknown_replica_is_ignored_until_up():
    a = State("a")
    other = State("z")
    other.join("s", "t", "k", {"id": "z"})
    delta = other.take_delta()
    assert a.merge(delta) == ([], [])
    assert view(a) == set()
    a.replica_up("z")
    assert ids(a.merge(delta)[0]) == ["z"]


def test_replica_down_and_up():
    a, b = replicas("a", "b")
    b.join("s1", "t", "bob", {"id": "b1"})
    b.join("s2", "t", "bob", {"id": "b2"})
    a.join("s3", "t", "alice", {"id": "a1"})
    a.merge(b.take_delta())
    assert ids(a.replica_down("b")) == ["b1", "b2"]
    assert a.replica_down("b") == []  # already down
    assert a.get_by_topic("t") == {"alice": [{"id": "a1"}]}
    assert a.get_by_key("t", "bob") == []
    assert "b" not in a.clocks()
    assert a.replicas() == {"a": True, "b": False}
    # Changes from a down replica are merged silently, and show when it is back.
    b.join("s4", "t", "bob", {"id": "b3"})
    assert a.merge(b.take_delta()) == ([], [])
    assert ids(a.replica_up("b")) == ["b1", "b2", "b3"]
    assert a.replica_up("b") == []  # already up
    assert view(a) == view(b) | {("t", "alice", "a1")}


def test_remove_down_replicas_purges_and_ignores_later_deltas():
    a, b = replicas("a", "b")
    b.join("s1", "t", "bob", {"id": "b1"})
    a.merge(b.take_delta())
    a.replica_down("b")
    a.remove_down_replicas("b")
    assert len(a) == 0 and "b" not in a.context and a.replicas() == {"a": True}
    b.join("s2", "t", "bob", {"id": "b2"})
    assert a.merge(b.take_delta()) == ([], [])
    assert view(a) == set()
    with pytest.raises(ValueError):
        a.remove_down_replicas("a")
    assert a.replica_down("a") == []


def test_no_delta_kept_for_single_node():
    s = State("solo", keep_delta=False)
    for i in range(100):
        s.join(i, "t", "k", {"id": str(i)})
        s.leave(i, "t", "k")
    assert not s.has_delta()
    assert len(s.delta) == 0
    assert s.context["solo"] == 200


def test_extract_does_not_remove_entries_the_sender_has_not_seen():
    a, b, c = replicas("a", "b", "c")
    c.join("s", "t", "carol", {"id": "c1"})
    a.merge(c.take_delta())
    # b knows c but has not heard of c1 yet: its extract must not remove it from a.
    assert a.merge(b.extract("a", a.clocks())) == ([], [])
    assert view(a) == {("t", "carol", "c1")}


@pytest.mark.parametrize("seed", range(20))
def test_random_gossip_with_deltas_and_extracts_converges(seed):
    rng = random.Random(seed)
    states = replicas("a", "b", "c")
    inbox: list[tuple[State, Delta]] = []
    live: dict[str, list[tuple[str, str]]] = {s.replica: [] for s in states}
    for step in range(60):
        s = rng.choice(states)
        owned = live[s.replica]
        if owned and rng.random() < 0.4:
            owner, key = owned.pop(rng.randrange(len(owned)))
            s.leave(owner, "t", key)
        else:
            owner, key = f"{s.replica}{step}", rng.choice("xyz")
            s.join(owner, "t", key, {"id": owner})
            owned.append((owner, key))
        if rng.random() < 0.5:
            delta = s.take_delta()
            inbox += [(r, delta) for r in states if r is not s and rng.random() < 0.8]
        if rng.random() < 0.2:
            src, dst = rng.sample(states, 2)
            inbox.append((dst, src.extract(dst.replica, dst.clocks())))
        rng.shuffle(inbox)
        for _ in range(rng.randrange(len(inbox) + 1)):
            dst, delta = inbox.pop()
            dst.merge(delta)
    for dst, delta in inbox:
        dst.merge(delta)
    # Anti-entropy: everybody pulls a full state from everybody once.
    for dst in states:
        for src in states:
            if src is not dst:
                dst.merge(src.extract(dst.replica, dst.clocks()))
    expected = {("t", key, owner) for owned in live.values() for owner, key in owned}
    assert view(states[0]) == view(states[1]) == view(states[2]) == expected
