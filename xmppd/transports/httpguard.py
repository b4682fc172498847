"""What the web listener trusts and how much it lets one address hold.

* `framing_problem`: RFC 9112 §6.1/§6.3 request framing checks h11 leaves to us. A request with
  both Content-Length and Transfer-Encoding, or Content-Length twice, is how a request hides
  inside another one's body behind a proxy that reads the framing differently: refused.
* `own_origins`: the server's own web origins, from the configuration only (served domains,
  `http.public_url`, listener ports and addresses), never from the request's Host header, which
  a DNS-rebinding page controls.
* `client_address`: the peer, or for a configured trusted proxy the right-most address in
  `Forwarded`/`X-Forwarded-For` that is not itself a trusted proxy.
* `Pending`: connections still in their TLS handshake or request head, per address. They are
  the cheap part of a slowloris, so they get a small budget of their own; when an address is
  over it, its oldest pending connection is dropped for the newcomer. A real client finishes
  its head in milliseconds and moves on to the per-address connection budget of requests and
  sessions, so a slow sender behind the same NAT cannot lock it out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from ..protocol.websocket import normalize_origin

if TYPE_CHECKING:
    from ..config import Config

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FOR = re.compile(r'for\s*=\s*"?([^";,]*)"?', re.IGNORECASE)


def framing_problem(head: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why this request's body framing is ambiguous, or None. `head` is the raw request head
    (h11 folds repeated identical Content-Length headers into one, so count them in the bytes)."""
    names = [name.lower() for name, _ in headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        return "Content-Length and Transfer-Encoding together are not allowed"
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) > 1 or any(b"," in v for v in lengths):
        return "Content-Length must be given once"
    return None


def own_origins(config: Config) -> set[str]:
    """Origins of pages this server (or its reverse proxy) serves, normalized."""
    http = config.http
    names = [h.domain for h in config.hosts]
    names += [i for i in http["interfaces"] + http["plain_interfaces"] if i != "*"]
    out: set[str] = set()
    for name in names:
        host = f"[{name}]" if ":" in name else name
        out.add(f"https://{host}")  # the domain's port 443, through a proxy
        if http["tls_port"]:
            out.add(f"https://{host}:{http['tls_port']}")
        if http["port"]:
            out.add(f"http://{host}:{http['port']}")
    if http["public_url"]:
        out.add(http["public_url"])
    return {o for o in (normalize_origin(x) for x in out) if o}


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # 192.0.2.1:4711
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str, headers: dict[str, str], trusted: list[Network]) -> str:
    """The address to count and log this request under."""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    if "forwarded" in headers:
        hops = _FOR.findall(headers["forwarded"])
    else:
        hops = headers.get("x-forwarded-for", "").split(",")
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # garbage (or an obfuscated name) where an address should be
        if not any(address in net for net in trusted):
            return str(address)
    return peer


def _is_trusted(peer: str, trusted: list[Network]) -> bool:
    address = _address(peer)
    return address is not None and any(address in net for net in trusted)


class Pending:
    """Connections of each address still in their TLS handshake or request head."""

    __slots__ = ("limit", "evicted", "_scopes", "_trusted")

    def __init__(self, limit: int, trusted: list[Network]) -> None:
        self.limit = limit
        self.evicted = 0
        self._scopes: dict[str, dict[trio.CancelScope, None]] = {}
        self._trusted = trusted

    @contextmanager
    def waiting(self, peer: str) -> Iterator[trio.CancelScope]:
        """Run the block as one pending connection of `peer`; cancelled if evicted."""
        scope = trio.CancelScope()
        if _is_trusted(peer, self._trusted):
            with scope:  # a proxy's connections carry many clients: its own limits apply
                yield scope
            return
        scopes = self._scopes.setdefault(peer, {})
        if len(scopes) >= self.limit:
            oldest = next(iter(scopes))
            del scopes[oldest]
            oldest.cancel()
            self.evicted += 1
        scopes[scope] = None
        try:
            with scope:
                yield scope
        finally:
            scopes.pop(scope, None)
            if not scopes:
                self._scopes.pop(peer, None)

    def count(self, peer: str) -> int:
        return len(self._scopes.get(peer, ()))
