"""Bans with expiry and disabled accounts: one service (`server.bans`) that the admin HTTP API
and the ad-hoc commands call.

Kinds:
* `account`: a bare JID banned server-wide until a time: its sessions end at once and its
  logins are refused with a clear text (SASL `<account-disabled/>`, web login and JSON-channel
  tokens with 403) until then.
* `room`: an account made `outcast` of one room (XEP-0045 §9.1) until a time; at expiry the
  affiliation goes back to `none`, unless someone changed it meanwhile.
* `ip`: an address or CIDR network whose connections are refused (c2s at accept, the web
  listener with 403) until a time.
* Disabled accounts (`disable`/`enable`) are refused like banned ones, without an end.

Everything is stored (map store `bans` of the server's first domain: user = kind, key = the
target) before a call returns, loaded at start, and a sweeper lifts what has expired, so
expiry survives restarts. Refusals are checked against the clock, never only by the sweeper.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from .protocol import namespaces as ns
from .protocol.jid import JID, JIDError
from .protocol.stanza import element, sub

if TYPE_CHECKING:
    from .muc.room import Room
    from .server import Server
    from .storage.base import MapStore, Storage

log = logging.getLogger("xmppd.bans")
STORE = "bans"
KINDS = ("account", "room", "ip")
DISABLED = "disabled"  # the map-store `user` of disabled accounts
SWEEP_INTERVAL = 1.0
RELOAD_INTERVAL = 5.0  # seconds, cluster mode: bans set on other nodes take effect here


class BanError(ValueError):
    """A request the service refuses: `code` for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Ban:
    id: str
    kind: str  # account, room, ip
    target: str  # bare JID, or CIDR for ip
    room: str | None  # room JID for kind room
    until: float | None  # epoch seconds; None: until lifted
    reason: str
    by: str  # who set it (API key name, admin JID)
    created: float

    @property
    def key(self) -> str:
        return f"{self.room} {self.target}" if self.room else self.target

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["until"] = iso(self.until)
        out["created"] = iso(self.created)
        return out


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bare_jid(text: str) -> str:
    try:
        jid = JID.parse(text)
    except (JIDError, TypeError) as exc:
        raise BanError("bad-jid", f"invalid JID {text!r}: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise BanError("bad-jid", f"{text!r} is not an account JID (user@domain)")
    return str(jid)


def network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as exc:
        raise BanError("bad-address", f"not an IP address or CIDR network: {exc}") from None


class BanService:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.bans: dict[tuple[str, str], Ban] = {}  # (kind, key) -> ban
        self.disabled: dict[str, dict[str, Any]] = {}  # bare JID -> {"reason", "by", "since"}
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Ban]] = []
        self._store: MapStore | None = None
        self._lock = trio.Lock()  # a reload never interleaves with a change being stored

    # ---- start and storage ----------------------------------------------------------------

    async def load(self, storage: Storage) -> None:
        """Read what is stored (at start, before the listeners open)."""
        self._store = storage.map(STORE)
        await self.reload()
        if self.bans or self.disabled:
            log.info("%d bans, %d disabled accounts in force", len(self.bans), len(self.disabled))

    async def reload(self) -> list[str]:
        """Read the stored bans again: at start, and every RELOAD_INTERVAL in cluster mode,
        where other nodes (and `serve --workers`) share the database; the accounts banned or
        disabled elsewhere since lose their sessions here too. Returns those accounts."""
        if self._store is None:
            return []
        async with self._lock:
            fresh: dict[tuple[str, str], Ban] = {}
            for kind in KINDS:
                for doc in (await self._store.get_all(kind)).values():
                    ban = Ban(**doc)
                    fresh[(ban.kind, ban.key)] = ban
            disabled = dict(await self._store.get_all(DISABLED))
            now = time.time()
            newly = {b.target for k, b in fresh.items() if b.kind == "account" and b.active(now)}
            newly = {t for t in newly if ("account", t) not in self.bans}
            newly |= set(disabled) - set(self.disabled)
            self.bans, self.disabled = fresh, disabled
            self._index()
        for bare in sorted(newly):
            await self._end_sessions(bare, self.login_refusal(bare) or "banned", revoke=False)
        return sorted(newly)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lift expired bans (the first sweep also lifts those that expired while stopped);
        in cluster mode, pick up what other nodes changed."""
        task_status.started()
        shared = self.server.config.cluster["enabled"]
        last_reload = time.monotonic()
        while True:
            try:
                if shared and time.monotonic() - last_reload >= RELOAD_INTERVAL:
                    last_reload = time.monotonic()
                    await self.reload()
                await self.sweep(time.time())
            except Exception:
                log.exception("lifting expired bans failed; trying again")
            await trio.sleep(SWEEP_INTERVAL)

    async def sweep(self, now: float) -> int:
        expired = [b for b in self.bans.values() if not b.active(now)]
        for ban in expired:
            log.info("%s ban of %s expired", ban.kind, ban.key)
            await self._lift(ban)
        return len(expired)

    async def _save(self, kind: str, key: str, doc: dict[str, Any] | None) -> None:
        if self._store is not None:
            await self._store.set(kind, key, doc)

    def _index(self) -> None:
        self._networks = [
            (ipaddress.ip_network(b.target), b) for b in self.bans.values() if b.kind == "ip"
        ]

    # ---- queries ---------------------------------------------------------------------------

    def list(self, kind: str | None = None) -> list[Ban]:
        now = time.time()
        found = [b for b in self.bans.values() if b.active(now) and kind in (None, b.kind)]
        return sorted(found, key=lambda b: (b.created, b.id))

    def counts(self) -> dict[str, int]:
        """Bans in force by kind, for /metrics (`xmppd_bans_active`)."""
        now = time.time()
        found = dict.fromkeys(KINDS, 0)
        for ban in self.bans.values():
            if ban.active(now):
                found[ban.kind] += 1
        return found

    def get(self, ban_id: str) -> Ban | None:
        return next((b for b in self.bans.values() if b.id == ban_id), None)

    def login_refusal(self, bare: str) -> str | None:
        """Why this account may not log in now, or None."""
        if bare in self.disabled:
            reason = self.disabled[bare].get("reason")
            return "the account is disabled" + (f": {reason}" if reason else "")
        ban = self.bans.get(("account", bare))
        if ban is None or not ban.active(time.time()):
            return None
        until = "until further notice" if ban.until is None else f"until {iso(ban.until)}"
        return f"the account is banned {until}" + (f": {ban.reason}" if ban.reason else "")

    def address_refusal(self, address: str) -> str | None:
        if not self._networks:
            return None
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return None
        now = time.time()
        for net, ban in self._networks:
            if ip.version == net.version and ip in net and ban.active(now):
                until = "" if ban.until is None else f" until {iso(ban.until)}"
                return f"connections from your address are banned{until}"
        return None

    # ---- changes ----------------------------------------------------------------------------

    async def ban(
        self,
        kind: str,
        target: str,
        *,
        until: float | None,
        reason: str = "",
        by: str = "",
        room: str | None = None,
    ) -> Ban:
        """Ban (or change the ban of) an account, a room's occupant-to-be, or a network."""
        now = time.time()
        if until is not None and until <= now:
            raise BanError("bad-until", "the ban would end in the past")
        if kind == "ip":
            target = network(target)
        elif kind in ("account", "room"):
            target = bare_jid(target)
        else:
            raise BanError("bad-kind", f"kind is one of {', '.join(KINDS)}")
        outcast = None
        if kind == "room":  # the room's rules are checked before anything is stored
            found = await self._room(room)
            room = found.jid
            outcast = self._plan(found, target, "outcast", reason)
        old = self.bans.get((kind, f"{room} {target}" if room else target))
        ban = Ban(
            old.id if old else secrets.token_hex(8), kind, target, room, until, reason, by, now
        )
        async with self._lock:
            await self._save(kind, ban.key, asdict(ban))  # durable before it takes effect
            self.bans[(kind, ban.key)] = ban
            self._index()
        log.info("%s ban of %s until %s by %s", kind, ban.key, iso(until) or "lifted", by)
        if kind == "account":
            await self._end_sessions(target, self.login_refusal(target) or "banned")
            await self.server.hooks.account_banned(target, until, reason)
        elif outcast is not None:
            await outcast()
        return ban

    async def lift(self, ban_id: str) -> Ban | None:
        ban = self.get(ban_id)
        if ban is not None:
            await self._lift(ban)
            log.info("%s ban of %s lifted", ban.kind, ban.key)
        return ban

    async def _lift(self, ban: Ban) -> None:
        async with self._lock:
            await self._save(ban.kind, ban.key, None)
            self.bans.pop((ban.kind, ban.key), None)
            self._index()
        if ban.kind == "room" and ban.room:
            try:
                room = await self._room(ban.room)
            except BanError:
                return  # the room is gone: nothing to undo
            if room.affiliation(ban.target) == "outcast":  # unless changed meanwhile
                await self._plan(room, ban.target, "none", "")()

    async def disable(self, bare: str, *, reason: str = "", by: str = "") -> int:
        bare = bare_jid(bare)
        doc = {"reason": reason, "by": by, "since": time.time()}
        async with self._lock:
            await self._save(DISABLED, bare, doc)
            self.disabled[bare] = doc
        log.info("account %s disabled by %s", bare, by)
        # RFC 6120 §4.9.3.12: the entity is no longer authorized (bans: policy-violation)
        text = self.login_refusal(bare) or "disabled"
        return await self._end_sessions(bare, text, condition="not-authorized")

    async def enable(self, bare: str) -> bool:
        bare = bare_jid(bare)
        if bare not in self.disabled:
            return False
        async with self._lock:
            await self._save(DISABLED, bare, None)
            self.disabled.pop(bare, None)
        log.info("account %s enabled", bare)
        return True

    async def forget_account(self, bare: str) -> None:
        """A deleted account: its disabled flag and account ban go with it."""
        if bare in self.disabled:
            await self.enable(bare)
        ban = self.bans.get(("account", bare))
        if ban is not None:
            await self._lift(ban)

    # ---- effects ----------------------------------------------------------------------------

    async def _end_sessions(
        self, bare: str, text: str, *, revoke: bool = True, condition: str = "policy-violation"
    ) -> int:
        from .admin import end_everywhere  # every node's sessions (xmppd/cluster_admin.py)

        if bare.partition("@")[2] not in self.server.hosts:
            return 0
        ended = await end_everywhere(self.server, bare, condition, text)
        if revoke:  # its tokens: JSON channels and one-time passwords (stored, once)
            await self.server.tokens.revoke(user=bare)
        return ended

    async def _room(self, room_jid: str | None) -> Room:
        try:
            jid = JID.parse(room_jid or "")
        except JIDError:
            raise BanError("bad-room", f"invalid room JID {room_jid!r}") from None
        for host in self.server.hosts.values():
            service = host.services.get("muc")
            if service is not None and service.domain == jid.domain and jid.local:
                await service.ready()
                room = service.room(jid.local)
                if room is not None:
                    return room
        raise BanError("no-room", f"no room {room_jid}")

    def _plan(self, room: Room, bare: str, affiliation: str, reason: str) -> Any:
        """The affiliation change, checked by the room's rules (MucError) but not yet made."""
        from .muc import admin

        item = element(ns.MUC_ADMIN, "item", jid=bare, affiliation=affiliation)
        if reason:
            sub(item, ns.MUC_ADMIN, "reason", reason)
        return admin.plan_affiliation(room, ServiceActor(), item, bare, affiliation)  # type: ignore[arg-type]


class ServiceActor:
    """The server itself acting on a room (bans, the admin API): an owner's rights, no nick."""

    bare = ""
    occupant = None
    affiliation = "owner"
    role = "none"

    def actor_element(self) -> Any:
        return element(ns.MUC_USER, "actor")
