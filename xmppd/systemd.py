"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per message.

With `Type=notify` (docs/xmppd.service) systemd starts the unit, sets `$NOTIFY_SOCKET`, and
counts the service as started when it gets `READY=1`: after the listeners are bound, so units
ordered after xmppd find its ports open. `STOPPING=1` on shutdown, `RELOADING=1` then `READY=1`
around a SIGHUP reload (`Type=notify-reload`, systemd 253, sends that signal itself), `STATUS=`
lines for `systemctl status`, and `WATCHDOG=1` at half of `$WATCHDOG_USEC` when the unit sets
`WatchdogSec=`. Without `$NOTIFY_SOCKET` every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import trio

log = logging.getLogger("xmppd")
_warned = False


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # Linux abstract namespace
    return path if path.startswith("/") else None


def notify(*fields: str) -> bool:
    """Send `fields` ("READY=1", "STATUS=...") as one message; False when not under systemd."""
    global _warned
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        if not _warned:  # systemd gone or a wrong socket: say so once, carry on serving
            _warned = True
            log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=shutting down")


def reloading() -> bool:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", "STATUS=reloading the configuration", f"MONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), None when not asked."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def watchdog() -> None:
    """Ping while the event loop runs: a stuck loop misses them and systemd restarts us."""
    interval = watchdog_interval()
    if interval is None or _address() is None:
        return
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
