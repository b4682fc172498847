"""The server process: one nursery holding pubsub, the tracker, the hosts and the listeners."""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from auth.internal import InternalAuth
from auth.tokens import TokenAuth

from . import loader, metrics, reload, systemd
from .bans import BanService
from .cluster import Cluster, make_bus
from .cluster_admin import ClusterAdmin
from .config import Config
from .events import EventBus
from .hooks.service import HookService
from .host import Host
from .login_gate import LoginGate
from .protocol.sasl import tls_server_end_point
from .protocol.stanza import Element, copy, error_reply, local_name
from .protocol.stream import StreamSettings
from .roles import Roles
from .storage import Database, open_database
from .throttle import LoginThrottle
from .tokens import TokenService
from .transports import adminsock, http, tcp, tls
from .wordfilter import WordFilter

log = logging.getLogger("xmppd")
BOUNCE_WAIT = 30.0  # seconds one reroute may wait for room at the senders it bounces to


def tune_gc() -> None:
    """Keep the cycle collector off the message path.

    Everything alive after start-up (modules, config, hosts) is frozen out of collection, and
    young collections run every 10,000 allocations instead of 700: with thousands of sessions
    the default settings cost ~30% of the CPU per message and stalls of hundreds of ms
    (measured with bench/loadgen.py, 2,000 sessions). Sessions avoid reference cycles, so
    refcounting frees almost everything anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _ignore_sighup_until_ready() -> None:
    """SIGHUP's default action ends the process: a reload sent while starting is ignored
    instead (the reload task's receiver takes the signal over once serving)."""
    with contextlib.suppress(ValueError):  # not the main thread (tests embedding a server)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.pubsub, self.tracker = make_bus(config)  # in-process, or Redis in cluster mode
        self.cluster: Cluster | None = None
        self.cluster_admin: ClusterAdmin | None = None  # admin verbs on every node
        self.reuse_port = False  # SO_REUSEPORT on every listener: `serve --workers N`
        self.hosts: dict[str, Host] = {}
        self.roles = Roles(self.hosts)  # xmppd/roles.py; from the config in _make_hosts
        rules = config.filter
        self.word_filter = WordFilter(rules["rules"], ignore_case=rules["ignore_case"])
        self.components: dict[str, Any] = {}  # in-process services on their own domain (MUC)
        self.db: Database | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.cb_data: bytes | None = None
        self.ports: dict[str, int] = {}
        self.demo_password: str | None = None
        self._nursery: trio.Nursery | None = None
        self._settings: dict[bool, StreamSettings] = {}
        self._rerouting = 0  # reroute() calls in progress (shutdown waits for them)
        tokens = config.auth["tokens"]  # host-app tokens: JSON channels, /credentials
        self.tokens = TokenService(tokens, config.server["domain"])  # verify, revoke
        self.credentials = self.tokens.credentials
        self.login_throttle = LoginThrottle(config.limits["login"])  # password guessing
        self.login_gate = LoginGate(self.login_throttle)
        self.bans = BanService(self)  # bans with expiry, disabled accounts (xmppd/bans.py)
        self.hooks = HookService(self)  # event subscriptions, webhooks (xmppd/hooks/)
        self.started_at = time.monotonic()
        metrics.configure(config.metrics["enabled"])
        self.events = EventBus()  # server-wide events (hosts have their own buses)
        self.events.declare("config-reloaded")  # ConfigReloaded, after SIGHUP (xmppd/reload.py)
        self.events.hook("config-reloaded", self._reloaded)
        metrics.BANS.source("bans", self.bans.counts)

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        _ignore_sighup_until_ready()
        self._setup_tls()
        self.db = await open_database(config.data_dir, **config.database_options)
        try:
            await self.tokens.load(self.db.for_host(config.server["domain"]))
            self.tokens.enable_login(self._secret())  # POST /login session tokens
            await self.bans.load(self.db.for_host(config.server["domain"]))
            await self.hooks.load(self.db.for_host(config.server["domain"]))
            await self.load_filter_edits()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.pubsub.run)
                await nursery.start(self.tracker.run)
                self._make_hosts()
                await self._ensure_demo_account()
                await nursery.start(self.bans.run)  # lifts expired bans
                self.hooks.install()  # listens to room events; delivers the outbox
                await nursery.start(self.hooks.run)
                if self.config.cluster.get("worker", 1) == 1:  # one socket per data dir
                    await nursery.start(adminsock.serve_admin, self)  # `xmppd deluser` etc.
                tune_gc()
                self.ports = await nursery.start(tcp.serve_c2s, self)
                self.ports.update(await nursery.start(http.serve_http, self))
                nursery.start_soon(self._stop_on_signals)
                await nursery.start(self._reload_on_sighup)  # before READY=1 says "send HUP"
                nursery.start_soon(self._sweep_login_throttle)
                nursery.start_soon(systemd.watchdog)
                log.info("xmppd serving %s", ", ".join(self.hosts))
                systemd.ready(f"serving {', '.join(self.hosts)}")
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await self.db.close()

    async def _sweep_login_throttle(self) -> None:
        """Bans end on time (and say so in the log); stale counters are forgotten."""
        while True:
            await trio.sleep(1)
            self.login_throttle.sweep(time.monotonic())

    def _setup_tls(self) -> None:
        cfg = self.config
        domains = [h.domain for h in cfg.hosts]
        cert, key = tls.ensure_certificate(
            cfg.tls["certificate"], cfg.tls["key"], cfg.data_dir, domains
        )
        self.ssl_context = tls.server_context(cert, key)
        self.cb_data = tls_server_end_point(tls.leaf_certificate_der(cert))

    def _make_hosts(self) -> None:
        assert self.db is not None
        for host_config in self.config.hosts:
            storage = self.db.for_host(host_config.domain)
            host = Host(
                host_config,
                pubsub=self.pubsub,
                tracker=self.tracker,
                storage=storage,
                auth=self._auth_backend(storage, host_config.domain),
            )
            host.hosts = self.hosts
            host.components = self.components
            self.hosts[host.domain] = host
        self.roles = Roles.from_config(self.hosts, self.config.server)
        for host in self.hosts.values():  # before the modules, which look them up
            host.services["roles"] = self.roles
            host.services["word_filter"] = self.word_filter
        for host in self.hosts.values():
            host.modules = loader.load_all(host, self.config)
        if self.config.cluster["enabled"]:
            ack_timeout = max(1.0, 2 * self.config.cluster["heartbeat"])
            lease = self.config.cluster["room_lease"]
            self.cluster = Cluster(self.pubsub, self.tracker, self.nursery_soon, ack_timeout, lease)
            for host in self.hosts.values():
                self.cluster.install(host)
            self.cluster_admin = ClusterAdmin(
                self.pubsub, self.tracker, self.nursery_soon, self._answer_peer
            )
            for host in self.hosts.values():
                self.cluster_admin.install(host)
            self.tokens.peers = self._revoke_on_peers

    async def _revoke_on_peers(self, entry: dict[str, Any]) -> int:
        from .admin import revoke_tokens_elsewhere

        return await revoke_tokens_elsewhere(self, entry)

    async def _answer_peer(self, verb: str, args: dict[str, Any]) -> Any:
        from .admin import answer_peer

        return await answer_peer(self, verb, args)

    def _auth_backend(self, storage: Any, domain: str) -> Any:
        backend = InternalAuth(storage.keyval("accounts"))
        if self.config.auth["backend"] == "ldap":
            from auth.ldap import ChainAuth, LdapAuth

            backend = ChainAuth(backend, LdapAuth(self.config.auth["ldap"]))
        if self.config.auth["tokens"]["apps"]:  # one-time passwords, users the apps vouch for
            return TokenAuth(backend, self.credentials, domain, storage.keyval("token_users"))
        return backend

    async def _ensure_demo_account(self) -> None:
        """First start only: create demo@<domain> and print its password once."""
        if not self.config.server["demo_account"] or self.config.auth["backend"] != "internal":
            return
        marker = self.config.data_dir / ".demo-account-created"
        if marker.exists():
            return
        host = self.hosts[self.config.server["domain"]]
        existing = await host.auth.list_users()
        if existing:
            print(
                f"\n  No demo account made: {host.domain} already has {len(existing)}"
                f" account(s) in {self.config.data_dir} (created before the first start).\n",
                flush=True,
            )
        else:
            self.demo_password = secrets.token_urlsafe(9)
            await host.auth.create_user("demo", self.demo_password)
            banner = (
                f"\n  Demo account: demo@{host.domain}   password: {self.demo_password}\n"
                f"  (shown once; change it with: xmppd passwd demo@{host.domain})\n"
            )
            print(banner, flush=True)
        marker.write_text("The demo account was offered on first start.\n")

    # ---- services for sessions --------------------------------------------------------------

    def stream_settings(self, *, direct_tls: bool) -> StreamSettings:
        settings = self._settings.get(direct_tls)
        if settings is None:
            c2s, limits = self.config.c2s, self.config.limits
            domains = [h.domain for h in self.config.hosts]
            settings = StreamSettings(
                domains=frozenset(domains),
                default_domain=domains[0],
                tls_available=self.ssl_context is not None,
                require_tls=c2s["require_encryption"],
                direct_tls=direct_tls,
                preauth_max_bytes=limits["preauth_stanza_size"],
                max_bytes=limits["stanza_size"],
                max_depth=limits["max_depth"],
                max_sasl_attempts=limits["sasl_attempts"],
                idle_seconds=int(limits["idle_timeout"]),
                allow_plain_without_tls=c2s["allow_plain_without_tls"],
                # Directory accounts have no SCRAM keys here: PLAIN only (docs/ldap.md).
                scram_available=all(h.auth.supports_scram for h in self.hosts.values()),
                sasl_secret=self._secret(),
                extra_features={h.domain: h.stream_features for h in self.hosts.values()},
            )
            self._settings[direct_tls] = settings
        return settings

    def _secret(self) -> bytes:
        """A random per-installation secret, made once and kept in the data directory."""
        path = self.config.data_dir / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(secrets.token_bytes(32))
            path.chmod(0o600)
        return path.read_bytes()

    def nursery_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, *args)

    @staticmethod
    async def _guarded(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """A background job that fails is logged; it must not take the server down."""
        try:
            await fn(*args)
        except Exception:
            log.exception("background task %s failed", getattr(fn, "__qualname__", fn))

    def undeliverable(self, session: Any, stanza: object) -> None:
        """A stanza queued for a session that went away: route it again, now without it."""
        if isinstance(stanza, Element):
            self.nursery_soon(self.reroute, session, [stanza])

    async def reroute(self, session: Any, stanzas: list[Element]) -> None:
        """Stanzas a session that ended never got, in order (RFC 6121 §8.5.3.2 for a resource
        that is gone; XEP-0198 §5 for the ones not acknowledged): messages are routed again
        (other resources, offline storage, or an error for the sender), iq requests bounce,
        presence and answers are dropped."""
        host = session.host or next(iter(self.hosts.values()))
        patience = trio.current_time() + BOUNCE_WAIT  # for the whole call, not per stanza
        self._rerouting += 1
        try:
            for stanza in stanzas:
                kind, type_ = local_name(stanza), stanza.get("type")
                if type_ == "error":
                    continue
                if kind == "message":
                    if stanza.get("to") is None:  # to the account itself: now explicit
                        stanza = copy(stanza)
                        stanza.set("to", session.bare)
                    await self._room_for_bounce(stanza.get("from"), patience)
                    await self._route_safely(host, stanza)
                elif kind == "iq" and type_ in ("get", "set"):
                    await self._route_safely(host, error_reply(stanza, "service-unavailable"))
        finally:
            self._rerouting -= 1

    async def _room_for_bounce(self, sender: str | None, patience: float) -> None:
        """A message routed again may bounce to its sender. A session that ended with
        thousands queued (a flood's target) must not bury the sender's own session under
        the bounces at once: wait while the sender's mailbox is loaded, until `patience`
        (BOUNCE_WAIT after the reroute began; then they take their chances like any other
        stanza)."""
        bare, _, resource = (sender or "").partition("/")
        host = self.hosts.get(bare.rpartition("@")[2])
        origin = host.resources_of(bare).get(resource) if host is not None and resource else None
        if origin is not None and origin.mailbox.loaded:
            with trio.move_on_at(patience):
                await origin.mailbox.wait_for_room()

    @staticmethod
    async def _route_safely(host: Host, stanza: Element) -> None:
        try:
            await host.route(None, stanza)
        except Exception:
            log.exception("routing a stanza again failed")  # the next one still gets its turn

    async def _stop_on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                await self.shutdown()
                return

    async def _reload_on_sighup(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED):
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                log.info("SIGHUP: reloading %s", self.config.path or "(no config file)")
                try:
                    await reload.reload(self)
                except Exception:
                    log.exception("reload failed")

    async def _reloaded(self, event: Any) -> None:
        """SIGHUP: the word filter's rules, and bans changed in the database meanwhile."""
        if any(key.startswith("filter") for key in event.changed):
            self.word_filter.replace(self.config.filter["rules"])
        await self.load_filter_edits()
        await self.bans.reload()

    async def load_filter_edits(self) -> None:
        """The word filter's edits made through the admin API (xmppd/api/filter_rules.py)."""
        from .api.filter_rules import load_edits

        self.word_filter.load_edits(await load_edits(self))

    async def shutdown(self, grace: float = 3.0) -> None:
        """Tell every client (RFC 6120 <system-shutdown/>), let the writers flush, stop."""
        systemd.stopping()
        self.tracker.graceful_permdown()
        sessions = [
            s for host in self.hosts.values() for r in host.sessions.values() for s in r.values()
        ]
        for session in sessions:
            session.kill("system-shutdown", "the server is shutting down")
        # Ending includes routing undelivered stanzas again (offline storage is durable).
        with trio.move_on_after(grace):
            while any(not s.ended for s in sessions) or self._rerouting:
                await trio.sleep(0.05)
        self.stop()

    def stop(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
