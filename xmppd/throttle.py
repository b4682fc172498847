"""Password guessing: failed logins slow an address down, then ban it; owners stay welcome.

Sans-IO: every call takes `now` (time.monotonic() in the server), nothing sleeps or reads a
socket here. The session (SASL over TCP, WebSocket and BOSH) and the JSON channels' token
exchange ask `banned()` and `delay_for()` before checking a secret, and report the outcome with
`record_failure()` / `record_success()`; the listeners refuse banned addresses at accept.

Rules (all numbers from `[limits.login]`):
- Per address (IPv4 address, IPv6 network of `ipv6_prefix` bits: one host owns a whole /64):
  from `slow_after` failures within `window` seconds on, each attempt waits `delay` seconds,
  doubling per further failure up to `max_delay`; `ban_after` failures ban the address for
  `ban_seconds`. The delay comes *before* the check, for success and failure alike, so
  timing tells nothing and a client that hangs up early has not made its guess.
- Per account: `account_slow_after` failures against one account (from any addresses) delay
  further attempts on it the same way, but only from addresses that have failures of their
  own and never logged in to it: its owner, at an address without failures, is never slowed,
  so typing someone's JID wrong cannot lock them out. Accounts are never banned.
- Exempt addresses/networks (`exempt`) are neither counted nor slowed.
- Memory is bounded: at most `max_tracked` addresses, accounts and bans each, the least
  recently seen forgotten first; `sweep()` ends bans and forgets counters older than the window.

`LoginGate` (xmppd/login_gate.py) is the trio shell that sleeps, and lets a slowed address
check one attempt at a time.

Like ejabberd's mod_fail2ban (a per-address failure table checked at accept) and Prosody's
mod_limit_auth (a per-address failure rate plus a tarpit), with the account rule added.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from .options import Option, Schema

log = logging.getLogger("xmppd.auth")

SCHEMA: Schema = {
    "window": Option(float, 600.0, "seconds over which failed logins are counted", min=1),
    "slow_after": Option(
        int, 3, "failures from one address before its attempts are answered slower", min=1
    ),
    "ban_after": Option(int, 10, "failures from one address in the window that ban it", min=1),
    "ban_seconds": Option(float, 900.0, "how long a banned address is refused", min=1),
    "delay": Option(float, 1.0, "first delay; it doubles with each further failure", min=0),
    "max_delay": Option(float, 30.0, "longest delay before an attempt is answered", min=0),
    "account_slow_after": Option(
        int,
        10,
        "failures against one account (any address) before attempts on it from addresses "
        "with failures are answered slower (its owner's clean addresses never are)",
        min=1,
    ),
    "exempt": Option(list, [], "addresses or networks never slowed nor banned ('10.0.0.0/8')"),
    "ipv6_prefix": Option(int, 64, "IPv6 addresses are counted per network this long", min=1),
    "max_tracked": Option(
        int, 100_000, "addresses, accounts and bans remembered at most (each)", min=10
    ),
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_GOOD_PER_ACCOUNT = 8  # addresses remembered per account as having logged in to it
_PURGE_EVERY = 60.0  # seconds between sweeps of stale counters
_KEYS_CACHED = 4096  # addresses whose key() is remembered (the settings never change)


def exempt_networks(entries: list[str]) -> list[Network]:
    """Parse `exempt`; raises ValueError naming the bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or network") from None
    return networks


class _Count:
    """Failures since `start` (a fixed window that restarts once `window` has passed)."""

    __slots__ = ("count", "start", "seen", "good")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.start = now
        self.seen = now
        self.good: list[str] | None = None  # accounts: addresses that logged in to it


