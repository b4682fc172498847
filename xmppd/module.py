"""What a feature module declares (`ModuleSpec`) and what it gets to work with (`Module`).

A module file defines `spec = ModuleSpec(...)` with its option schema and the specifications it
implements, and a `load(module)` function that hooks events. The loader validates the module's
`[modules.<name>]` table against the schema; `docs/compliance.md` is generated from the specs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import Handler
from .options import Schema

if TYPE_CHECKING:
    from .host import Host, NonzaHandler
    from .protocol.stanza import Element
    from .storage.base import ArchiveStore, KeyValueStore, MapStore


@dataclass(frozen=True, slots=True)
class Implements:
    spec: str  # "XEP-0199", "RFC 6120"
    version: str = ""
    status: str = "complete"  # complete | partial
    note: str = ""


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    name: str
    summary: str
    load: Callable[[Module], None]
    options: Schema = field(default_factory=dict)
    implements: tuple[Implements, ...] = ()
    depends: tuple[str, ...] = ()


class Module:
    """The facade a loaded module uses: hooks, options, disco, storage, sending."""

    def __init__(self, host: Host, spec: ModuleSpec, options: dict[str, Any]) -> None:
        self.host = host
        self.spec = spec
        self.name = spec.name
        self.options = options
        self.log = host.log.getChild(spec.name)

    def hook(self, event: str, handler: Handler, priority: float = 0) -> None:
        self.host.events.hook(event, handler, priority)

    def hook_iq(self, types_scopes: str, namespace: str, child: str, handler: Handler) -> None:
        """`hook_iq("get/host get/bare", ns.PING, "ping", fn)` hooks each type/scope pair."""
        for pair in types_scopes.split():
            type_, scope = pair.split("/")
            self.hook(f"iq-{type_}/{scope}/{namespace}:{child}", handler)

    def add_feature(self, var: str) -> None:
        self.host.disco_features.add(var)

    def add_identity(self, category: str, type_: str, name: str = "") -> None:
        self.host.disco_identities.add((category, type_, name))

    def hook_nonza(self, namespace: str, name: str, handler: NonzaHandler) -> None:
        """Handle a top-level non-stanza element such as XEP-0198 `<r/>`."""
        self.host.nonza_handlers[f"{{{namespace}}}{name}"] = handler

    def add_stream_feature(self, feature: Element) -> None:
        """A stream feature offered to clients of this host after authentication."""
        self.host.stream_features.append(feature)

    def open_keyval(self, store: str) -> KeyValueStore:
        return self.host.storage.keyval(store)

    def open_map(self, store: str) -> MapStore:
        return self.host.storage.map(store)

    def open_archive(self, store: str) -> ArchiveStore:
        return self.host.storage.archive(store)

    async def send(self, stanza: Element) -> None:
        """Route a stanza the module built (from the server, not from a client)."""
        await self.host.route(None, stanza)
