"""A routable domain served in-process (conference.example.org): no accounts, no sessions.

The router looks a stanza's domain up in `host.hosts`, then in `host.components` (shared by
every host of the server), and fires `<kind>/<scope>` on the target's event bus. Stanzas the
component sends are routed with itself as the sending host, so it offers what `router.route`
reads: `domain`, `events`, `hosts`, `components`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import router
from ..events import EventBus

if TYPE_CHECKING:
    from ..host import Host
    from ..protocol.stanza import Element
    from ..router import StanzaEvent
    from ..session import Session


class Component:
    def __init__(self, domain: str, parent: Host) -> None:
        self.domain = domain
        self.parent = parent
        self.events = EventBus()
        self.hosts = parent.hosts  # shared by every host of the server
        self.components = parent.components
        self.pubsub = parent.pubsub
        self.tracker = parent.tracker
        self.log = logging.getLogger(f"xmppd.component.{domain}")
        self.events.hook("route/remote", self._remote, router.DELIVERY)

    def register(self) -> None:
        if self.domain in self.hosts or self.domain in self.components:
            raise ValueError(f"{self.domain} is already served")
        self.components[self.domain] = self

    async def route(self, origin: Session | None, stanza: Element) -> None:
        await router.route(self, origin, stanza)  # type: ignore[arg-type]

    @staticmethod
    async def _remote(event: StanzaEvent) -> bool:
        return await event.reply_error("remote-server-not-found")
