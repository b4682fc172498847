"""A network partition between two nodes in network namespaces, cut and healed with `ip link`.

Each node runs in a namespace of its own (`ip netns exec`) with two veth links to the root
namespace: a front link (its clients, and a TCP forwarder there to the shared PostgreSQL) and
a back link (the cluster network: a private Redis bound to the back links' root-side
addresses). The test sets n2's back link down: packets are silently dropped (no reset, no
refusal), as when a switch port dies. n2 loses Redis, hence n1; both keep their users and
database. Then the link comes back up and the cluster must heal by itself.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ServerProcess, run
from support_cluster import (
    DOWN,
    PrivateRedis,
    barrier,
    befriend,
    body,
    cluster_config,
    login,
    presence,
    users,
)
from support_proxy import Proxy


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"


@dataclass
class Namespace:
    """A namespace with a front and a back veth link, each a /30 to the root namespace."""

    name: str
    front: tuple[str, str, str]  # (root-side device, root-side address, namespace address)
    back: tuple[str, str, str]

    def run(self, *args: str) -> None:
        ip("netns", "exec", self.name, "ip", *args)

    def link(self, root_dev: str, root_addr: str, inner_addr: str) -> None:
        inner_dev = root_dev[:-1] + "b"
        ip("link", "add", root_dev, "type", "veth", "peer", "name", inner_dev)
        ip("link", "set", inner_dev, "netns", self.name)
        ip("addr", "add", f"{root_addr}/30", "dev", root_dev)
        ip("link", "set", root_dev, "up")
        self.run("addr", "add", f"{inner_addr}/30", "dev", inner_dev)
        self.run("link", "set", inner_dev, "up")


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    """Two namespaces n1, n2 with unique names and subnets, deleted whatever happens."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = uuid.uuid4().hex[:6]
    net = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
    made: list[Namespace] = []
    try:
        for i in (1, 2):
            base = 16 * i
            ns = Namespace(
                f"xmppd-{tag}-n{i}",
                (f"vf{tag}{i}a", f"{net}.{base + 1}", f"{net}.{base + 2}"),
                (f"vb{tag}{i}a", f"{net}.{base + 5}", f"{net}.{base + 6}"),
            )
            result = subprocess.run(["ip", "netns", "add", ns.name], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"ip netns add is not permitted here: {result.stderr.strip()}")
            made.append(ns)
            ns.run("link", "set", "lo", "up")
            ns.link(*ns.front)
            ns.link(*ns.back)
        yield made
    finally:
        for ns in made:  # deleting a namespace deletes its veths and their root-side peers
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
            for dev in (ns.front[0], ns.back[0]):
                subprocess.run(["ip", "link", "del", dev], capture_output=True)


def test_netns_partition_then_heal(
    tmp_path: Path, pg_url: str, prefix: str, namespaces: list[Namespace]
) -> None:
    redis = PrivateRedis(tmp_path, bind=tuple(ns.back[1] for ns in namespaces))
    proxies: list[Proxy] = []
    procs: list[ServerProcess] = []
    try:
        redis.start()
        for ns in namespaces:
            node = ns.name.rsplit("-", 1)[1]
            proxy = Proxy("127.0.0.1", 5432, host=ns.front[1])
            proxies.append(proxy)
            dsn = pg_url.replace("@127.0.0.1:5432/", f"@{ns.front[1]}:{proxy.port}/")
            assert dsn != pg_url, pg_url
            config = cluster_config(dsn, node, prefix, f"redis://{ns.back[1]}:{redis.port}/0")
            (tmp_path / node).mkdir()
            proc = ServerProcess(
                tmp_path / node,
                extra_config=config,
                host=ns.front[2],
                launcher=("ip", "netns", "exec", ns.name),
            )
            procs.append(proc)
            proc.start()  # one after the other: the first one migrates the database
        n1, n2 = procs
        alice, bob, carol, dave = users(n1, "alice", "bob", "carol", "dave")
        cut_link = namespaces[1].back[0]

        async def scenario() -> None:
            ca = await login(n1, alice, "desk")
            cc = await login(n1, carol, "c")
            cb = await login(n2, bob, "phone")
            cd = await login(n2, dave, "d")
            await befriend(ca, cb)
            await befriend(cc, cd)
            ca.send_message(mto=f"{bob}@localhost/phone", mbody="before", mtype="chat")
            await _next(cb, body("before"))

            ip("link", "set", cut_link, "down")
            # Each side sees the other side's users go, within the down period (and slack).
            await _next(ca, presence(f"{bob}@localhost/phone", "unavailable"), DOWN + 5)
            await _next(cc, presence(f"{dave}@localhost/d", "unavailable"), DOWN + 5)
            await _next(cb, presence(f"{alice}@localhost/desk", "unavailable"), DOWN + 5)
            await _next(cd, presence(f"{carol}@localhost/c", "unavailable"), DOWN + 5)
            # Each side keeps serving its own users.
            ca.send_message(mto=f"{carol}@localhost/c", mbody="n1 side", mtype="chat")
            await _next(cc, body("n1 side"))
            cb.send_message(mto=f"{dave}@localhost/d", mbody="n2 side", mtype="chat")
            await _next(cd, body("n2 side"))
            # Across the cut: stored offline (each side's database link is up).
            ca.send_message(mto=f"{bob}@localhost", mbody="across 1", mtype="chat")
            cb.send_message(mto=f"{alice}@localhost", mbody="across 2", mtype="chat")
            await barrier(ca)
            await barrier(cb)
            await asyncio.sleep(1)

            ip("link", "set", cut_link, "up")
            # Healed by itself: every node shows every user available again.
            await _next(ca, presence(f"{bob}@localhost/phone"), 30)
            await _next(cc, presence(f"{dave}@localhost/d"), 30)
            await _next(cb, presence(f"{alice}@localhost/desk"), 30)
            await _next(cd, presence(f"{carol}@localhost/c"), 30)
            # Live traffic crosses again, both ways.
            ca.send_message(mto=f"{bob}@localhost/phone", mbody="healed", mtype="chat")
            await _next(cb, body("healed"))
            cd.send_message(mto=f"{carol}@localhost/c", mbody="healed too", mtype="chat")
            await _next(cc, body("healed too"))
            # Nothing sent across the cut was lost: it waited offline for the next login.
            for client in (ca, cb):
                await client.close()
            ca = await login(n2, alice, "desk")  # the other side this time
            cb = await login(n1, bob, "phone")
            await _next(ca, body("across 2"))
            await _next(cb, body("across 1"))
            for client in (ca, cb, cc, cd):
                await client.close()

        run(scenario())
        assert n1.alive() and n2.alive()
    finally:
        for proc in procs:
            proc.stop()
        for proxy in proxies:
            proxy.close()
        redis.stop()


async def _next(client, match, timeout: float = 10):
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return stanza
