"""Test helpers: a real xmppd process on free loopback ports, real XMPP clients.

The server runs as `python -m xmppd serve -c <file>` in a subprocess (the way an admin runs it),
with its own data directory. slixmpp clients run under asyncio inside the test; raw-socket
clients (`RawClient`) send hand-made bytes for the bad-input cases.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import slixmpp

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


# Tests log in wrongly on purpose from 127.0.0.1 all the time: exempt it from the login
# throttle (xmppd/throttle.py). Its own tests log in from 127.0.0.2 and 127.0.0.3.
LOGIN_EXEMPT_LOOPBACK = 'exempt = ["127.0.0.1"]'
# Tests of transport floods (slow consumers, full queues) send more from one account than the
# per-account message rate allows (modules/abuse.py): they lift it with this table.
NO_ACCOUNT_RATE = "[modules.abuse]\nmessages_per_second = 1000000\nmessage_burst = 1000000\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are picked (one after the other,
    the kernel may hand the same port out twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class ServerProcess:
    """One xmppd process with its own config and data directory."""

    def __init__(
        self,
        base: Path,
        extra_config: str = "",
        http_config: str = "",
        login_config: str = LOGIN_EXEMPT_LOOPBACK,
        host: str = "127.0.0.1",
        launcher: tuple[str, ...] = (),
    ) -> None:
        # host: the address every listener binds and clients dial; launcher: a command the
        # server runs under (`ip netns exec NAME` puts it in a network namespace).
        self.base = base
        self.host = host
        self.launcher = launcher
        self.data_dir = base / "data"
        # c2s, direct TLS, the web listener (plain and HTTPS; lines in [http])
        self.port, self.tls_port, self.http_port, self.https_port = free_ports(4)
        self.config_path = base / "xmppd.toml"
        self.log_path = base / "xmppd.log"
        self.config_path.write_text(
            f"""
[server]
domain = "localhost"
data_dir = "{self.data_dir}"
log_level = "debug"
demo_account = false

[limits.login]
{login_config}

[http]
interfaces = ["{host}"]
plain_interfaces = ["{host}"]
port = {self.http_port}
tls_port = {self.https_port}
{http_config}

[c2s]
interfaces = ["{host}"]
port = {self.port}
direct_tls_port = {self.tls_port}
{extra_config}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> str:
        return str(self.data_dir / "certs" / "self-signed.crt")

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xmppd", *args, "-c", str(self.config_path)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.base,
            timeout=60,
        )

    def add_user(self, user: str, password: str) -> None:
        result = self.cli("adduser", f"{user}@localhost", "--password", password)
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "xmppd", "serve", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xmppd exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                socket.create_connection((self.host, self.tls_port), timeout=0.2).close()
                socket.create_connection((self.host, self.https_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("xmppd did not start listening in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---- slixmpp --------------------------------------------------------------------------------


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that collects what it receives into queues."""

    def __init__(self, jid: str, password: str, mech: str | None, ca_file: str) -> None:
        super().__init__(jid, password, sasl_mech=mech)
        self.ca_certs = ca_file
        for plugin in ("xep_0030", "xep_0092", "xep_0199", "xep_0202"):
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.started: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        self.disconnected_event = asyncio.Event()
        self.stream_errors: list[str] = []
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", self._on_auth_failed)
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("disconnected", lambda _e: self.disconnected_event.set())
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))

    def _on_start(self, _event: object) -> None:
        if not self.started.done():
            self.started.set_result(True)

    def _on_auth_failed(self, _event: object) -> None:
        if not self.started.done():
            self.started.set_exception(PermissionError("authentication failed"))

    async def next_message(self, timeout: float = 5) -> slixmpp.Message:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        self.disconnect()
        try:
            await asyncio.wait_for(self.disconnected_event.wait(), 5)
        except TimeoutError:
            self.abort()


async def connect(
    server: ServerProcess,
    user: str,
    resource: str | None = None,
    *,
    password: str | None = None,
    mech: str | None = "SCRAM-SHA-256",
    presence: bool = True,
    direct_tls: bool = False,
    timeout: float = 10,
) -> Client:
    jid = f"{user}@localhost" + (f"/{resource}" if resource else "")
    client = Client(jid, password or PASSWORDS.get(user, "x"), mech, server.ca_file)
    # slixmpp tries direct TLS first by default; say which one this test wants.
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    client.connect(server.host, server.tls_port if direct_tls else server.port)
    try:
        await asyncio.wait_for(client.started, timeout)
    except BaseException:
        client.abort()
        raise
    if presence:
        client.send_presence()
    return client


# ---- raw sockets ------------------------------------------------------------------------------

HEADER = (
    "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>"
)


class BindRefused(Exception):
    """The server answered the bind request with an error (the reply is args[0])."""


class RawClient:
    """Blocking socket client for hand-made bytes; TLS verified against the server's cert."""

    def __init__(
        self, server: ServerProcess, port: int | None = None, source: str | None = None
    ) -> None:
        """`source`: the local address to connect from (any of 127/8 on Linux)."""
        self.server = server
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port or server.port),
            timeout=10,
            source_address=(source, 0) if source else None,
        )
        self.buffer = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_until(self, marker: bytes | str, timeout: float = 10) -> bytes:
        """Read until `marker` shows up or the peer closes; returns everything read so far."""
        marker = marker.encode() if isinstance(marker, str) else marker
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} in {self.buffer[-2000:]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        return self.buffer

    def read_to_close(self, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return self.buffer
            if not chunk:
                return self.buffer
            self.buffer += chunk

    def take(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data

    def starttls(self) -> None:
        self.send(HEADER)
        self.read_until("</stream:features>")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until("<proceed")
        self.take()
        context = ssl.create_default_context(cafile=self.server.ca_file)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def login(self, user: str, password: str | None = None, resource: str = "raw") -> str:
        """STARTTLS, SASL PLAIN, bind; returns the bound full JID."""
        self.starttls()
        self.send(HEADER)
        self.read_until("</stream:features>")
        self.take()
        token = base64.b64encode(f"\0{user}\0{password or PASSWORDS[user]}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        assert b"<success" in self.read_until("success")
        self.take()
        self.send(HEADER)
        self.read_until("</stream:features>")
        self.take()
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        reply = self.read_until("</iq>")
        self.take()
        if b"<jid>" not in reply:
            raise BindRefused(reply)
        start = reply.index(b"<jid>") + 5
        return reply[start : reply.index(b"</jid>")].decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def run(coro: object) -> object:
    """Run an asyncio scenario from a (sync) test."""
    return asyncio.run(coro)  # type: ignore[arg-type]
