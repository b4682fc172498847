"""Prometheus metrics: one registry, plain counts on the hot path, and the probes the server calls.

Theory of operation: the rest of the code never touches prometheus-client. It calls a few
probes named after what happened (`routed`, `sent`, `login`, `refused`, `storage_call`...),
each at the one place where that thing is decided, and registers *sources* for gauges that
are counts of something the server already holds (sessions per transport, bans): those are
sampled when `/metrics` is scraped and cost nothing in between.

The hot path (a stanza in, a stanza out) costs a dict lookup of the stanza's tag and an int
increment; routing latency a bisect over the bucket bounds (`HotPath`: plain counts read by
prometheus-client at scrape time; its own Counter and Histogram take a lock per call and cost
~2.1 us a message, these ~0.6 us: bench/README.md). Everything else uses prometheus-client's.
`configure(enabled=False)` (`metrics.enabled = false`) swaps every probe for a no-op: callers
look probes up on the module at each call (`metrics.routed(...)`), so the switch reaches them
all. The exposition format is prometheus-client's (`exposition()`), never written by hand.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from .storage import probes as storage_probes

log = logging.getLogger("xmppd.metrics")
disable_created_metrics()  # no `_created` series: one line per counter, as Prometheus reads it

REGISTRY = CollectorRegistry()
CONTENT_TYPE = CONTENT_TYPE_LATEST
KINDS = ("message", "presence", "iq")
# Label values that come from clients are bounded: anything else is counted as "other".
MECHANISMS = frozenset(
    {
        "PLAIN",
        "SCRAM-SHA-1",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-512",
        "SCRAM-SHA-512-PLUS",
        "token",  # JSON channels: a host-app token (docs/channels.md)
        "password",  # POST /login of the JSON chat protocol
    }
)
ROUTING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class HotHistogram:
    """A histogram for the event loop's thread only: a bisect and two additions per
    observation, no lock (prometheus-client's Histogram takes a lock per call)."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def family(self, name: str, documentation: str) -> Metric:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], cumulative, self.sum)
        return family


class HotPath:
    """Stanzas in and out by kind, routing and storage latency: counted in plain ints by the
    probes below (one thread, the event loop's), turned into metric families at scrape time
    by prometheus-client."""

    def __init__(self) -> None:
        # `json`: JSON-channel frames (docs/channels.md), the stanzas of that protocol
        self.stanzas_in = dict.fromkeys((*KINDS, "other", "json"), 0)
        self.stanzas_out = dict.fromkeys((*KINDS, "other", "json"), 0)
        self.routing = HotHistogram(ROUTING_BUCKETS)
        self.storage = HotHistogram(STORAGE_BUCKETS)
        REGISTRY.register(self)

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        for name, documentation, counts in (
            ("xmppd_stanzas_in", "Stanzas (and JSON frames) from clients", self.stanzas_in),
            ("xmppd_stanzas_out", "Stanzas (and JSON frames) to clients", self.stanzas_out),
        ):
            family = CounterMetricFamily(name, documentation, labels=["kind"])
            for kind, count in counts.items():
                family.add_metric([kind], count)
            yield family
        yield self.routing.family(
            "xmppd_routing_seconds",
            "Time to route one stanza from a client (filters, storage, delivery)",
        )
        yield self.storage.family(
            "xmppd_storage_seconds", "Time of one storage call, queueing and group commit included"
        )


HOT = HotPath()
LOGINS = Counter(
    "xmppd_logins", "Login attempts by mechanism and result", ["mechanism", "result"],
    registry=REGISTRY,
)  # fmt: skip
OVERFLOWS = Counter(
    "xmppd_queue_overflows",
    "Sessions disconnected because their outgoing queue filled (slow readers)",
    ["transport"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "xmppd_ratelimit_refusals",
    "Actions refused or paused by a rate limit, by limit",
    ["limit"],
    registry=REGISTRY,
)
LDAP_ERRORS = Counter(
    "xmppd_ldap_errors", "Directory calls that failed (no answer)", registry=REGISTRY
)
DATABASE_ERRORS = Counter(
    "xmppd_database_errors",
    "Storage calls that failed: unavailable (database unreachable), refused (breaker open, "
    "failed at once), error (anything else)",
    ["kind"],
    registry=REGISTRY,
)


class SampledGauge:
    """A gauge read at scrape time: the sum of values `set` here and of registered sources.

    A source is a callable returning {label value: number}; it runs at every scrape, so it
    must be cheap and must not block (it runs in the server's event loop)."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self._values: dict[str, float] = {}
        self._sources: dict[str, Callable[[], Mapping[str, float]]] = {}
        REGISTRY.register(self)

    def set(self, value: str, number: float) -> None:
        self._values[value] = number

    def source(self, name: str, fn: Callable[[], Mapping[str, float]] | None) -> None:
        """Register `fn` under `name` (replacing an earlier one of that name; None removes)."""
        if fn is None:
            self._sources.pop(name, None)
        else:
            self._sources[name] = fn

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterator[Metric]:
        totals: Tally[str] = Tally(self._values)
        for fn in list(self._sources.values()):
            try:
                totals.update(fn())
            except Exception:
                log.exception("metrics source %s failed", getattr(fn, "__qualname__", fn))
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, number in sorted(totals.items()):
            family.add_metric([value], number)
        yield family


SESSIONS = SampledGauge(
    "xmppd_sessions", "Bound sessions by transport (tcp, tls, websocket, bosh, channels)",
    "transport",
)  # fmt: skip
# Bans in force, by kind (account, room, address): the bans feature registers a source with
# `BANS.source("bans", lambda: {"account": n, ...})` or sets `BANS.set("address", n)`.
BANS = SampledGauge("xmppd_bans_active", "Bans in force, by kind", "kind")


TRANSPORTS = {
    "ByteStreamConnection": "tcp",  # "tls" once encrypted (STARTTLS or direct TLS)
    "WebSocketConnection": "websocket",
    "BoshConnection": "bosh",
    "JsonChannels": "channels",
    "ChannelSession": "channels",
}


def transport_name(transport: object) -> str:
    name = TRANSPORTS.get(type(transport).__name__, "other")
    return "tls" if name == "tcp" and getattr(transport, "tls_active", False) else name


def sessions_by_transport(hosts: Mapping[str, Any]) -> Tally[str]:
    """A `SESSIONS` source: the sessions bound on `hosts` (hibernating ones included)."""
    counts: Tally[str] = Tally()
    for host in hosts.values():
        for resources in host.sessions.values():
            for session in resources.values():
                counts[transport_name(session.transport)] += 1
    return counts


# ---- the probes ---------------------------------------------------------------------------

_STANZAS_IN, _STANZAS_OUT = HOT.stanzas_in, HOT.stanzas_out
_KIND_OF: dict[str, str] = {}  # stanza tag -> kind, e.g. {jabber:client}message -> message
_MAX_TAGS = 64  # distinct stanza tags remembered (namespaces vary little)
_observe_routing = HOT.routing.observe
_clock = time.perf_counter


def _kind(tag: str) -> str:
    kind = tag.rpartition("}")[2]
    kind = kind if kind in KINDS else "other"
    if len(_KIND_OF) < _MAX_TAGS:
        _KIND_OF[tag] = kind
    return kind


def _routed(tag: str, started: float) -> None:
    """A stanza from a client was routed; `started` is `metrics.clock()` before routing."""
    _STANZAS_IN[_KIND_OF.get(tag) or _kind(tag)] += 1
    _observe_routing(_clock() - started)


def _sent(tag: str) -> None:
    """A stanza was handed to a client's connection."""
    _STANZAS_OUT[_KIND_OF.get(tag) or _kind(tag)] += 1


def _frames(received: int, sent: int) -> None:
    """JSON-channel frames read from and written to a client (kind `json`)."""
    _STANZAS_IN["json"] += received
    _STANZAS_OUT["json"] += sent


def _login(mechanism: str, ok: bool) -> None:
    """A secret was checked: a SASL mechanism, a host-app token, a /login password."""
    label = mechanism if mechanism in MECHANISMS else "other"
    LOGINS.labels(label, "ok" if ok else "failed").inc()


def _overflow(transport: object) -> None:
    OVERFLOWS.labels(transport_name(transport)).inc()


def _refused(limit: str) -> None:
    """A rate limit refused (or paused) something; `limit` names the option or bucket."""
    RATE_LIMITED.labels(limit or "other").inc()


def _ldap_error() -> None:
    LDAP_ERRORS.inc()


def _storage_call(seconds: float, error: BaseException | None) -> None:
    HOT.storage.observe(seconds)
    if error is not None:
        from .storage.base import StorageUnavailable

        kind = "unavailable" if isinstance(error, StorageUnavailable) else "error"
        DATABASE_ERRORS.labels(kind).inc()


def _database_refused() -> None:
    DATABASE_ERRORS.labels("refused").inc()


def _noop(*_args: Any) -> None:
    return None


clock = _clock
routed = _routed
sent = _sent
frames = _frames
login = _login
overflow = _overflow
refused = _refused
ldap_error = _ldap_error
storage_call = _storage_call
database_refused = _database_refused
PROBES = {
    "routed": _routed,
    "sent": _sent,
    "frames": _frames,
    "login": _login,
    "overflow": _overflow,
    "refused": _refused,
    "ldap_error": _ldap_error,
    "storage_call": _storage_call,
    "database_refused": _database_refused,
}
enabled = True
storage_probes.call, storage_probes.refused = _storage_call, _database_refused


def configure(on: bool) -> None:
    """`metrics.enabled`: probes count, or do nothing at all (the benchmark's baseline)."""
    global enabled
    enabled = on
    for name, probe in PROBES.items():
        globals()[name] = probe if on else _noop
    storage_probes.call = globals()["storage_call"]  # the storage layer's own hooks
    storage_probes.refused = globals()["database_refused"]


def exposition() -> bytes:
    """Every metric in the Prometheus text format (version 0.0.4)."""
    return generate_latest(REGISTRY)
