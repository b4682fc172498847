"""A minimal, cheap XMPP c2s client session for load generation (asyncio, raw bytes).

Why not slixmpp: the load generator has one core and must stay far below it while holding
thousands of sessions and tens of thousands of messages per second. So this client does no XML
parsing at all: during login it waits for known closing tags with a regex, and while chatting it
only scans received bytes for `<body>` payloads. That is only safe because we control what is
sent: bodies are decimal send timestamps, nothing else is routed to these accounts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import ssl
import time

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

# Closing tags the login steps wait for. Features may come prefixed (stream:) or not.
FEATURES_END = re.compile(rb"</(?:stream:)?features>|<(?:stream:)?features\s*/>")
PROCEED = re.compile(rb"<proceed[^>]*>")
CHALLENGE = re.compile(rb"<challenge[^>]*>([^<]*)</challenge>")
SUCCESS = re.compile(rb"<success[^>]*/>|<success[^>]*>([^<]*)</success>")
BIND_RESULT = re.compile(rb"<iq[^>]*>.*?</iq>|<iq[^>]*/>", re.S)
JID_IN_BIND = re.compile(rb"<jid>([^<]+)</jid>")
FAILURE = re.compile(rb"<failure|<stream:error|</stream:stream>|type=['\"]error['\"]")
BODY = re.compile(rb"<body>(\d+)</body>")
MECHANISMS = re.compile(rb"<mechanism>([^<]+)</mechanism>")

HASHLIB_NAMES = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}

# (hash, password, salt, iterations) -> (client_key, stored_key, server_key). All accounts of a
# benchmark share one password and salt, so the load generator runs PBKDF2 once, not per login.
_KEY_CACHE: dict[tuple[str, str, bytes, int], tuple[bytes, bytes, bytes]] = {}


class LoginError(Exception):
    pass


def scram_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> tuple[bytes, ...]:
    key = (hash_name, password, salt, iterations)
    keys = _KEY_CACHE.get(key)
    if keys is None:
        algo = HASHLIB_NAMES[hash_name]
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = hashlib.new(algo, client_key).digest()
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        keys = _KEY_CACHE[key] = (client_key, stored_key, server_key)
    return keys


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class ScramClient:
    """Client side of RFC 5802 without channel binding (gs2 header `n,,`)."""

    __slots__ = ("hash_name", "username", "password", "nonce", "first_bare", "server_sig")

    def __init__(self, hash_name: str, username: str, password: str):
        self.hash_name = hash_name
        self.username = username
        self.password = password
        self.nonce = base64.b64encode(os.urandom(15)).decode()
        self.first_bare = f"n={username},r={self.nonce}"
        self.server_sig = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise LoginError("server nonce does not extend ours")
        client_key, stored_key, server_key = scram_keys(
            self.hash_name, self.password, salt, iterations
        )
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        algo = HASHLIB_NAMES[self.hash_name]
        signature = hmac.new(stored_key, auth_message, algo).digest()
        self.server_sig = hmac.new(server_key, auth_message, algo).digest()
        proof = base64.b64encode(_xor(client_key, signature)).decode()
        return f"{without_proof},p={proof}".encode()

    def check_success(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(self.server_sig)
        if server_final and not hmac.compare_digest(server_final, expected):
            raise LoginError("server signature mismatch")


class Session(asyncio.Protocol):
    """One c2s connection. `login()` is a coroutine; after it, received bodies feed `stats`."""

    __slots__ = (
        "transport",
        "buf",
        "waiter",
        "pattern",
        "chatting",
        "stats",
        "jid",
        "closed",
        "lost",
    )

    def __init__(self, stats: ChatStats):
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[re.Match[bytes]] | None = None
        self.pattern: re.Pattern[bytes] | None = None
        self.chatting = False
        self.stats = stats
        self.jid = ""
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(LoginError(f"connection lost: {exc}"))
        if self.chatting:
            self.stats.lost += 1

    def data_received(self, data: bytes) -> None:
        if self.chatting:
            self._chat_data(data)
            return
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self._check_waiter()

    def eof_received(self) -> bool | None:
        return None

    # -- login ---------------------------------------------------------------------------------
    def _check_waiter(self) -> None:
        assert self.pattern is not None and self.waiter is not None
        match = self.pattern.search(self.buf)
        if match is not None:
            self.buf = self.buf[match.end() :]
            self.waiter.set_result(match)
        elif FAILURE.search(self.buf):
            self.waiter.set_exception(LoginError(self.buf[:300].decode(errors="replace")))

    async def expect(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        self.pattern = pattern
        self.waiter = asyncio.get_running_loop().create_future()
        self._check_waiter()
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def send(self, text: str | bytes) -> None:
        assert self.transport is not None
        self.transport.write(text.encode() if isinstance(text, str) else text)

    async def login(
        self,
        domain: str,
        username: str,
        password: str,
        *,
        tls: ssl.SSLContext | None,
        mechanism: str = "SCRAM-SHA-1",
        resource: str = "r",
        presence: bool = True,
    ) -> None:
        header = STREAM_HEADER.format(domain=domain)
        self.send(header)
        await self.expect(FEATURES_END)
        if tls is not None:
            self.send(f"<starttls xmlns='{NS_TLS}'/>")
            await self.expect(PROCEED)
            loop = asyncio.get_running_loop()
            self.transport = await loop.start_tls(  # type: ignore[assignment]
                self.transport,
                self,
                tls,
                server_hostname=domain,  # type: ignore[arg-type]
            )
            self.buf = b""
            self.send(header)
            await self.expect(FEATURES_END)
        if mechanism == "PLAIN":  # directory (LDAP) accounts: the server binds as the user
            plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>")
            await self.expect(SUCCESS)
        else:
            scram = ScramClient(mechanism.removeprefix("SCRAM-"), username, password)
            first = base64.b64encode(scram.first()).decode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{first}</auth>")
            challenge = await self.expect(CHALLENGE)
            final = scram.final(base64.b64decode(challenge.group(1)))
            self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
            success = await self.expect(SUCCESS)
            scram.check_success(base64.b64decode(success.group(1) or b""))
        self.send(header)
        await self.expect(FEATURES_END)
        self.send(
            f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        result = await self.expect(BIND_RESULT)
        jid = JID_IN_BIND.search(result.group(0))
        if jid is None:
            raise LoginError(f"bind failed: {result.group(0)[:200]!r}")
        self.jid = jid.group(1).decode()
        if presence:
            self.send("<presence/>")

    # -- chatting ------------------------------------------------------------------------------
    def start_chat(self) -> None:
        # Whatever arrived since bind (own presence echoes) is not a message: drop it.
        self.buf = b""
        self.chatting = True

    def _chat_data(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"</message>")
        if end < 0:
            self.buf = buf
            return
        end += 10
        self.buf = buf[end:]
        now = time.monotonic_ns()
        latencies = self.stats.latencies_ns
        if buf.find(b"<error", 0, end) >= 0:
            self._chat_with_bounces(buf[:end], now)
            return
        for match in BODY.finditer(buf, 0, end):
            latencies.append(now - int(match.group(1)))

    def _chat_with_bounces(self, data: bytes, now: int) -> None:
        """A bounce (type='error', e.g. a rate limit) may carry the body back: count it as
        refused, never as a delivery."""
        latencies = self.stats.latencies_ns
        for message in data.split(b"</message>"):
            if b"<error" in message:
                self.stats.refused += 1
                continue
            for match in BODY.finditer(message):
                latencies.append(now - int(match.group(1)))

    async def close(self, timeout: float) -> bool:
        """Close the stream and wait for the server to close the TCP connection."""
        self.chatting = False
        if self.transport is None or self.closed:
            return True
        try:
            self.send("</stream:stream>")
        except Exception:  # noqa: BLE001 - a dead transport counts as closed
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
            return True
        except TimeoutError:
            self.transport.abort()
            return False


class ChatStats:
    """Shared by all sessions of one load generator process."""

    __slots__ = ("latencies_ns", "lost", "refused")

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.lost = 0
        self.refused = 0  # messages bounced with type='error' (e.g. a rate limit)


def unverified_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
