"""A virtual host: its event bus, modules, sessions, accounts and storage."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pubsub import PubSub, Tracker
from pubsub.topics import presence_topic, session_topic

from . import router
from .cluster import bound_topic
from .events import EventBus
from .protocol.jid import JID

if TYPE_CHECKING:
    from auth.base import AuthBackend

    from .config import HostConfig
    from .module import Module
    from .protocol.stanza import Element
    from .session import Session
    from .storage.base import Storage

NonzaHandler = Callable[["Session", "Element"], Awaitable[None]]


class Host:
    def __init__(
        self,
        config: HostConfig,
        *,
        pubsub: PubSub,
        tracker: Tracker,
        storage: Storage,
        auth: AuthBackend,
    ) -> None:
        self.domain = config.domain
        self.config = config
        self.pubsub = pubsub
        self.tracker = tracker
        self.storage = storage
        self.auth = auth
        self.log = logging.getLogger(f"xmppd.host.{self.domain}")
        self.events = EventBus()
        self.events.declare(
            "session-bound",  # Session: a resource was bound
            "session-closed",  # Session: the session ended (cleanly or not)
            "presence-initial",  # Session: its first available presence was broadcast
            "account-deleted",  # AccountDeleted: remove everything stored for the account
            "account-created",  # AccountCreated: a new account was stored (xmppd/admin.py)
            "config-reloaded",  # ConfigReloaded: SIGHUP applied live options (xmppd/reload.py)
        )
        # Stream features offered after authentication (stream management, CSI...).
        self.stream_features: list[Element] = []
        # Top-level non-stanza elements (`<r/>`, `<enable/>`, `<active/>`) by Clark tag. Called
        # before and after binding (stream resumption comes before bind); unknown ones close
        # the stream with unsupported-stanza-type.
        self.nonza_handlers: dict[str, NonzaHandler] = {}
        # APIs modules offer each other by name ("roster", "blocking"...): small and typed.
        self.services: dict[str, Any] = {}
        self.presence_topic = presence_topic(self.domain)
        self.disco_features: set[str] = set()
        self.disco_identities: set[tuple[str, str, str]] = {("server", "im", "xmppd")}
        self.disco_items: dict[str, str] = {}  # JID -> name (MUC service, upload, ...)
        self.account_features: set[str] = set()  # disco#info of an account's bare JID
        self.account_identities: set[tuple[str, str, str]] = {("account", "registered", "")}
        # Local sessions by bare JID, then resource. Full-JID delivery goes through pubsub.
        self.sessions: dict[str, dict[str, Session]] = {}
        self.modules: list[Module] = []
        self.hosts: dict[str, Host] = {self.domain: self}  # every host of the server, by domain
        # Services with a domain of their own (conference.<domain>), shared like `hosts`: an
        # object with `domain` and an `events` bus the router fires `<kind>/<scope>` on.
        self.components: dict[str, Any] = {}
        # Cluster mode (xmppd/cluster.py): delivery to a full JID bound on another node.
        self.remote_delivery: Callable[[Host, str, Element], bool] | None = None
        # ... and to the account's interested sessions on the other nodes.
        self.remote_interested: Callable[[Host, str, Element], None] | None = None
        router.install(self)

    # ---- sessions ---------------------------------------------------------------------------

    def resources_of(self, bare: str) -> dict[str, Session]:
        return self.sessions.get(bare, {})

    def bind(self, session: Session, username: str, resource: str | None) -> JID:
        """Register a session under a full JID; an existing one with that JID is replaced."""
        bare = JID(username, self.domain, prepared=True)
        resources = self.sessions.setdefault(str(bare), {})
        if resource is None:
            resource = secrets.token_hex(6)
            while resource in resources:
                resource = secrets.token_hex(6)
        full = bare.with_resource(resource)
        old = resources.get(resource)
        if old is not None and old is not session:
            # RFC 6120 §7.7.2.2: the newer session wins, the older one gets <conflict/>.
            old.replaced()
        resources[resource] = session
        self.pubsub.subscribe(session_topic(str(full)), session)
        return full

    def unbind(self, session: Session) -> None:
        jid = session.jid
        if jid is None:
            return
        bare = str(jid.bare)
        resources = self.sessions.get(bare)
        if resources is not None and resources.get(jid.resource or "") is session:
            del resources[jid.resource or ""]
            if not resources:
                del self.sessions[bare]
            self.pubsub.unsubscribe(session_topic(str(jid)), session)

    def all_resources(self, bare: str) -> set[str]:
        """Resources bound to the account here and, in cluster mode, on every node."""
        names = set(self.resources_of(bare))
        names.update(m["resource"] for m in self.tracker.get_by_key(bound_topic(self.domain), bare))
        return names

    def available_resources(self, bare: str) -> list[dict]:
        """Tracker metas of the account's available resources (any node)."""
        return self.tracker.get_by_key(self.presence_topic, bare)

    # ---- routing ----------------------------------------------------------------------------

    async def route(self, origin: Session | None, stanza: Element) -> None:
        await router.route(self, origin, stanza)

    def deliver_to_full(self, full: str, stanza: Element) -> bool:
        """Hand a stanza to the session bound to `full` (on any node); False when there is none."""
        if self.pubsub.local_broadcast(session_topic(full), stanza) > 0:
            return True
        return self.remote_delivery is not None and self.remote_delivery(self, full, stanza)

    def deliver_to_interested(self, bare: str, stanza: Element) -> None:
        """To every session of the account that asked for its roster, on every node."""
        for session in list(self.resources_of(bare).values()):
            if session.interested:
                self.deliver_to_full(session.full, stanza)
        if self.remote_interested is not None:
            self.remote_interested(self, bare, stanza)
