"""XEP-0215 with a real coturn: the credentials the server hands out open a TURN allocation."""

from __future__ import annotations

import base64
import hmac
import secrets
import shutil
import time
from collections.abc import Iterator

import pytest
import slixmpp
from coturn import allocate, coturn
from slixmpp.xmlstream import ET
from support import ServerProcess, connect, run

from xmppd.config import DEFAULT_MODULES

EXTDISCO = "urn:xmpp:extdisco:2"
SECRET = "turn-" + secrets.token_hex(8)
pytestmark = pytest.mark.skipif(not shutil.which("turnserver"), reason="coturn not installed")


@pytest.fixture(scope="module")
def turn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with coturn(tmp_path_factory.mktemp("coturn"), SECRET) as port:
        yield port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, turn_port: int) -> Iterator[ServerProcess]:
    enabled = ", ".join(f'"{m}"' for m in [*DEFAULT_MODULES, "turn"])
    extra = (
        f'[modules]\nenabled = [{enabled}]\n[modules.turn]\nhost = "127.0.0.1"\n'
        f'port = {turn_port}\nsecret = "{SECRET}"\nttl = 600\n'
    )
    proc = ServerProcess(tmp_path_factory.mktemp("turn"), extra_config=extra)
    proc.add_user("alice", "alice-secret")
    proc.start()
    yield proc
    proc.stop()


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
    server: ServerProcess, turn_port: int
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
    assert (turn["host"], turn["port"]) == ("127.0.0.1", str(turn_port))
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice@localhost" and 590 <= int(expiry) - time.time() <= 610
    assert turn["password"] == turn_rest(turn["username"])
    assert allocate(turn_port, turn["username"], turn["password"]) == ("ok", 0)
    # the check is real: a wrong password and expired credentials are refused by coturn
    assert allocate(turn_port, turn["username"], turn["password"][:-2] + "AA") == ("error", 401)
    old = f"{int(time.time()) - 10}:alice@localhost"
    assert allocate(turn_port, old, turn_rest(old)) == ("error", 401)


def test_ice_servers_share_the_xep_0215_services_and_credentials() -> None:
    """What the JSON channels hand web clients (`ice_servers`) is the same configuration and
    the same TURN REST credentials, as WebRTC URLs (RFC 7064/7065), IPv6 hosts bracketed."""
    from xmppd.modules.turn import Turn

    options = {
        "host": "2001:db8::7", "port": 3478, "tls_port": 5349, "transports": ["udp", "tcp"],
        "stun": True, "secret": SECRET, "ttl": 600, "relay_only": True,
    }  # fmt: skip
    out = Turn(options).ice_servers("bob@localhost")
    stun, turn = out["ice_servers"]
    assert stun == {"urls": ["stun:[2001:db8::7]:3478"]}
    assert turn["urls"] == [
        "turn:[2001:db8::7]:3478?transport=udp",
        "turn:[2001:db8::7]:3478?transport=tcp",
        "turns:[2001:db8::7]:5349?transport=tcp",
    ]
    assert turn["username"] == f"{out['expires']}:bob@localhost"
    assert turn["credential"] == turn_rest(turn["username"])
    assert 590 <= out["expires"] - time.time() <= 610 and out["relay_only"] is True
    no_stun = Turn({**options, "host": "turn.example", "stun": False}).ice_servers("bob@localhost")
    assert [s["urls"][0] for s in no_stun["ice_servers"]] == [
        "turn:turn.example:3478?transport=udp"
    ]
