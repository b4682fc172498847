"""XEP-0215 with a real coturn: the credentials the server hands out open a TURN allocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
from slixmpp.xmlstream import ET
from support import ServerProcess, connect, free_port, run

from xmppd.config import DEFAULT_MODULES

EXTDISCO = "urn:xmpp:extdisco:2"
SECRET = "turn-" + secrets.token_hex(8)
COOKIE = 0x2112A442
pytestmark = pytest.mark.skipif(not shutil.which("turnserver"), reason="coturn not installed")


def free_udp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base: Path = tmp_path_factory.mktemp("coturn")
    port = free_udp_port()
    proc = subprocess.Popen(
        ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1"]
        + [f"--listening-port={port}", "--relay-ip=127.0.0.1", "--realm=localhost"]
        + ["--use-auth-secret", f"--static-auth-secret={SECRET}", "--simple-log"]
        + [f"--log-file={base / 'turn.log'}", f"--pidfile={base / 'turn.pid'}"]
        + [f"--userdb={base / 'turndb'}", "--no-stdout-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while allocate(port, "probe", "wrong")[0] == "timeout":  # answers anything once it is up
        assert time.monotonic() < deadline and proc.poll() is None, "coturn did not start"
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, coturn: int) -> Iterator[ServerProcess]:
    enabled = ", ".join(f'"{m}"' for m in [*DEFAULT_MODULES, "turn"])
    extra = (
        f'[modules]\nenabled = [{enabled}]\n[modules.turn]\nhost = "127.0.0.1"\n'
        f'port = {coturn}\nsecret = "{SECRET}"\nttl = 600\n'
    )
    proc = ServerProcess(tmp_path_factory.mktemp("turn"), extra_config=extra)
    proc.add_user("alice", "alice-secret")
    proc.start()
    yield proc
    proc.stop()


# ---- a TURN client (RFC 5766 Allocate with RFC 5389 long-term credentials) -------------------


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def message(kind: int, txid: bytes, attrs: bytes, key: bytes | None = None) -> bytes:
    if key is None:
        return struct.pack("!HHI", kind, len(attrs), COOKIE) + txid + attrs
    header = struct.pack("!HHI", kind, len(attrs) + 24, COOKIE) + txid
    mac = hmac.new(key, header + attrs, hashlib.sha1).digest()
    return header + attrs + attribute(0x0008, mac)


def parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, _cookie = struct.unpack("!HHI", data[:8])
    attrs, pos = {}, 20
    while pos < 20 + length:
        a_kind, a_len = struct.unpack("!HH", data[pos : pos + 4])
        attrs[a_kind] = data[pos + 4 : pos + 4 + a_len]
        pos += 4 + a_len + (-a_len % 4)
    return kind, attrs


def allocate(port: int, username: str, password: str) -> tuple[str, int]:
    """("ok", 0) when the relay was allocated, ("error", code) or ("timeout", 0)."""
    transport = attribute(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT: UDP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.connect(("127.0.0.1", port))
        try:
            sock.send(message(0x0003, os.urandom(12), transport))
            kind, attrs = parse(sock.recv(2048))
            assert kind == 0x0113, hex(kind)  # 401 with the realm and a nonce
            realm, nonce = attrs[0x0014], attrs[0x0015]
            key = hashlib.md5(f"{username}:".encode() + realm + f":{password}".encode()).digest()
            attrs_out = (
                transport
                + attribute(0x0006, username.encode())
                + attribute(0x0014, realm)
                + attribute(0x0015, nonce)
            )
            sock.send(message(0x0003, os.urandom(12), attrs_out, key))
            kind, attrs = parse(sock.recv(2048))
        except (TimeoutError, ConnectionRefusedError):  # not listening yet
            return "timeout", 0
    if kind == 0x0103:
        return "ok", 0
    code = attrs.get(0x0009, b"\0\0\0\0")
    return "error", code[2] * 100 + code[3]


def turn_rest(username: str) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), username.encode(), "sha1").digest()).decode()


# ---- tests -----------------------------------------------------------------------------------


async def ask(client: slixmpp.ClientXMPP, child: ET.Element) -> ET.Element:
    iq = client.make_iq_get(ito="localhost")
    iq.append(child)
    result = await iq.send(timeout=5)
    return result.xml


def services_query(kind: str | None = None) -> ET.Element:
    el = ET.Element(f"{{{EXTDISCO}}}services")
    if kind:
        el.set("type", kind)
    return el


def test_the_turn_credentials_open_an_allocation_on_coturn(
    server: ServerProcess, coturn: int
) -> None:
    async def scenario() -> list[dict[str, str]]:
        alice = await connect(server, "alice", "call", password="alice-secret")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert EXTDISCO in info["disco_info"]["features"]
        found = (await ask(alice, services_query())).find(f"{{{EXTDISCO}}}services")
        turn_only = (await ask(alice, services_query("turn"))).find(f"{{{EXTDISCO}}}services")
        assert {s.get("type") for s in turn_only} == {"turn"}
        cred = ET.Element(f"{{{EXTDISCO}}}credentials")
        ET.SubElement(cred, f"{{{EXTDISCO}}}service", host="127.0.0.1", type="turn")
        fresh = (await ask(alice, cred)).find(f"{{{EXTDISCO}}}credentials")
        assert fresh[0].get("username") and fresh[0].get("password")
        await alice.close()
        return [dict(s.attrib) for s in found]

    services = run(scenario())
    assert {(s["type"], s["transport"]) for s in services} == {
        ("stun", "udp"),
        ("stun", "tcp"),
        ("turn", "udp"),
        ("turn", "tcp"),
    }
    turn = next(s for s in services if s["type"] == "turn" and s["transport"] == "udp")
    assert (turn["host"], turn["port"]) == ("127.0.0.1", str(coturn))
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice@localhost" and 590 <= int(expiry) - time.time() <= 610
    assert turn["password"] == turn_rest(turn["username"])
    assert allocate(coturn, turn["username"], turn["password"]) == ("ok", 0)
    # the check is real: a wrong password and expired credentials are refused by coturn
    assert allocate(coturn, turn["username"], turn["password"][:-2] + "AA") == ("error", 401)
    old = f"{int(time.time()) - 10}:alice@localhost"
    assert allocate(coturn, old, turn_rest(old)) == ("error", 401)
