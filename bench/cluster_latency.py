"""Cross-node vs same-node 1:1 delivery latency, two real xmppd nodes on Redis + PostgreSQL.

Starts two cluster nodes (fresh PostgreSQL database, own Redis prefix), logs in a sender and
a receiver on the sender's node and one on the other node, then sends `--messages` chat
messages one at a time to each receiver (next one after the previous arrived) and prints
p50/p99 of send -> receive, in ms, as JSON. Client overhead (slixmpp) is in both figures.

    PYTHONPATH=$PWD python3 bench/cluster_latency.py --messages 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import support_cluster as sc  # noqa: E402


async def measure(sender, receiver, count: int) -> list[float]:
    took = []
    for i in range(count):
        text = f"m{i}-{uuid.uuid4().hex[:6]}"
        start = time.perf_counter()
        sender.send_message(mto=receiver.boundjid.full, mbody=text, mtype="chat")
        await sc.wait_for(receiver, sc.body(text), 10)
        took.append((time.perf_counter() - start) * 1000)
    return took


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    q = statistics.quantiles(values, n=100)
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3), "n": len(values)}


async def scenario(n1, n2, count: int) -> dict:
    a, b, c = sc.users(n1, "a", "b", "c")
    ca = await sc.login(n1, a, "r")
    cb = await sc.login(n1, b, "r")
    cc = await sc.login(n2, c, "r")
    await measure(ca, cb, 20)  # warm up both paths
    await measure(ca, cc, 20)
    same, cross = [], []
    for _ in range(4):  # interleave, so drift hits both alike
        same += await measure(ca, cb, count // 4)
        cross += await measure(ca, cc, count // 4)
    for client in (ca, cb, cc):
        await client.close()
    return {"same_node": summary(same), "cross_node": summary(cross)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        url = stack.enter_context(sc.fresh_database("xmppd_bench"))
        prefix = f"xmppd-bench-{uuid.uuid4().hex}"
        # The per-account message rate (docs/admin.md) would refuse a sender at full speed.
        unlimited = "\n[modules.abuse]\nmessages_per_second = 1000000.0\nmessage_burst = 1000000\n"
        nodes = [
            sc.make_node(Path(tmp), url, name, prefix, extra=unlimited) for name in ("n1", "n2")
        ]
        for node in nodes:
            stack.callback(node.stop)
            node.start()
        result = asyncio.run(scenario(*nodes, args.messages))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