class LoginThrottle:
    def __init__(self, settings: dict[str, Any]) -> None:
        settings = {**{k: o.default for k, o in SCHEMA.items()}, **settings}
        self.settings = settings
        self._exempt = exempt_networks(settings["exempt"])
        self._addresses: dict[str, _Count] = {}  # least recently touched first
        self._accounts: dict[str, _Count] = {}
        self._bans: dict[str, float] = {}  # key -> until; in the order the bans started
        self._purged = 0.0
        self._keys: dict[str, str | None] = {}  # address -> key, see key()

    def reconfigure(self, settings: dict[str, Any]) -> None:
        """New `[limits.login]` values (SIGHUP): counters and bans in force are kept."""
        self.settings = {**{k: o.default for k, o in SCHEMA.items()}, **settings}
        self._exempt = exempt_networks(self.settings["exempt"])

    # ---- questions ------------------------------------------------------------------------

    def key(self, address: str) -> str | None:
        """What failures are counted under: None for exempt addresses. Remembered for the
        last few thousand addresses: one login asks four times, and parsing is most of it."""
        keys = self._keys
        if address in keys:
            return keys[address]
        if len(keys) >= _KEYS_CACHED:
            keys.clear()
        key = keys[address] = self._key(address)
        return key

    def _key(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return address or None  # not an IP (tests, Unix sockets): count it as given
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._exempt):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            prefix = min(self.settings["ipv6_prefix"], 128)
            return str(ipaddress.IPv6Network((ip, prefix), strict=False))
        return str(ip)

    def banned(self, address: str, now: float) -> float:
        """Seconds the address stays banned; 0.0 when it may try."""
        key = self.key(address)
        if key is None or key not in self._bans:
            return 0.0
        left = self._bans[key] - now
        if left > 0:
            return left
        self._end_ban(key)
        return 0.0

    def delay_for(self, address: str, account: str | None, now: float) -> float:
        """Seconds to wait before checking this attempt's secret."""
        key = self.key(address)
        if key is None:
            return 0.0
        failures = self._live(self._addresses, key, now)
        if failures == 0:
            return 0.0  # a clean address is never slowed, whatever happens to the account
        delay = self._grow(failures, self.settings["slow_after"])
        record = self._accounts.get(account) if account else None
        if record is not None and key not in (record.good or ()):
            accounts = self._live(self._accounts, account, now)  # type: ignore[arg-type]
            delay = max(delay, self._grow(accounts, self.settings["account_slow_after"]))
        return delay

    # ---- outcomes -------------------------------------------------------------------------

    def record_failure(self, address: str, account: str | None, now: float) -> bool:
        """A wrong secret; True when this failure started a ban of the address."""
        key = self.key(address)
        if key is None:
            return False
        if account:
            self._touch(self._accounts, account, now).count += 1
        record = self._touch(self._addresses, key, now)
        record.count += 1
        if record.count < self.settings["ban_after"] or key in self._bans:
            return False
        self._ban(key, record.count, now)
        return True

    def record_success(self, address: str, account: str | None, now: float) -> None:
        """A login: under attack, the account's owner at this address is not slowed by it."""
        key = self.key(address)
        record = self._accounts.get(account) if account else None
        if key is None or record is None:
            return
        good = record.good if record.good is not None else []
        if key in good:
            good.remove(key)
        good.append(key)
        record.good = good[-_GOOD_PER_ACCOUNT:]

    def sweep(self, now: float) -> None:
        """End bans whose time is up (one log line each); forget stale counters."""
        for key, until in list(self._bans.items()):
            if until <= now:
                self._end_ban(key)
        if now - self._purged < _PURGE_EVERY:
            return
        self._purged = now
        stale = now - self.settings["window"]
        for table in (self._addresses, self._accounts):
            while table:
                key = next(iter(table))
                if table[key].seen > stale or key in self._bans:
                    break
                del table[key]

    @property
    def tracked(self) -> tuple[int, int, int]:
        """(addresses, accounts, bans) held in memory."""
        return len(self._addresses), len(self._accounts), len(self._bans)

    # ---- internals ------------------------------------------------------------------------

    def _live(self, table: dict[str, _Count], key: str, now: float) -> int:
        record = table.get(key)
        if record is None or now - record.start > self.settings["window"]:
            return 0
        return record.count

    def _touch(self, table: dict[str, _Count], key: str, now: float) -> _Count:
        record = table.pop(key, None)
        if record is None:
            record = _Count(now)
        elif now - record.start > self.settings["window"]:
            record.count, record.start = 0, now
        record.seen = now
        table[key] = record  # most recently touched last
        if len(table) > self.settings["max_tracked"]:
            del table[next(iter(table))]
        return record

    def _grow(self, failures: int, after: int) -> float:
        if failures < after:
            return 0.0
        s = self.settings
        return min(s["max_delay"], s["delay"] * 2.0 ** min(failures - after, 30))

    def _ban(self, key: str, failures: int, now: float) -> None:
        seconds = self.settings["ban_seconds"]
        self._bans[key] = now + seconds
        if len(self._bans) > self.settings["max_tracked"]:
            del self._bans[next(iter(self._bans))]
        log.warning(
            "login ban of %s for %g s begins: %d failed logins within %g s",
            key,
            seconds,
            failures,
            self.settings["window"],
        )

    def _end_ban(self, key: str) -> None:
        del self._bans[key]
        self._addresses.pop(key, None)  # a fresh start after serving the ban
        log.warning("login ban of %s ends", key)
