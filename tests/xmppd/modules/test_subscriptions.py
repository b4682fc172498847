"""Presence subscriptions (RFC 6121 §3, Appendix A) between real clients on a real server."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support import run

SERVER_CONFIG = "[modules.roster]\nmax_pending = 2\n"

# Appendix A.1 states of alice's subscription with bob, and how two clients reach each one.
SETUP: dict[str, list[tuple[str, str]]] = {
    "None": [],
    "None + Pending Out": [("A", "subscribe")],
    "None + Pending In": [("B", "subscribe")],
    "None + Pending Out+In": [("A", "subscribe"), ("B", "subscribe")],
    "To": [("A", "subscribe"), ("B", "subscribed")],
    "To + Pending In": [("A", "subscribe"), ("B", "subscribed"), ("B", "subscribe")],
    "From": [("B", "subscribe"), ("A", "subscribed")],
    "From + Pending Out": [("B", "subscribe"), ("A", "subscribed"), ("A", "subscribe")],
    "Both": [("A", "subscribe"), ("B", "subscribed"), ("B", "subscribe"), ("A", "subscribed")],
}

# (alice's state, stanza, direction) -> (alice's new state, delivered to the other side?,
# who holds a pre-approval afterwards). "out": alice sends it to bob (Appendix A.2 on her
# server, then A.3 on bob's); "in": bob sends it to alice (A.3 as her server applies it).
N, NO, NI, NOI = "None", "None + Pending Out", "None + Pending In", "None + Pending Out+In"
T, TI, F, FO, B = "To", "To + Pending In", "From", "From + Pending Out", "Both"
TABLE: list[tuple[str, str, str, str, bool, str | None]] = [
    # alice subscribes to bob (§3.1.2; bob's server §3.1.3, auto-reply when subscribed)
    (N, "subscribe", "out", NO, True, None),
    (NO, "subscribe", "out", NO, False, None),
    (NI, "subscribe", "out", NOI, True, None),
    (NOI, "subscribe", "out", NOI, False, None),
    (T, "subscribe", "out", T, False, None),
    (TI, "subscribe", "out", TI, False, None),
    (F, "subscribe", "out", FO, True, None),
    (FO, "subscribe", "out", FO, False, None),
    (B, "subscribe", "out", B, False, None),
    # alice unsubscribes from bob (§3.3.2, §3.3.3)
    (N, "unsubscribe", "out", N, False, None),
    (NO, "unsubscribe", "out", N, True, None),
    (NI, "unsubscribe", "out", NI, False, None),
    (NOI, "unsubscribe", "out", NI, True, None),
    (T, "unsubscribe", "out", N, True, None),
    (TI, "unsubscribe", "out", NI, True, None),
    (F, "unsubscribe", "out", F, False, None),
    (FO, "unsubscribe", "out", F, True, None),
    (B, "unsubscribe", "out", F, True, None),
    # alice approves bob (§3.1.5), or pre-approves him when he has not asked (§3.4)
    (N, "subscribed", "out", N, False, "A"),
    (NO, "subscribed", "out", NO, False, "A"),
    (NI, "subscribed", "out", F, True, None),
    (NOI, "subscribed", "out", FO, True, None),
    (T, "subscribed", "out", T, False, "A"),
    (TI, "subscribed", "out", B, True, None),
    (F, "subscribed", "out", F, False, None),
    (FO, "subscribed", "out", FO, False, None),
    (B, "subscribed", "out", B, False, None),
    # alice denies or cancels bob's subscription (§3.2.2)
    (N, "unsubscribed", "out", N, False, None),
    (NO, "unsubscribed", "out", NO, False, None),
    (NI, "unsubscribed", "out", N, True, None),
    (NOI, "unsubscribed", "out", NO, True, None),
    (T, "unsubscribed", "out", T, False, None),
    (TI, "unsubscribed", "out", T, True, None),
    (F, "unsubscribed", "out", N, True, None),
    (FO, "unsubscribed", "out", NO, True, None),
    (B, "unsubscribed", "out", T, True, None),
    # bob asks alice (A.3.1)
    (N, "subscribe", "in", NI, True, None),
    (NO, "subscribe", "in", NOI, True, None),
    (NI, "subscribe", "in", NI, False, None),
    (NOI, "subscribe", "in", NOI, False, None),
    (T, "subscribe", "in", TI, True, None),
    (TI, "subscribe", "in", TI, False, None),
    (F, "subscribe", "in", F, False, None),
    (FO, "subscribe", "in", FO, False, None),
    (B, "subscribe", "in", B, False, None),
    # bob unsubscribes from alice (A.3.2)
    (N, "unsubscribe", "in", N, False, None),
    (NO, "unsubscribe", "in", NO, False, None),
    (NI, "unsubscribe", "in", N, True, None),
    (NOI, "unsubscribe", "in", NO, True, None),
    (T, "unsubscribe", "in", T, False, None),
    (TI, "unsubscribe", "in", T, True, None),
    (F, "unsubscribe", "in", N, True, None),
    (FO, "unsubscribe", "in", NO, True, None),
    (B, "unsubscribe", "in", T, True, None),
    # bob approves alice (A.3.3), or pre-approves her
    (N, "subscribed", "in", N, False, "B"),
    (NO, "subscribed", "in", T, True, None),
    (NI, "subscribed", "in", NI, False, "B"),
    (NOI, "subscribed", "in", TI, True, None),
    (T, "subscribed", "in", T, False, None),
    (TI, "subscribed", "in", TI, False, None),
    (F, "subscribed", "in", F, False, "B"),
    (FO, "subscribed", "in", B, True, None),
    (B, "subscribed", "in", B, False, None),
    # bob denies or cancels alice's subscription (A.3.4)
    (N, "unsubscribed", "in", N, False, None),
    (NO, "unsubscribed", "in", N, True, None),
    (NI, "unsubscribed", "in", NI, False, None),
    (NOI, "unsubscribed", "in", NI, True, None),
    (T, "unsubscribed", "in", N, True, None),
    (TI, "unsubscribed", "in", NI, True, None),
    (F, "unsubscribed", "in", F, False, None),
    (FO, "unsubscribed", "in", F, True, None),
    (B, "unsubscribed", "in", F, True, None),
]
MIRROR = {"none": "none", "to": "from", "from": "to", "both": "both"}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One asyncio loop for the whole table, in a thread, so its clients stay logged in."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def finish() -> None:  # what asyncio.run does at the end
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    run_in(loop, finish())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def run_in(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(60)


@pytest.fixture(scope="module")
def pairs(im: Any, loop: asyncio.AbstractEventLoop) -> Iterator[dict]:
    """One logged-in (alice, bob) pair per stanza type and direction, reset between cases."""
    keys = [
        (t, d)
        for t in ("subscribe", "unsubscribe", "subscribed", "unsubscribed")
        for d in ("out", "in")
    ]
    names = im.users(*[n for _ in keys for n in ("alice", "bob")])

    async def login_all() -> dict:
        made = {}
        for i, key in enumerate(keys):
            a, b = names[2 * i], names[2 * i + 1]
            made[key] = (a, b, await im.login(a), await im.login(b))
        return made

    made = run_in(loop, login_all())
    yield made

    async def close_all() -> None:
        for *_names, ca, cb in made.values():
            await ca.close()
            await cb.close()
        made.clear()
        gc.collect()  # slixmpp's clean-up needs the loop: let it run while the loop lives

    run_in(loop, close_all())


def state(mine: dict | None, theirs: dict | None) -> str:
    """Alice's Appendix A state from both rosters: her pending-in is bob's pending-out."""
    sub = (mine or {}).get("subscription") or "none"
    ask = (mine or {}).get("ask") == "subscribe"
    pending_in = (theirs or {}).get("ask") == "subscribe"
    name = {"none": "None", "to": "To", "from": "From", "both": "Both"}[sub]
    if ask and pending_in:
        return f"{name} + Pending Out+In"
    if ask:
        return f"{name} + Pending Out"
    return f"{name} + Pending In" if pending_in else name


async def observe(
    im: Any, ca: Any, cb: Any, a: str, b: str
) -> tuple[str, dict | None, dict | None]:
    mine = await im.item(ca, f"{b}@localhost")
    theirs = await im.item(cb, f"{a}@localhost")
    # Both servers' views agree: bob's subscription mirrors alice's.
    assert MIRROR[(mine or {}).get("subscription") or "none"] == (
        (theirs or {}).get("subscription") or "none"
    )
    return state(mine, theirs), mine, theirs


async def reset(im: Any, ca: Any, cb: Any, a: str, b: str) -> None:
    """Back to "None": each removes the other (RFC 6121 §2.5 cancels everything both ways)."""
    for client, other in ((ca, b), (cb, a)):
        if await im.item(client, f"{other}@localhost") is not None:
            await im.roster_set(client, f"{other}@localhost", remove=True)
            await im.barrier(client)


@pytest.mark.parametrize(
    ("start", "type_", "direction", "expected", "delivered", "approved"),
    TABLE,
    ids=[f"{d}-{t}-{s}" for s, t, d, *_ in TABLE],
)
def test_appendix_a_transition(
    im: Any,
    loop: asyncio.AbstractEventLoop,
    pairs: dict,
    start: str,
    type_: str,
    direction: str,
    expected: str,
    delivered: bool,
    approved: str | None,
) -> None:
    a, b, ca, cb = pairs[(type_, direction)]

    async def scenario() -> None:
        clients, jids = {"A": ca, "B": cb}, {"A": f"{a}@localhost", "B": f"{b}@localhost"}
        await reset(im, ca, cb, a, b)
        assert (await observe(im, ca, cb, a, b))[0] == "None"
        for actor, step in SETUP[start]:
            im.subscription(clients[actor], jids["B" if actor == "A" else "A"], step)
            await im.barrier(clients[actor])
        assert (await observe(im, ca, cb, a, b))[0] == start
        sender, recipient = ("A", "B") if direction == "out" else ("B", "A")
        await im.until_marker(clients[sender], clients[recipient])  # what came before: not ours
        im.subscription(clients[sender], jids[recipient], type_)
        seen = await im.until_marker(clients[sender], clients[recipient])
        got = [
            s for s in seen if s.xml.get("type") == type_ and s["from"].full == jids[sender]
        ]  # stamped with the sender's bare JID (§3.1.2)
        assert bool(got) == delivered, [str(s) for s in seen]
        now, mine, theirs = await observe(im, ca, cb, a, b)
        assert now == expected
        assert ((mine or {}).get("approved") == "true") == (approved == "A")
        assert ((theirs or {}).get("approved") == "true") == (approved == "B")

    run_in(loop, scenario())


def is_sub(type_: str, frm: str) -> Any:
    return lambda s: s.name == "presence" and s.xml.get("type") == type_ and s["from"].full == frm


def test_pending_request_is_delivered_at_each_login_until_answered(im: Any) -> None:
    alice, bob = im.users("alice", "bob")
    bob_jid = f"{bob}@localhost"

    async def scenario() -> None:
        ca = await im.login(alice)
        im.subscription(ca, bob_jid, "subscribe", pstatus="it's alice")
        await im.barrier(ca)  # bob is offline: the request is kept
        for resource in ("phone", "desk"):
            cb = await im.login(bob, resource)
            request = await im.wait_for(cb, is_sub("subscribe", f"{alice}@localhost"))
            assert request["status"] == "it's alice"  # the request as sent (§3.1.3)
        # Answered (denied) from the desk: no more re-deliveries.
        im.subscription(cb, f"{alice}@localhost", "unsubscribed")
        await im.barrier(cb)
        assert (await im.item(ca, bob_jid))["ask"] is None
        again = await im.login(bob, "laptop")
        seen = await im.until_marker(ca, again)
        assert not [s for s in seen if s.xml.get("type") == "subscribe"]
        for client in (ca, cb, again):
            await client.close()

    run(scenario())


def test_denying_a_stranger_adds_nothing_to_the_roster(im: Any) -> None:
    """§3.2.2, A.2.4: "unsubscribed" to a request from someone not in the roster only drops the
    request; unlike "subscribed" (§3.1.5), it creates no item."""
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        ca, cb = await im.login(alice), await im.login(bob)
        im.subscription(cb, f"{alice}@localhost", "subscribe")
        await im.wait_for(ca, is_sub("subscribe", f"{bob}@localhost"))
        im.subscription(ca, f"{bob}@localhost", "unsubscribed")
        await im.wait_for(cb, is_sub("unsubscribed", f"{alice}@localhost"))
        assert await im.item(ca, f"{bob}@localhost") is None
        assert ca.pushes.empty()
        assert (await im.item(cb, f"{alice}@localhost"))["ask"] is None
        await ca.close()
        await cb.close()

    run(scenario())


def test_a_blocked_strangers_request_is_not_delivered_again(im: Any) -> None:
    """XEP-0191 §3.3: nothing from a blocked JID reaches the user, a stored request included."""
    alice, bob, carol = im.users("alice", "bob", "carol")

    async def scenario() -> None:
        cb, cc = await im.login(bob), await im.login(carol)
        im.subscription(cb, f"{alice}@localhost", "subscribe")
        await im.barrier(cb)  # alice is offline: kept for her next login
        ca = await im.login(alice)
        await im.wait_for(ca, is_sub("subscribe", f"{bob}@localhost"))
        ca.register_plugin("xep_0191")
        await ca.plugin["xep_0191"].block(f"{bob}@localhost", timeout=5)
        await ca.close()
        again = await im.login(alice, "again")
        seen = await im.until_marker(cc, again)
        assert [s for s in seen if s["from"].bare == f"{bob}@localhost"] == []
        for client in (cb, cc, again):
            await client.close()

    run(scenario())


def test_blocking_a_requester_frees_its_pending_place(im: Any) -> None:
    """A blocked JID's request can't be answered (XEP-0191 §3.3: answers to it bounce), so the
    block drops it: blocked spammers must not use up max_pending (2 here) for good."""
    victim, *strangers = im.users("victim", "s", "s", "s")

    async def scenario() -> None:
        cv = await im.login(victim)
        cv.register_plugin("xep_0191")
        clients = [await im.login(s) for s in strangers]
        for client in clients[:2]:
            im.subscription(client, f"{victim}@localhost", "subscribe")
            await im.barrier(client)
        await im.until_marker(clients[0], cv)  # the two requests
        await cv.plugin["xep_0191"].block([f"{s}@localhost" for s in strangers[:2]], timeout=5)
        im.subscription(clients[2], f"{victim}@localhost", "subscribe")
        await im.barrier(clients[2])
        seen = await im.until_marker(clients[2], cv)
        assert [s["from"].bare for s in seen if s.xml.get("type") == "subscribe"] == [
            f"{strangers[2]}@localhost"
        ]
        for client in (cv, *clients):
            await client.close()

    run(scenario())


def test_pending_request_survives_a_restart(tmp_path: Any, im_class: Any) -> None:
    from support import ServerProcess

    server = ServerProcess(tmp_path)
    for user in ("alice", "bob"):
        server.add_user(user, "pw")
    server.start()
    im = im_class(server)

    async def ask() -> None:
        ca = await im.login("alice")
        im.subscription(ca, "bob@localhost", "subscribe")
        await im.barrier(ca)
        await ca.close()

    async def answer() -> None:
        cb = await im.login("bob")
        await im.wait_for(cb, is_sub("subscribe", "alice@localhost"))
        im.subscription(cb, "alice@localhost", "subscribed")
        await im.barrier(cb)
        ca = await im.login("alice")
        assert (await im.item(ca, "bob@localhost"))["subscription"] == "to"
        await ca.close()
        await cb.close()

    try:
        run(ask())
        server.stop()
        server.start()
        run(answer())
    finally:
        server.stop()


def test_approval_brings_presence_and_cancellation_takes_it_away(im: Any) -> None:
    alice, bob = im.users("alice", "bob")
    bob_full = f"{bob}@localhost/r"

    async def scenario() -> None:
        ca, cb = await im.login(alice), await im.login(bob, status="at work")
        im.subscription(ca, f"{bob}@localhost", "subscribe")
        await im.barrier(ca)
        im.subscription(cb, f"{alice}@localhost", "subscribed")
        await im.barrier(cb)
        # §3.1.5: the approval, then bob's current presence.
        seen = [s for s in await im.until_marker(cb, ca) if s["from"].bare == f"{bob}@localhost"]
        assert [(s.xml.get("type"), s["from"].full) for s in seen] == [
            ("subscribed", f"{bob}@localhost"),
            (None, bob_full),
        ]
        assert seen[1]["status"] == "at work"
        # §3.2.2: cancelled: unavailable first (while still subscribed), then unsubscribed.
        im.subscription(cb, f"{alice}@localhost", "unsubscribed")
        await im.barrier(cb)
        seen = [s for s in await im.until_marker(cb, ca) if s.name == "presence"]
        assert [(s.xml.get("type"), s["from"].full) for s in seen] == [
            ("unavailable", bob_full),
            ("unsubscribed", f"{bob}@localhost"),
        ]
        await ca.close()
        await cb.close()

    run(scenario())


def test_pre_approval(im: Any) -> None:
    """§3.4: bob approves before alice asks; her request is then answered for him."""
    alice, bob, carol = im.users("alice", "bob", "carol")

    async def scenario() -> None:
        ca, cb, cc = await im.login(alice), await im.login(bob), await im.login(carol)
        for who in (alice, carol):
            im.subscription(cb, f"{who}@localhost", "subscribed")
        await im.barrier(cb)
        assert (await im.item(cb, f"{alice}@localhost"))["approved"] == "true"
        # Bob changes his mind about carol: the pre-approval goes, nothing is sent to her.
        im.subscription(cb, f"{carol}@localhost", "unsubscribed")
        await im.barrier(cb)
        assert (await im.item(cb, f"{carol}@localhost"))["approved"] is None
        assert not [s for s in await im.until_marker(cb, cc) if s.xml.get("type") is not None]

        im.subscription(ca, f"{bob}@localhost", "subscribe")
        await im.barrier(ca)
        await im.wait_for(ca, is_sub("subscribed", f"{bob}@localhost"))
        await im.wait_for(
            ca, lambda s: s.name == "presence" and s["from"].full == f"{bob}@localhost/r"
        )
        assert not [s for s in await im.until_marker(ca, cb) if s.xml.get("type") == "subscribe"]
        item = await im.item(cb, f"{alice}@localhost")
        assert (item["subscription"], item["approved"]) == ("from", None)
        # Carol's request is an ordinary one again.
        im.subscription(cc, f"{bob}@localhost", "subscribe")
        await im.barrier(cc)
        assert [s.xml.get("type") for s in await im.until_marker(cc, cb)] == ["subscribe"]
        for client in (ca, cb, cc):
            await client.close()

    run(scenario())


def test_removing_an_item_cancels_both_subscriptions(im: Any) -> None:
    """RFC 6121 §2.5.2: unsubscribe and unsubscribed to the contact, presence goes away."""
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        ca, cb = await im.login(alice), await im.login(bob)
        await im.befriend(ca, cb)
        await im.until_marker(ca, cb)
        await im.until_marker(cb, ca)
        await im.roster_set(ca, f"{bob}@localhost", remove=True)
        await im.barrier(ca)
        seen = [s for s in await im.until_marker(ca, cb) if s.name == "presence"]
        assert [(s.xml.get("type"), s["from"].full) for s in seen] == [
            ("unavailable", f"{alice}@localhost/r"),
            ("unsubscribed", f"{alice}@localhost"),
            ("unsubscribe", f"{alice}@localhost"),
        ]
        item = await im.item(cb, f"{alice}@localhost")
        assert (item["subscription"], item["ask"]) == ("none", None)  # stays, subscription gone
        # Bob's server answered alice's unsubscribe with his resources' unavailable (§3.3.3).
        seen = await im.until_marker(cb, ca)
        assert [(s.xml.get("type"), s["from"].full) for s in seen if s.name == "presence"] == [
            ("unavailable", f"{bob}@localhost/r")
        ]
        assert await im.item(ca, f"{bob}@localhost") is None
        await ca.close()
        await cb.close()

    run(scenario())


def test_requests_to_missing_accounts_and_too_many_pending(im: Any) -> None:
    victim, *strangers = im.users("victim", "s", "s", "s")

    async def scenario() -> None:
        cv = await im.login(victim)
        clients = [await im.login(s) for s in strangers]
        # No such account: "unsubscribed" comes back, so the request is not left pending.
        im.subscription(clients[0], "nobody@localhost", "subscribe")
        await im.wait_for(clients[0], is_sub("unsubscribed", "nobody@localhost"))
        assert (await im.item(clients[0], "nobody@localhost"))["ask"] is None
        # max_pending = 2: the third stranger's request is refused.
        for client in clients:
            im.subscription(client, f"{victim}@localhost", "subscribe")
            await im.barrier(client)
        error = await im.wait_for(clients[2], lambda s: s.xml.get("type") == "error")
        assert error["error"]["condition"] == "not-allowed"
        seen = await im.until_marker(clients[0], cv)
        assert sorted(s["from"].bare for s in seen if s.xml.get("type") == "subscribe") == sorted(
            f"{s}@localhost" for s in strangers[:2]
        )
        for client in (cv, *clients):
            await client.close()

    run(scenario())
