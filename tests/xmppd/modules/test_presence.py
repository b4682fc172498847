"""Presence (RFC 6121 §4) with real clients: broadcast, probes, priorities, directed, logout."""

from __future__ import annotations

from typing import Any

from support import RawClient, run


def status_of(stanza: Any) -> str:
    return stanza["status"]


def no_presence_from(seen: list[Any], user: str) -> bool:
    """None of `seen` is a presence from the account `user`."""
    return not [s for s in seen if s.name == "presence" and s["from"].bare == f"{user}@localhost"]


def test_subscribers_see_presence_and_others_see_nothing(im: Any) -> None:
    alice, bob, carol, dave = im.users("alice", "bob", "carol", "dave")

    async def scenario() -> None:
        ca, cb = await im.login(alice, status="here"), await im.login(bob)
        await im.befriend(ca, cb)
        cc = await im.login(carol)
        im.subscription(cc, f"{alice}@localhost", "subscribe")  # asked, never answered
        await im.barrier(cc)
        await cb.close()

        # §4.2.2 / §4.3: bob's login probes alice, who is online: he sees her at once.
        cb = await im.login(bob)
        seen = await im.until_marker(ca, cb)
        got = [s for s in seen if s.name == "presence" and s["from"].full == f"{alice}@localhost/r"]
        assert [(s.xml.get("type"), status_of(s)) for s in got] == [(None, "here")]
        # ...and alice sees bob coming (broadcast to subscribers).
        await im.wait_for(
            ca, lambda s: s.name == "presence" and s["from"].full == f"{bob}@localhost/r"
        )

        # A presence change reaches the subscriber, not carol (pending) nor dave (nothing).
        cd = await im.login(dave)
        ca.send_presence(pshow="away", pstatus="lunch")
        await im.barrier(ca)
        update = await im.wait_for(cb, lambda s: s.name == "presence" and status_of(s) == "lunch")
        assert update["show"] == "away"
        for other in (cc, cd):
            assert no_presence_from(await im.until_marker(ca, other), alice)

        # §4.3.2: probes from non-subscribers reveal nothing. (Dave's server gets an
        # "unsubscribed" that changes nothing for him, so it is not delivered: A.3.4.)
        for other in (cc, cd):
            other.send_presence(pto=f"{alice}@localhost", ptype="probe")
            await im.barrier(other)
            assert no_presence_from(await im.until_marker(ca, other), alice)
        assert (await im.item(cc, f"{alice}@localhost"))["ask"] == "subscribe"  # still pending
        for client in (ca, cb, cc, cd):
            await client.close()

    run(scenario())


