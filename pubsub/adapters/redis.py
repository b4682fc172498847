"""Redis cluster adapter: cross-node fan-out over Redis pub/sub, driven from trio.

Client: coredis (>= 6), which is built on anyio and so runs under trio unchanged (see
docs/pubsub.md for why this one). Every name in Redis starts with ``prefix`` so several
clusters (or test runs) can share one Redis.

Channels: ``<prefix>:all`` carries broadcasts to every node, ``<prefix>:node:<name>``
the direct messages for one node. Each node subscribes to both and drops what it sent
itself. On a Redis Cluster (``cluster_enabled:1``) the adapter uses sharded pub/sub
(SSUBSCRIBE/SPUBLISH), so the traffic stays on the shard owning each channel instead of
being copied to every Redis node; a single Redis has one shard, so plain PUBLISH is the
same thing there.

Encode once: ``broadcast`` encodes the message once and queues one PUBLISH; Redis does
the fan-out to however many nodes there are. The outbound queue is bounded: when Redis
is slow or gone, cluster traffic is dropped and counted (``dropped``), never blocking or
raising into the local delivery that already happened. The sender writes everything
queued in one pipeline per round-trip.

Liveness: besides the Tracker's own heartbeats (which decide when a peer's sessions
leave), each node writes ``<prefix>:nodes`` (a hash: name -> JSON with incarnation,
start time, last seen and the ``info()`` figures) every ``heartbeat`` seconds, so tools
(``xmppd check``) can list the nodes without joining the bus. `nodes()` reads it back with
each node's state: "up" (seen within ``down_period``), "down" (within
``permdown_period``); older ones are purged.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import trio

from ..codec import Codec, CodecError
from .base import Adapter

__all__ = ["NodeInfo", "RedisAdapter", "open_redis", "read_nodes"]

_log = logging.getLogger(__name__)


class _Deaf(Exception):
    """The subscription receives nothing although Redis answers: reconnect."""


@dataclass(slots=True, frozen=True)
class NodeInfo:
    name: str
    incarnation: str
    started: float
    last_seen: float
    state: str  # "up" | "down"
    info: dict[str, int]  # what the node reports about itself (e.g. {"sessions": 12})


@asynccontextmanager
async def open_redis(urls: Sequence[str]) -> AsyncIterator[tuple[Any, bool]]:
    """A coredis client for the first reachable URL, and whether it is a Redis Cluster
    (then a `RedisCluster` client, which routes sharded pub/sub to the owning shard)."""
    import coredis  # optional dependency (extra "cluster"): only cluster mode needs it

    error: Exception | None = None
    for url in urls:
        try:
            async with coredis.Redis.from_url(url, decode_responses=False) as probe:
                info = await probe.info("cluster")
        except Exception as exc:
            error = exc
            continue
        if info.get("cluster_enabled"):
            async with coredis.RedisCluster.from_url(url, decode_responses=False) as client:
                yield client, True
        else:
            async with coredis.Redis.from_url(url, decode_responses=False) as client:
                yield client, False
        return
    raise ConnectionError(f"no Redis reachable at {', '.join(urls)}: {error}")


async def read_nodes(
    client: Any, prefix: str, down_period: float, permdown_period: float
) -> list[NodeInfo]:
    """The nodes registered under ``prefix``; purges those silent past ``permdown_period``."""
    raw = await client.hgetall(f"{prefix}:nodes")
    now = time.time()
    out, stale = [], []
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        try:
            entry = json.loads(value)
            seen = float(entry["seen"])
            incarnation, started = str(entry["incarnation"]), float(entry["started"])
            info = {str(k): int(v) for k, v in entry.get("info", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            stale.append(name)  # not ours, or from an incompatible version
            continue
        age = now - seen
        if age > permdown_period:
            stale.append(name)
            continue
        state = "up" if age <= down_period else "down"
        out.append(NodeInfo(name, incarnation, started, seen, state, info))
    if stale:
        await client.hdel(f"{prefix}:nodes", stale)
    return sorted(out, key=lambda n: n.name)


class RedisAdapter(Adapter):
    """Fan-out to the other nodes through Redis. Start with ``PubSub.run``."""

    fanout = True

    def __init__(
        self,
        urls: str | Sequence[str] = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "xmppd",
        codec: Codec | None = None,
        max_queue: int = 10_000,
        heartbeat: float = 1.5,
        down_period: float = 30.0,
        permdown_period: float = 1200.0,
        info: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        super().__init__()
        self.info = info  # figures published with the liveness entry (session counts)
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.prefix = prefix
        self.codec = codec if codec is not None else Codec()
        self.heartbeat = heartbeat
        self.down_period = down_period
        self.permdown_period = permdown_period
        self.incarnation = secrets.token_hex(4)
        self.started = time.time()
        self.dropped = 0  # messages not sent (queue full, encode error, Redis error)
        self.sent = 0
        self.received = 0
        self.failures = 0  # publishes failed in a row
        self._last_rx = 0.0  # trio time of the last message received (our pings included)
        self._send, self._queue = trio.open_memory_channel[tuple[bytes, bytes]](max_queue)
        self._sharded = False
        self._client: Any = None
        self.connected = trio.Event()

    # -- naming ------------------------------------------------------------------------------

    @property
    def all_channel(self) -> bytes:
        return f"{self.prefix}:all".encode()

    def node_channel(self, node: str) -> bytes:
        return f"{self.prefix}:node:{node}".encode()

    # -- sending (sync, hot path) ------------------------------------------------------------

    def broadcast(self, topic: str, message: object) -> None:
        self._enqueue(self.all_channel, topic, message)

    def direct_broadcast(self, node: str, topic: str, message: object) -> None:
        self._enqueue(self.node_channel(node), topic, message)

    def _enqueue(self, channel: bytes, topic: str, message: object) -> None:
        try:
            data = self.codec.encode((self.node, topic, message))
        except CodecError as exc:
            self.dropped += 1
            _log.warning("not sent to other nodes on %r: %s", topic, exc)
            return
        try:
            self._send.send_nowait((channel, data))
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: no log flood
                _log.warning("cluster queue full: %d message(s) dropped so far", self.dropped)

    # -- the loops ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe, then receive. A failure before the first connection raises
        (a misconfigured node should not start); afterwards the adapter reconnects by itself
        while the node keeps serving its local users."""
        started = False

        def connected() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                await self._connection(connected)
            except Exception as exc:
                if not started:
                    raise
                _log.warning("cluster: Redis connection lost, reconnecting: %s", exc)
            # Ended without our cancellation: Redis went away, or the subscription went deaf.
            self.connected = trio.Event()
            await trio.sleep(min(1.0, self.heartbeat))

    async def _connection(self, started: Callable[[], None]) -> None:
        channels = [self.all_channel, self.node_channel(self.node)]
        try:
            async with open_redis(self.urls) as (client, self._sharded):
                self._client = client
                kind = client.sharded_pubsub if self._sharded else client.pubsub
                subscriber = kind(
                    channels=channels,
                    ignore_subscribe_messages=True,
                    retry_policy=self._retry_policy(),
                )
                async with subscriber as ps, trio.open_nursery() as nursery:
                    self._last_rx = trio.current_time()
                    await self._register(client)
                    nursery.start_soon(self._sender, client)
                    nursery.start_soon(self._liveness, client)
                    self.connected.set()
                    started()
                    async for msg in ps:
                        self._received(msg["data"])
        except* anyio.ClosedResourceError:
            # coredis (6.9) tears its pub/sub connection down twice when cancelled under
            # trio; the second attempt fails on the closed stream. Nothing is lost.
            _log.debug("cluster: Redis connection closed")

    def _retry_policy(self) -> Any:
        """Resubscribe within a second of Redis coming back (coredis' default backs off to
        16 s, longer than a down period: the cluster would stay split for that long)."""
        from coredis.exceptions import ConnectionError as RedisConnectionError
        from coredis.retry import ExponentialBackoffRetryPolicy

        return ExponentialBackoffRetryPolicy(
            (RedisConnectionError,), retries=None, base_delay=0.05, max_delay=1.0
        )

    def _received(self, data: bytes) -> None:
        self._last_rx = trio.current_time()
        try:
            node, topic, message = self.codec.decode(data)  # type: ignore[misc]
        except (CodecError, TypeError, ValueError) as exc:
            _log.warning("dropped a malformed cluster message: %s", exc)
            return
        if node == self.node:
            return
        self.received += 1
        assert self._bus is not None
        self._bus.local_broadcast(topic, message)

    async def _sender(self, client: Any) -> None:
        publish = "spublish" if self._sharded else "publish"
        while True:
            batch = [await self._queue.receive()]
            while True:  # everything queued meanwhile goes in the same round-trip
                try:
                    batch.append(self._queue.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                if len(batch) == 1:
                    await getattr(client, publish)(*batch[0])
                else:
                    async with client.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            getattr(pipe, publish)(channel, data)
                self.sent += len(batch)
            except Exception as exc:  # Redis down: drop cluster traffic, keep serving
                self.dropped += len(batch)
                self.failures += 1
                if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, 8...: no log flood
                    _log.warning("publishing to Redis failed (%d times): %s", self.failures, exc)
                await trio.sleep(0.1)
            else:
                if self.failures:
                    _log.warning("publishing to Redis works again")
                self.failures = 0

    async def _register(self, client: Any) -> None:
        entry = {"incarnation": self.incarnation, "started": self.started, "seen": time.time()}
        if self.info is not None:
            entry["info"] = self.info()
        await client.hset(f"{self.prefix}:nodes", {self.node: json.dumps(entry)})

    async def _liveness(self, client: Any) -> None:
        """Register this node, and check that the subscription still hears: each round
        sends a ping to our own channel. After a Redis restart coredis (6.9) may keep a
        subscriber that receives nothing; silence past ``deaf_after`` reconnects."""
        deaf_after = max(1.0, 3 * self.heartbeat)
        while True:
            await trio.sleep(self.heartbeat)
            self._enqueue(self.node_channel(self.node), "", None)  # we drop our own: a ping
            try:
                await self._register(client)
            except Exception as exc:
                _log.debug("cluster liveness write failed: %s", exc)  # the sender logs it
                continue
            if trio.current_time() - self._last_rx > deaf_after:
                raise _Deaf(f"nothing received from Redis for {deaf_after:.1f}s")

    async def nodes(self) -> list[NodeInfo]:
        """The cluster's nodes as registered in Redis (needs ``run`` to be running)."""
        await self.connected.wait()
        return await read_nodes(self._client, self.prefix, self.down_period, self.permdown_period)

    async def goodbye(self) -> None:
        """Remove this node from the registry (graceful shutdown)."""
        if self._client is not None:
            with trio.move_on_after(1):
                await self._client.hdel(f"{self.prefix}:nodes", [self.node])

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received, "dropped": self.dropped}
