"""Event subscriptions (docs/hooks.md): what they cost chat delivery.

1. Matching, in process: microseconds per room message for the matcher with 0 and 1,000
   subscriptions: spread over 1,000 other rooms; all on the message's room with keyword or
   #tag filters that do not match (found by word lookup); mixed (a third regexes); all
   regexes (the worst case: every expression runs).
2. End to end, on a real server: the latency of a room message from alice's slixmpp client to
   bob's, one at a time, with no subscription, with 1,000 subscriptions on the room that do
   not match, with a webhook receiver that answers at once, and with one that hangs (accepts
   and never answers); median and p95, and each as a ratio to none.

    PYTHONPATH=. python bench/hooks_bench.py [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from apisupport import client, start_server  # noqa: E402
from hooksupport import Receiver, join  # noqa: E402
from support import NO_ACCOUNT_RATE  # noqa: E402

from xmppd.hooks.model import Event, Matcher, Subscription  # noqa: E402

ROOM = "bench@conference.localhost"
URL = {"url": "https://hooks.example.org/in"}


def _sub(i: int, room: str, **filters: object) -> Subscription:
    return Subscription(
        id=f"s{i}",
        source="room",
        room=room,
        events=["message"],
        provider="webhook",
        target=URL,
        **filters,
    )  # type: ignore[arg-type]


def _filters(i: int) -> dict:
    return [{"keywords": [f"word{i}"]}, {"patterns": [rf"\bticket-{i}\d+\b"]},
            {"tags": [f"tag{i}"]}][i % 3]  # fmt: skip


def match_cost(rounds: int = 20000) -> dict:
    event = Event(id="e", type="message", source="room", room=ROOM, sender="a@localhost",
                  text="an ordinary message of some sixty characters, nothing to see")  # fmt: skip

    def words(i: int) -> dict:
        return {"keywords": [f"word{i}"]} if i % 2 else {"tags": [f"tag{i}"]}

    cases = {
        "none": [],
        "1000 on other rooms": [(f"r{i}@conference.localhost", _filters(i)) for i in range(1000)],
        "1000 words/#tags here": [(ROOM, words(i)) for i in range(1000)],
        "1000 mixed here": [(ROOM, _filters(i)) for i in range(1000)],  # a third are regexes
        "1000 regexes here": [(ROOM, {"patterns": [rf"\bticket-{i}\d+\b"]}) for i in range(1000)],
    }
    out = {}
    for name, subs in cases.items():
        matcher = Matcher()
        for i, (room, filters) in enumerate(subs):
            matcher.add(_sub(i, room, **filters))
        n = rounds if "regex" not in name and "mixed" not in name else rounds // 20
        start = time.perf_counter()
        for _ in range(n):
            matcher.match(event)
        out[name] = (time.perf_counter() - start) / n * 1e6
    return out


async def _latencies(server, count: int) -> list[float]:  # noqa: ANN001
    bob = await join(server, "bob", ROOM, "Bob")
    alice = await join(server, "alice", ROOM, "Alice")
    try:
        await asyncio.sleep(0.5)
        while not bob.messages.empty():
            bob.messages.get_nowait()
        out = []
        for i in range(count):
            start = time.perf_counter()
            alice.send_message(mto=ROOM, mbody=f"message {i}", mtype="groupchat")
            while (await bob.next_message(10))["body"] != f"message {i}":
                pass
            out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        await alice.close()
        await bob.close()


def latency(messages: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as base, Receiver() as fast, Receiver(hang=True) as hang:
        hooks = "[hooks]\ntimeout = 30.0\nretry_base = 5.0\nper_target = 4\n" + NO_ACCOUNT_RATE
        hooks += "[modules.muc]\nmessage_rate = 1000000.0\nmessage_burst = 1000000\n"
        server = start_server(Path(base), hooks)
        try:
            with client(server) as ops:
                assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
                ids = []

                def subscribe(target: dict, **filters: object) -> None:
                    body = {"source": "room", "room": ROOM, "events": ["message"],
                            "provider": "webhook", "target": target, **filters}  # fmt: skip
                    answer = ops.post("/subscriptions", json=body)
                    assert answer.status_code == 201, answer.text
                    ids.append(answer.json()["id"])

                def clear() -> None:
                    while ids:
                        ops.delete(f"/subscriptions/{ids.pop()}")

                asyncio.run(_latencies(server, 20))  # warm up
                results["none"] = asyncio.run(_latencies(server, messages))
                for i in range(1000):
                    subscribe({"url": fast.url}, **_filters(i))
                results["1000 not matching"] = asyncio.run(_latencies(server, messages))
                clear()
                subscribe({"url": fast.url})
                results["fast receiver"] = asyncio.run(_latencies(server, messages))
                clear()
                subscribe({"url": hang.url + "/hang"})
                results["hanging receiver"] = asyncio.run(_latencies(server, messages))
                pending = len(ops.get("/deliveries", params={"limit": 500}).json()["items"])
                results["hanging: hung requests"] = len(hang.requests)  # type: ignore[assignment]
                results["hanging: pending rows"] = pending  # type: ignore[assignment]
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    cost = match_cost()
    print("matching, in process (us per message):")
    for name, us in cost.items():
        print(f"  {name:20} {us:8.2f}")
    lat = latency(args.messages)
    base = statistics.median(lat["none"])
    print(f"room message latency, {args.messages} messages one at a time (ms):")
    summary = {"match_us": cost}
    for name, values in lat.items():
        if not isinstance(values, list):
            print(f"  {name}: {values}")
            summary[name] = values
            continue
        med = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[18]
        print(f"  {name:20} median {med:6.2f}  p95 {p95:6.2f}  ratio {med / base:5.2f}")
        summary[name] = {"median_ms": med, "p95_ms": p95, "ratio": med / base}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