def test_priorities_and_bare_jid_messages(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        high = await im.login(alice, "high", priority=5)
        low = await im.login(alice, "low", priority=1)
        cb = await im.login(bob)
        # Each resource learns about the other (§4.2.2, §4.4.2).
        await im.wait_for(
            low, lambda s: s.name == "presence" and s["from"].full == f"{alice}@localhost/high"
        )
        await im.wait_for(
            high, lambda s: s.name == "presence" and s["from"].full == f"{alice}@localhost/low"
        )

        async def to_bare(body: str) -> tuple[list[str], list[str]]:
            cb.send_message(mto=f"{alice}@localhost", mbody=body, mtype="chat")
            await im.barrier(cb)
            got = []
            for resource in (high, low):
                seen = await im.until_marker(cb, resource)
                got.append([s["body"] for s in seen if s.name == "message"])
            return got[0], got[1]

        assert await to_bare("one") == (["one"], [])  # highest priority only (RFC 6121 §8.5.2)
        high.send_presence(ppriority=-1)  # negative: never gets bare-JID messages
        await im.barrier(high)
        assert await to_bare("two") == ([], ["two"])
        high.send_presence(ppriority=1)
        await im.barrier(high)
        assert await to_bare("three") == (["three"], ["three"])  # a tie: both
        for client in (high, low, cb):
            await client.close()

    run(scenario())


def test_directed_presence_and_its_unavailable(im: Any) -> None:
    alice, bob, carol = im.users("alice", "bob", "carol")

    async def scenario() -> None:
        ca, cc = await im.login(alice), await im.login(carol)
        cb = await im.login(bob)
        ca.send_presence(pto=f"{carol}@localhost/r", pstatus="psst")
        ca.send_presence(pto=f"{bob}@localhost", pstatus="hi bob")
        await im.barrier(ca)
        for client, status in ((cc, "psst"), (cb, "hi bob")):
            seen = await im.until_marker(ca, client)
            assert [status_of(s) for s in seen if s["from"].bare == f"{alice}@localhost"] == [
                status
            ]
        # Directed presence is not a subscription: broadcasts do not follow it (§4.6).
        ca.send_presence(pstatus="broadcast")
        await im.barrier(ca)
        assert no_presence_from(await im.until_marker(ca, cc), alice)
        # Bob is told he is no longer seen; carol will be told when alice leaves.
        ca.send_presence(pto=f"{bob}@localhost", ptype="unavailable")
        await im.barrier(ca)
        assert [s.xml.get("type") for s in await im.until_marker(ca, cb)] == ["unavailable"]
        await ca.close()
        gone = await im.wait_for(cc, lambda s: s.name == "presence")
        assert (gone.xml.get("type"), gone["from"].full) == ("unavailable", f"{alice}@localhost/r")
        # ...and only carol: bob got his unavailable already (not a second one).
        assert no_presence_from(await im.until_marker(cc, cb), alice)
        await cb.close()
        await cc.close()

    run(scenario())


def test_unavailable_broadcast_on_logout_and_on_a_cut_connection(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        ca, cb = await im.login(alice), await im.login(bob)
        await im.befriend(ca, cb)
        await im.until_marker(ca, cb)
        # Explicit unavailable, still connected.
        ca.send_presence(ptype="unavailable", pstatus="brb")
        gone = await im.wait_for(cb, lambda s: s.name == "presence")
        assert (gone.xml.get("type"), status_of(gone)) == ("unavailable", "brb")
        # Available again: a new initial presence, so alice probes bob again.
        ca.send_presence()
        await im.wait_for(cb, lambda s: s.name == "presence" and s.xml.get("type") is None)
        await im.wait_for(
            ca, lambda s: s.name == "presence" and s["from"].full == f"{bob}@localhost/r"
        )
        # The TCP connection dies without </stream:stream>.
        ca.abort()
        gone = await im.wait_for(cb, lambda s: s.name == "presence", timeout=10)
        assert (gone.xml.get("type"), gone["from"].full) == ("unavailable", f"{alice}@localhost/r")
        await cb.close()

    run(scenario())


def test_presence_to_own_bare_jid_and_odd_types(im: Any) -> None:
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        ca, cb = await im.login(alice), await im.login(bob)
        await im.befriend(ca, cb)
        await im.until_marker(ca, cb)
        # Presence to one's own bare JID is handled like broadcast presence.
        ca.send_presence(pto=f"{alice}@localhost", pstatus="to myself")
        await im.barrier(ca)
        assert [status_of(s) for s in await im.until_marker(ca, cb)] == ["to myself"]
        # An error or a subscription stanza to oneself goes nowhere; a made-up type bounces.
        for type_ in ("error", "subscribe", "probe"):
            ca.send_presence(ptype=type_)
        await im.barrier(ca)
        assert no_presence_from(await im.until_marker(ca, cb), alice)
        presence = ca.make_presence(pto=f"{bob}@localhost")
        presence.xml.set("type", "invisible")
        presence.send()
        error = await im.wait_for(
            ca, lambda s: s.name == "presence" and s.xml.get("type") == "error"
        )
        assert error["error"]["condition"] == "bad-request"
        assert no_presence_from(await im.until_marker(ca, cb), alice)
        await ca.close()
        await cb.close()

    run(scenario())


def test_many_resources_and_contacts(im: Any) -> None:
    """Three resources of alice, two contacts: each contact sees each resource come and go."""
    alice, bob, carol = im.users("alice", "bob", "carol")

    async def scenario() -> None:
        first = await im.login(alice, "one")
        cb, cc = await im.login(bob), await im.login(carol)
        await im.befriend(first, cb)
        await im.befriend(first, cc, both=False)  # alice sees carol; carol does not see alice
        for contact in (cb, cc):
            await im.until_marker(first, contact)
        others = [await im.login(alice, name) for name in ("two", "three")]
        for contact, sees in ((cb, True), (cc, False)):
            seen = await im.until_marker(first, contact)
            froms = {
                s["from"].resource
                for s in seen
                if s.name == "presence" and s["from"].bare == f"{alice}@localhost"
            }
            assert froms == ({"two", "three"} if sees else set())
        # Each new resource probed carol and bob: it knows both are online.
        for client in others:
            seen = await im.until_marker(cb, client)
            seen += await im.until_marker(cc, client)
            froms = {s["from"].bare for s in seen if s.name == "presence"}
            assert {f"{bob}@localhost", f"{carol}@localhost"} <= froms
        for client in (first, *others):
            await client.close()
        gone = set()
        while gone != {"one", "two", "three"}:
            left = await im.wait_for(cb, lambda s: s.xml.get("type") == "unavailable")
            gone.add(left["from"].resource)
        assert no_presence_from(await im.until_marker(cb, cc), alice)  # carol: not subscribed
        await cb.close()
        await cc.close()

    run(scenario())


def test_a_replaced_session_goes_unavailable_before_its_successor_appears(im: Any) -> None:
    """RFC 6120 §7.7.2.2: a new session with the same full JID replaces the old one; contacts
    must see the old one's unavailable first and the new one's presence last, never the
    reverse (which would leave the account looking offline). The old client here is a raw
    socket that stops reading, so its connection is slow to finish closing."""
    alice, bob = im.users("alice", "bob")

    async def scenario() -> None:
        first, cb = await im.login(alice, "desk"), await im.login(bob)
        await im.befriend(first, cb)
        await first.close()
        old = RawClient(im.server)
        try:
            old.login(alice, "pw", resource="desk")
            old.send("<presence><status>old</status></presence>")
            await im.wait_for(cb, lambda s: s.name == "presence" and status_of(s) == "old")
            new = await im.login(alice, "desk", status="replacement")
            seen = await im.until_marker(new, cb)
        finally:
            old.close()
        from_desk = [
            (s.xml.get("type"), status_of(s))
            for s in seen
            if s.name == "presence" and s["from"].full == f"{alice}@localhost/desk"
        ]
        assert from_desk == [("unavailable", ""), (None, "replacement")]
        for client in (new, cb):
            await client.close()

    run(scenario())
