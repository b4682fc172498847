"""The default room message rate lets a pasted paragraph through, and a refusal says what the
limit is (resource-constraint, type wait)."""

from __future__ import annotations

from typing import Any

from support import run

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def answers(muc: Any, client: Any, count: int) -> Any:
    """The next `count` groupchat reflections or errors the client gets."""

    async def collect() -> list[Any]:
        return [
            await muc.next(client, lambda s: s.name == "message" and (s["body"] or s["error"]))
            for _ in range(count)
        ]

    return collect()


def test_a_pasted_paragraph_passes_and_a_flood_is_told_the_limit(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        await muc.drain(b)

        for n in range(13):  # thirteen lines pasted at once
            muc.groupchat(a, room, f"line {n}")
        got = await answers(muc, a, 13)
        assert [m.xml.get("type") for m in got] == ["groupchat"] * 13
        assert [m["body"] for m in got] == [f"line {n}" for n in range(13)]
        await muc.drain(b)  # the paragraph, as Bob saw it

        for n in range(40):
            muc.groupchat(b, room, f"flood {n}")
        got = await answers(muc, b, 40)
        refused = [m for m in got if m.xml.get("type") == "error"]
        assert refused and len(got) - len(refused) >= 30
        for error in refused:
            assert muc.error_condition(error) == "resource-constraint"
            assert error.xml.find("{jabber:client}error").get("type") == "wait"
            text = error.xml.findtext(f"{{jabber:client}}error/{{{STANZAS}}}text")
            assert text == "more than 30 messages in a burst or 2 per second; slow down"
        await a.close()
        await b.close()

    run(scenario())
