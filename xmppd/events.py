"""The per-host event bus: named events, handlers ordered by priority.

Event names follow the grammar in docs/architecture.md. Handlers are async callables taking one
event object; the first handler that returns True stops the chain. Higher priority runs first:
filters > 0, observers (archives, carbons) 0 ... -0.5, delivery -1.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .storage.base import StorageUnavailable

log = logging.getLogger("xmppd.events")

Handler = Callable[[Any], Awaitable[bool | None]]

_KINDS = "message|presence|iq"
_SCOPES = "full|bare|host|self"
_GRAMMAR = re.compile(
    rf"^(?:pre-)?(?:{_KINDS})/(?:{_SCOPES})$"  # stanza routing
    rf"|^iq-(?:get|set)/(?:bare|host|self)/\S+:[^:\s]+$"  # iq-<type>/<scope>/<ns>:<child>
    r"|^route/remote$"
)


def unavailable(exc: BaseException) -> bool:
    """The storage is unreachable (directly, or behind an account backend's error)."""
    return isinstance(exc, StorageUnavailable) or isinstance(exc.__cause__, StorageUnavailable)


class UnknownEvent(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AccountDeleted:
    """Payload of `account-deleted`: the account record is gone and its sessions ended; every
    module holding data of `bare` removes it (the server may be stopped: no sessions then)."""

    bare: str  # user@domain
    local: str  # the localpart, the `user` key of host-scoped stores


@dataclass(frozen=True, slots=True)
class AccountCreated:
    """Payload of `account-created`: the account record was stored (admin.add_user: the admin
    API, ad-hoc commands, `xmppd adduser`)."""

    bare: str
    local: str


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """Payload of the room service's events (xmppd/muc), fired on every host's bus:
    `room-entered` (a session of `bare` entered), `room-message` (a message from `bare` was
    archived as `stanza_id`; `counts`: it has a body and is no correction; `retracts`: the
    stanza-id of the message it retracted, by its author or a moderator), `room-read` (an
    occupant's XEP-0333 `<displayed/>` for `stanza_id`), `room-destroyed`."""

    room: str  # the room's bare JID
    bare: str = ""  # the account concerned ("" for the room's own messages)
    stanza_id: str = ""
    counts: bool = False
    retracts: str = ""


ROOM_EVENTS = ("room-entered", "room-message", "room-read", "room-destroyed")


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    """Payload of `config-reloaded` (SIGHUP, xmppd/reload.py), fired on the server's bus and on
    every host's: `changed` names the live keys now applied in `old` (the running `Config`,
    updated in place); `new` is the file as read. Keys a feature applies itself are declared
    with `reload.live(...)`, or they are reported as needing a restart."""

    old: Any
    new: Any
    changed: frozenset[str]


class EventBus:
    __slots__ = ("_handlers", "_declared", "_seq")

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[tuple[float, int, Handler], ...]] = {}
        self._declared: set[str] = set()
        self._seq = 0

    def declare(self, *names: str) -> None:
        """Feature events (`session-bound`, `roster-item-changed`...) must be declared first."""
        self._declared.update(names)

    def is_known(self, name: str) -> bool:
        return name in self._declared or _GRAMMAR.match(name) is not None

    def hook(self, name: str, handler: Handler, priority: float = 0) -> None:
        if not self.is_known(name):
            raise UnknownEvent(f"unknown event {name!r} (see docs/architecture.md for the grammar)")
        self._seq += 1
        entries = (*self._handlers.get(name, ()), (priority, self._seq, handler))
        # Stable: equal priorities run in the order they were hooked.
        self._handlers[name] = tuple(sorted(entries, key=lambda e: (-e[0], e[1])))

    def unhook(self, name: str, handler: Handler) -> None:
        remaining = tuple(e for e in self._handlers.get(name, ()) if e[2] is not handler)
        if remaining:
            self._handlers[name] = remaining
        else:
            self._handlers.pop(name, None)

    def has_handlers(self, name: str) -> bool:
        return name in self._handlers

    async def fire(self, name: str, event: Any) -> bool:
        """Run the handlers of `name`; True when one of them handled the event."""
        for _priority, _seq, handler in self._handlers.get(name, ()):
            try:
                if await handler(event):
                    return True
            except Exception as exc:
                # One broken module must not take the stanza flow down with it. A database
                # outage is no bug: the storage breaker logs it once, the router answers it.
                if not unavailable(exc):
                    log.exception(
                        "handler %s for %s failed", getattr(handler, "__qualname__", handler), name
                    )
                raise
        return False
