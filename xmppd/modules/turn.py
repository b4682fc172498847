"""XEP-0215 External Service Discovery: the STUN/TURN server, with time-limited credentials.

Credentials follow the TURN REST API (draft-uberti-behave-turn-rest-00 §2.2), the scheme coturn
(`use-auth-secret`, `static-auth-secret`) and other TURN servers check without asking us:
username `<expiry unix time>:<bare JID>`, password base64(HMAC-SHA1(shared secret, username)).
The TURN server only needs the same secret; a leaked password stops working at its expiry.
Only accounts of this host get services (an anonymous request would hand out relay access).

`host.services["turn"]` is a `Turn`: the same services and credentials as WebRTC ICE servers,
for the JSON channels' `ice_servers` request (xmppd/channels/calls.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from ..module import Implements, Module, ModuleSpec
from ..options import ConfigError, Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, reply, sub
from ..router import StanzaEvent


def credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str, int]:
    """(username, password, expiry) per the TURN REST API shared-secret scheme."""
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode(), expiry


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def services(options: dict[str, Any]) -> list[dict[str, str]]:
    """Every service the configuration names, without credentials."""
    host, found = options["host"], []
    for transport in options["transports"]:
        if options["stun"]:
            found.append({"type": "stun", "transport": transport, "port": str(options["port"])})
        found.append({"type": "turn", "transport": transport, "port": str(options["port"])})
    if options["tls_port"]:
        found.append({"type": "turns", "transport": "tcp", "port": str(options["tls_port"])})
    for item in found:
        item["host"] = host
    return found


def ice_url(item: dict[str, str]) -> str:
    """A service as a WebRTC ICE server URL (RFC 7064, RFC 7065)."""
    host = f"[{item['host']}]" if ":" in item["host"] else item["host"]
    url = f"{item['type']}:{host}:{item['port']}"
    return url if item["type"] == "stun" else f"{url}?transport={item['transport']}"


class Turn:
    """The configured services with fresh credentials for one user, as XEP-0215 elements or as
    a WebRTC `RTCConfiguration.iceServers` list."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.relay_only: bool = options["relay_only"]

    def services(self) -> list[dict[str, str]]:
        return services(self.options)

    def credentials(self, user: str) -> tuple[str, str, int]:
        return credentials(self.options["secret"], user, self.options["ttl"])

    def service_element(self, parent: Element, item: dict[str, str], user: str) -> None:
        attrs = dict(item)
        if item["type"] in ("turn", "turns"):
            username, password, expiry = self.credentials(user)
            attrs |= {"username": username, "password": password, "expires": _stamp(expiry)}
            attrs["restricted"] = "1"
        sub(parent, ns.EXTDISCO, "service", **attrs)

    def ice_servers(self, user: str) -> dict[str, Any]:
        """`{"ice_servers": [...], "expires", "relay_only"}`: one STUN entry, one TURN entry
        (every turn: and turns: URL shares the credentials)."""
        username, password, expiry = self.credentials(user)
        found = self.services()
        stun = list(dict.fromkeys(ice_url(s) for s in found if s["type"] == "stun"))
        turn = [ice_url(s) for s in found if s["type"] != "stun"]
        servers: list[dict[str, Any]] = [{"urls": stun}] if stun else []
        servers.append({"urls": turn, "username": username, "credential": password})
        return {"ice_servers": servers, "expires": expiry, "relay_only": self.relay_only}


def load(module: Module) -> None:
    options = module.options
    if not options["host"] or not options["secret"]:
        raise ConfigError("host and secret are required", "modules.turn")
    for transport in options["transports"]:
        if transport not in ("udp", "tcp"):
            raise ConfigError(f"unknown transport {transport!r}", "modules.turn.transports")
    host = module.host
    turn = host.services["turn"] = Turn(options)
    module.add_feature(ns.EXTDISCO)
    service_element = turn.service_element

    def local_user(event: StanzaEvent) -> str | None:
        sender = event.sender
        if sender is None or sender.domain != host.domain or not sender.local:
            return None
        return str(sender.bare)

    async def on_services(event: StanzaEvent) -> bool:
        user = local_user(event)
        if user is None:
            return await event.reply_error("forbidden", "only accounts of this server")
        wanted = event.stanza[0].get("type")
        result = reply(event.stanza)
        query = sub(result, ns.EXTDISCO, "services")
        if wanted:
            query.set("type", wanted)
        for item in services(options):
            if not wanted or item["type"] == wanted:
                service_element(query, item, user)
        return await event.reply(result)

    async def on_credentials(event: StanzaEvent) -> bool:
        """XEP-0215 §3.3: fresh credentials for one service."""
        user = local_user(event)
        if user is None:
            return await event.reply_error("forbidden", "only accounts of this server")
        asked = event.stanza[0].find(f"{{{ns.EXTDISCO}}}service")
        if asked is None:
            return await event.reply_error("bad-request", "name a <service/>")
        matches = [
            item
            for item in services(options)
            if item["host"] == asked.get("host")
            and item["type"] == asked.get("type")
            and item["type"] != "stun"
            and asked.get("port", item["port"]) == item["port"]
        ]
        if not matches:
            return await event.reply_error("item-not-found", "no such service")
        result = reply(event.stanza)
        service_element(sub(result, ns.EXTDISCO, "credentials"), matches[0], user)
        return await event.reply(result)

    module.hook_iq("get/host", ns.EXTDISCO, "services", on_services)
    module.hook_iq("get/host", ns.EXTDISCO, "credentials", on_credentials)


spec = ModuleSpec(
    name="turn",
    summary="STUN/TURN servers for calls (XEP-0215) with time-limited TURN REST credentials",
    load=load,
    options={
        "host": Option(str, "", "the TURN server's host name or address (required)"),
        "port": Option(int, 3478, "STUN/TURN port (UDP and TCP)", min=1, max=65535),
        "tls_port": Option(int, 0, "TURN over TLS port (turns:); 0: none", min=0, max=65535),
        "transports": Option(list, ["udp", "tcp"], "transports offered on `port`"),
        "stun": Option(bool, True, "list the server as a STUN service too"),
        "secret": Option(str, "", "shared secret, the TURN server's static-auth-secret (required)"),
        "ttl": Option(int, 86400, "seconds the credentials stay valid", min=60),
        "relay_only": Option(
            bool, False, "web calls use only the TURN relay (peers never see each other's address)"
        ),
    },
    implements=(Implements("XEP-0215", "1.0.0", note="TURN REST API credentials (shared secret)"),),
)
