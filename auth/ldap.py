"""Accounts from an LDAP directory (OpenLDAP, 389-DS, Kolab, Active Directory) via ldap3.

The server never sees a password hash, so it can only check plaintext passwords: SASL PLAIN
(over TLS) is the one mechanism offered. A login either searches the user with a service
account and binds as the DN found (search-then-bind), or binds to a DN made from a template
(direct bind); the user's bind always runs on a fresh connection. Service connections are a
bounded pool used from worker threads only, so the trio loop never waits on the network.

`LdapAuth` is the async backend; `Directory` is the blocking client it runs in threads (also used
by `xmppd check ldap` and the directory-contacts module); `ChainAuth` puts the internal account
store first so local accounts (the admin's, bots) keep working beside the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import queue
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import trio
from ldap3 import BASE, NONE, SAFE_SYNC, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from auth.base import AuthBackend, AuthError, NoSuchUser
from auth.internal import InternalAuth, prepare_password
from auth.scram import ScramCredentials
from xmppd import metrics
from xmppd.options import Option, Schema

log = logging.getLogger(__name__)
T = TypeVar("T")

INVALID_CREDENTIALS = 49
PAGED_RESULTS = "1.2.840.113556.1.4.319"
VCARD_ATTRIBUTES = ("displayName", "cn", "mail", "telephoneNumber", "jpegPhoto")

SCHEMA: Schema = {
    "servers": Option(list, [], "ldap:// or ldaps:// URLs, tried in order (failover)"),
    "starttls": Option(bool, False, "StartTLS on ldap:// URLs before binding"),
    "ca_file": Option(str, "", "PEM CA bundle to trust; empty: the system's"),
    "tls_verify": Option(bool, True, "verify the directory's certificate (leave on)"),
    "connect_timeout": Option(float, 5.0, "seconds to reach a directory server", min=0.1),
    "timeout": Option(float, 10.0, "seconds to wait for an answer", min=0.1),
    "base_dn": Option(str, "", "where users are searched"),
    "bind_dn": Option(str, "", "service account DN (empty: anonymous searches)"),
    "bind_password": Option(str, "", "service account password"),
    "bind_password_file": Option(str, "", "file holding the service password instead"),
    "user_filter": Option(
        str, "(&(objectClass=inetOrgPerson)(uid={user}))", "search filter; {user} = localpart"
    ),
    "username_attribute": Option(str, "uid", "attribute holding the localpart"),
    "display_name_attribute": Option(str, "displayName", "name shown in rosters and vCards"),
    "dn_template": Option(str, "", "direct bind: user DN with {user}; empty: search-then-bind"),
    "group_base": Option(str, "", "where groups are searched (empty: base_dn)"),
    "group_filter": Option(
        str,
        "(|(objectClass=groupOfNames)(objectClass=posixGroup))",
        "groups that become shared roster groups",
    ),
    "group_name_attribute": Option(str, "cn", "attribute naming a group"),
    "admin_group": Option(str, "", "DN of a group whose members get admin rights"),
    "limited_group": Option(
        str, "", "DN of a group whose members get the limited role (docs/admin.md)"
    ),
    "max_group_size": Option(
        int, 0, "0: groups of any size are roster groups; else bigger ones are left out", min=0
    ),
    "refresh_interval": Option(float, 300.0, "seconds between directory refreshes", min=5),
    "pool_size": Option(int, 4, "service connections (and worker threads) at most", min=1),
    "cache_ttl": Option(float, 300.0, "seconds a user lookup is reused (0: never)", min=0),
    "negative_cache_ttl": Option(
        float, 10.0, "seconds an unknown user is remembered (a new user waits that long)", min=0
    ),
    "password_cache_ttl": Option(
        float, 0.0, "seconds a verified password is remembered as a salted hash (0: never)", min=0
    ),
}


class DirectoryUnavailable(AuthError):
    """No directory server answered (or the service account was refused)."""


def settings_problem(s: dict[str, Any]) -> str | None:
    """What is missing in validated [auth.ldap] settings, as (key, message) text."""
    if not s["servers"]:
        return "servers: at least one ldap:// or ldaps:// URL is required"
    for url in s["servers"]:
        if urlparse(url).scheme not in ("ldap", "ldaps"):
            return f"servers: {url!r} is not an ldap:// or ldaps:// URL"
    if not s["base_dn"]:
        return "base_dn: required"
    if "{user}" not in s["user_filter"]:
        return "user_filter: must contain {user}"
    if s["dn_template"] and "{user}" not in s["dn_template"]:
        return "dn_template: must contain {user}"
    return None


@dataclass(slots=True)
class DirectoryUser:
    username: str
    dn: str
    attributes: dict[str, list[bytes]] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        values = self.attributes.get(name.lower())
        return values[0].decode("utf-8", "replace") if values else None

    def display_name(self, attribute: str) -> str | None:
        return self.text(attribute) or self.text("cn")


@dataclass(slots=True)
class Group:
    name: str
    dn: str
    members: list[str]  # usernames


# ---- range retrieval (Active Directory returns at most 1,500 values of an attribute) -------------

_RANGE = re.compile(r"^([^;]+);range=(\d+)-(\d+|\*)$", re.IGNORECASE)


def ranged_values(raw: dict[str, list[bytes]], name: str) -> tuple[list[bytes], int | None]:
    """Values of `name` in an entry, and where the next range starts (None: complete).

    AD answers a request for `member` with `member;range=0-1499` when there are more values;
    the client asks for `member;range=1500-*` next, until a range ends with `*`."""
    for key, values in raw.items():
        match = _RANGE.match(key)
        if match and match.group(1).lower() == name.lower():
            end = match.group(3)
            return list(values), None if end == "*" else int(end) + 1
    for key, values in raw.items():
        if key.lower() == name.lower():
            return list(values), None
    return [], None


def all_values(
    first: dict[str, list[bytes]], name: str, fetch: Callable[[str], dict[str, list[bytes]]]
) -> list[bytes]:
    """Every value of `name`, fetching further ranges with `fetch("member;range=N-*")`."""
    values, start = ranged_values(first, name)
    while start is not None:
        more, start = ranged_values(fetch(f"{name};range={start}-*"), name)
        if not more:
            break  # a server that stops answering ranges must not loop us forever
        values += more
    return values


# ---- the blocking client (runs in worker threads) ------------------------------------------------


def _ok(result: Any) -> bool:
    return bool(result[0] if isinstance(result, tuple) else result)


def _norm_dn(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


class Directory:
    """Blocking ldap3 client: a pool of service connections and fresh ones for user binds."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.servers: list[str] = settings["servers"]
        self._preferred = 0  # the last server that answered is tried first
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._password = settings["bind_password"]
        if settings["bind_password_file"]:
            with open(settings["bind_password_file"], encoding="utf-8") as f:
                self._password = f.read().strip()

    def _server(self, url: str) -> Server:
        parsed = urlparse(url)
        secure = parsed.scheme == "ldaps"
        tls = Tls(
            validate=ssl.CERT_REQUIRED if self.s["tls_verify"] else ssl.CERT_NONE,
            ca_certs_file=self.s["ca_file"] or None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
        return Server(
            parsed.hostname or "localhost",
            port=parsed.port or (636 if secure else 389),
            use_ssl=secure,
            tls=tls,
            connect_timeout=self.s["connect_timeout"],
            get_info=NONE,  # ldap3 would read the whole schema on every bind
        )

    def connect(
        self, user: str | None = None, password: str | None = None, strategy: str = SAFE_SYNC
    ) -> Connection:
        """An open connection (after StartTLS if configured), not yet bound.

        Servers are tried in order, starting with the last one that answered (failover).
        ldap3's ServerPool sleeps between rounds, so the loop is ours."""
        order = self.servers[self._preferred :] + self.servers[: self._preferred]
        errors = []
        for url in order:
            # A fresh Server each time: ldap3 remembers failed addresses and skips them later.
            server = self._server(url)
            conn = Connection(
                server,
                user=user,
                password=password,
                client_strategy=strategy,
                receive_timeout=max(1, round(self.s["timeout"])),  # ldap3 packs it as an int
                read_only=True,
                raise_exceptions=False,
                auto_referrals=False,
            )
            started = time.monotonic()
            try:
                conn.open()
                if self.s["starttls"] and not server.ssl and not _ok(conn.start_tls()):
                    raise DirectoryUnavailable(f"StartTLS refused: {conn.result}")
            except Exception as exc:  # ldap3 raises even KeyError on some connect timeouts
                _close(conn)
                reason = str(exc)
                if time.monotonic() - started >= self.s["connect_timeout"] * 0.9:
                    reason = f"timed out after {self.s['connect_timeout']:g} s"
                errors.append(f"{server.host}:{server.port}: {reason}")
                continue
            self._preferred = self.servers.index(url)
            return conn
        raise DirectoryUnavailable("; ".join(errors))

    def service_connection(self) -> Connection:
        """A bound service connection. SYNC, not SAFE_SYNC: the pool hands it to one thread at
        a time, and SAFE_SYNC deep-copies every answer (half the time of reading 20,000
        users)."""
        conn = self.connect(self.s["bind_dn"] or None, self._password or None, SYNC)
        if self.s["bind_dn"] and not _ok(conn.bind()):
            result = conn.result or {}
            conn.unbind()
            raise DirectoryUnavailable(
                f"the service account was refused: {result.get('description')} "
                f"{result.get('message') or ''}".strip()
            )
        return conn

    def with_service(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a pooled service connection; a broken one is dropped, not reused.

        A pooled connection may have died while idle (the directory restarted, a firewall
        forgot it): when one fails for another reason than a refused search, the idle ones are
        dropped too and `fn` runs once more on a fresh connection."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            return self._run(self.service_connection(), fn)
        try:
            return self._run(conn, fn)
        except LDAPSearchError:
            raise  # the directory answered: a new connection would get the same answer
        except Exception as exc:
            log.info("pooled LDAP connection failed (%s): retrying on a fresh one", exc)
            self.close()
            return self._run(self.service_connection(), fn)

    def _run(self, conn: Connection, fn: Callable[[Connection], T]) -> T:
        try:
            result = fn(conn)
        except BaseException:
            _close(conn)
            raise
        if not conn.closed:  # one the server hung up on is not handed out again
            self._idle.put(conn)
        return result

    def close(self) -> None:
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return

    # -- operations --------------------------------------------------------------------------

    def search(
        self, conn: Connection, base: str, filter_: str, attrs: list[str], scope: str = SUBTREE
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """Entries (dn, raw attributes with lowercased names), all pages."""
        cookie: bytes | None = None
        while True:
            out = conn.search(
                base, filter_, scope, attributes=attrs, paged_size=500, paged_cookie=cookie
            )
            if isinstance(out, tuple):  # SAFE_SYNC answers with copies
                _status, result, response, _ = out
            else:
                result, response = conn.result, conn.response
            code = result["result"]
            if code not in (0, 4):  # success, or a size limit (partial answer)
                if conn.closed or code in (3, 51, 52, 80):  # time limit, busy, unavailable
                    raise DirectoryUnavailable(f"search failed: {result.get('description')}")
                raise LDAPSearchError(result)
            for entry in response or []:
                if entry.get("type") == "searchResEntry":
                    raw = {k.lower(): v for k, v in entry["raw_attributes"].items()}
                    yield entry["dn"], raw
            control = (result.get("controls") or {}).get(PAGED_RESULTS)
            cookie = control["value"]["cookie"] if control else None
            if not cookie:
                return

    def user_filter(self, username: str) -> str:
        return self.s["user_filter"].replace("{user}", escape_filter_chars(username))

    def find_user(self, conn: Connection, username: str) -> DirectoryUser | None:
        attrs = [self.s["username_attribute"], self.s["display_name_attribute"], *VCARD_ATTRIBUTES]
        found = list(self.search(conn, self.s["base_dn"], self.user_filter(username), attrs))
        if len(found) != 1:
            if len(found) > 1:
                log.warning("user filter matches %d entries for %r: refused", len(found), username)
            return None
        dn, raw = found[0]
        return DirectoryUser(username, dn, raw)

    def user_dn(self, username: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return self.s["dn_template"].replace("{user}", escape_rdn(username))

    def bind_as(self, dn: str, password: str) -> bool:
        """A fresh connection binds as the user: True only for the right password."""
        conn = self.connect(dn, password)
        try:
            return _ok(conn.bind())
        finally:
            _close(conn)

    def list_users(self, conn: Connection) -> list[DirectoryUser]:
        attr = self.s["username_attribute"]
        filter_ = self.s["user_filter"].replace("{user}", "*")
        attrs = [attr, self.s["display_name_attribute"], "cn", "mail"]
        users = []
        for dn, raw in self.search(conn, self.s["base_dn"], filter_, attrs):
            name = username_from(raw.get(attr.lower()))
            if name:
                users.append(DirectoryUser(name, dn, raw))
        return users

    def list_groups(self, conn: Connection, users: list[DirectoryUser]) -> list[Group]:
        by_dn = {_norm_dn(u.dn): u.username for u in users}
        known = {u.username for u in users}
        name_attr = self.s["group_name_attribute"]
        base = self.s["group_base"] or self.s["base_dn"]
        found = self.search(
            conn, base, self.s["group_filter"], [name_attr, "member", "uniqueMember", "memberUid"]
        )
        return [self._group(conn, dn, raw, by_dn, known) for dn, raw in found]

    def read_group(self, conn: Connection, dn: str, users: list[DirectoryUser]) -> Group:
        attrs = [self.s["group_name_attribute"], "member", "uniqueMember", "memberUid"]
        entries = list(self.search(conn, dn, "(objectClass=*)", attrs, BASE))
        raw = entries[0][1] if entries else {}
        by_dn = {_norm_dn(u.dn): u.username for u in users}
        return self._group(conn, dn, raw, by_dn, {u.username for u in users})

    def _group(
        self, conn: Connection, dn: str, raw: dict, by_dn: dict[str, str], known: set[str]
    ) -> Group:
        def fetch(attr: str) -> dict[str, list[bytes]]:
            entries = list(self.search(conn, dn, "(objectClass=*)", [attr], BASE))
            return entries[0][1] if entries else {}

        member_dns = all_values(raw, "member", fetch) + all_values(raw, "uniquemember", fetch)
        members = [by_dn.get(_norm_dn(v.decode("utf-8", "replace"))) for v in member_dns]
        members += [username_from([v]) for v in raw.get("memberuid", [])]
        names = raw.get(self.s["group_name_attribute"].lower()) or [dn.encode()]
        unique = dict.fromkeys(m for m in members if m and m in known)
        return Group(names[0].decode("utf-8", "replace"), dn, list(unique))


class LDAPSearchError(LDAPException):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(f"{result.get('description')}: {result.get('message') or ''}".strip())
        self.result = result


def username_from(values: list[bytes] | None) -> str | None:
    """The JID localpart from an attribute value (a mail address gives its local part)."""
    if not values:
        return None
    text = values[0].decode("utf-8", "replace").strip().lower()
    return text.partition("@")[0] or None


def _close(conn: Connection) -> None:
    with contextlib.suppress(Exception):  # already broken: nothing to release
        conn.unbind()


# ---- the async backend ---------------------------------------------------------------------------


class LdapAuth(AuthBackend):
    """Directory accounts: PLAIN only, read-only, lookups cached, outages logged once."""

    name = "ldap"
    supports_scram = False

    def __init__(self, settings: dict[str, Any], directory: Directory | None = None) -> None:
        self.s = settings
        self.directory = directory or Directory(settings)
        self._limiter = trio.CapacityLimiter(settings["pool_size"])
        self._users: dict[str, tuple[float, DirectoryUser | None]] = {}
        self._passwords: dict[str, tuple[float, bytes, bytes]] = {}  # user -> (expiry, salt, mac)
        self.known: set[str] = set()  # usernames of the last full listing (for outages)
        self.outage_since: float | None = None
        self.stats = {"lookups": 0, "binds": 0}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking directory call in a worker thread; failures become DirectoryUnavailable."""
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except LDAPSearchError as exc:
            self._outage(exc)  # a refused search means no answer about the user either
            raise DirectoryUnavailable(str(exc)) from exc
        except Exception as exc:  # ldap3 and sockets fail in many ways: all mean "no answer"
            self._outage(exc)
            raise DirectoryUnavailable(f"directory unreachable: {exc}") from exc
        if self.outage_since is not None:
            log.warning(
                "LDAP directory reachable again after %.0f s", time.time() - self.outage_since
            )
            self.outage_since = None
        return result

    def _outage(self, exc: BaseException) -> None:
        metrics.ldap_error()  # every failed call; the log says it once per outage
        if self.outage_since is None:  # once per outage, not per attempt
            self.outage_since = time.time()
            log.error("LDAP directory unavailable (logins fail until it is back): %s", exc)

    async def lookup(self, username: str) -> DirectoryUser | None:
        now = time.monotonic()
        cached = self._users.get(username)
        if cached is not None and cached[0] > now:
            return cached[1]
        self.stats["lookups"] += 1
        d = self.directory
        user = await self.run(d.with_service, lambda c: d.find_user(c, username))
        ttl = self.s["cache_ttl"] if user is not None else self.s["negative_cache_ttl"]
        if ttl > 0:
            self._users[username] = (now + ttl, user)
        return user

    async def check_password(self, username: str, password: str) -> bool:
        try:
            prepared = prepare_password(password)
        except ValueError:
            return False
        if not prepared:  # an empty password would be an anonymous bind, which "succeeds"
            return False
        if self._password_cached(username, prepared):
            return True
        if self.s["dn_template"]:
            dn = self.directory.user_dn(username)
        else:
            user = await self.lookup(username)
            if user is None:
                return False
            dn = user.dn
        self.stats["binds"] += 1
        ok = await self.run(self.directory.bind_as, dn, prepared)
        if not ok:
            self._users.pop(username, None)  # maybe moved or deleted: search again next time
        elif self.s["password_cache_ttl"] > 0:
            salt = os.urandom(16)
            expiry = time.monotonic() + self.s["password_cache_ttl"]
            self._passwords[username] = (expiry, salt, _mac(salt, prepared))
        return ok

    def _password_cached(self, username: str, prepared: str) -> bool:
        entry = self._passwords.get(username)
        if entry is None:
            return False
        expiry, salt, mac = entry
        if expiry <= time.monotonic():
            del self._passwords[username]
            return False
        return hmac.compare_digest(mac, _mac(salt, prepared))

    async def user_exists(self, username: str) -> bool:
        try:
            if self.s["dn_template"] and not self.s["bind_dn"]:
                return username in self.known  # nothing to search with
            return await self.lookup(username) is not None
        except DirectoryUnavailable:
            return username in self.known  # the last listing is the best answer we have

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        return None  # the directory keeps its own hashes: PLAIN only

    async def create_user(self, username: str, password: str) -> None:
        raise AuthError("directory accounts are managed in the directory")

    async def set_password(self, username: str, password: str) -> None:
        raise AuthError("directory passwords are changed in the directory")

    async def delete_user(self, username: str) -> None:
        raise AuthError("directory accounts are managed in the directory")

    async def list_users(self) -> list[str]:
        d = self.directory
        users = await self.run(d.with_service, d.list_users)
        self.known = {u.username for u in users}
        return sorted(self.known)


def _mac(salt: bytes, password: str) -> bytes:
    return hmac.new(salt, password.encode("utf-8"), hashlib.sha256).digest()


class ChainAuth(AuthBackend):
    """Internal accounts first (the admin's, bots), then the directory. Changes go to the
    internal store; SCRAM is off because directory users can only use PLAIN."""

    name = "internal+ldap"
    supports_scram = False

    def __init__(self, internal: InternalAuth, ldap: LdapAuth) -> None:
        self.internal = internal
        self.ldap = ldap

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        return await self.internal.get_scram_credentials(username, hash_name)

    async def check_password(self, username: str, password: str) -> bool:
        if await self.internal.user_exists(username):
            return await self.internal.check_password(username, password)
        return await self.ldap.check_password(username, password)

    async def user_exists(self, username: str) -> bool:
        return await self.internal.user_exists(username) or await self.ldap.user_exists(username)

    async def create_user(self, username: str, password: str) -> None:
        await self.internal.create_user(username, password)

    async def set_password(self, username: str, password: str) -> None:
        await self.internal.set_password(username, password)

    async def delete_user(self, username: str) -> None:
        if not await self.internal.user_exists(username):
            raise NoSuchUser(username)
        await self.internal.delete_user(username)

    async def list_users(self) -> list[str]:
        local = await self.internal.list_users()
        try:
            return sorted(set(local) | set(await self.ldap.list_users()))
        except DirectoryUnavailable:
            return sorted(set(local) | self.ldap.known)
