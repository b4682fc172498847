"""A real Prosody (Debian's package) makes a XEP-0227 export; xmppd imports it: everyone logs
in with the old password and finds their contacts, groups and pending requests.

Prosody runs from a throwaway config in tmp (its own data dir, a free port, no TLS), slixmpp
clients build the rosters through it, then `prosody-migrator` converts its internal storage
into a xep0227 store (one file per account) which `xmppd import` reads.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import slixmpp
from support import Client, ServerProcess, connect, free_port, run

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("prosody", "prosodyctl", "prosody-migrator")),
    reason="Prosody is installed by scripts/test",
)

PASSWORDS = {"alice": "alice-old-pw", "bob": "bob-old-pw", "carol": "carol-old-pw", "dave": "dv!"}


def prosody_config(base: Path, port: int) -> Path:
    user = getpass.getuser()
    config = base / "prosody.cfg.lua"
    config.write_text(
        f"""
run_as_root = true -- only when the tests run as root; otherwise prosody_user is us
prosody_user = "{user}"
pidfile = "{base}/prosody.pid"
data_path = "{base}/data"
certificates = "{base}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admin_socket = "{base}/admin.sock"
log = {{ info = "{base}/prosody.log" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping" }}
VirtualHost "localhost"
"""
    )
    (base / "data").mkdir()
    return config


def prosodyctl(config: Path, *args: str) -> None:
    result = subprocess.run(
        ["prosodyctl", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def manual(client: slixmpp.ClientXMPP) -> None:
    """Subscription requests wait for an answer (slixmpp approves them by default)."""
    client.auto_authorize = None
    client.auto_subscribe = False


async def prosody_client(port: int, user: str) -> Client:
    client = Client(f"{user}@localhost/old", PASSWORDS[user], "SCRAM-SHA-1", "")
    manual(client)
    client.enable_direct_tls = False
    client.plugin["feature_mechanisms"].unencrypted_scram = True  # loopback to a throwaway Prosody
    client.connect("127.0.0.1", port)
    await asyncio.wait_for(client.started, 10)
    await client.get_roster()
    client.send_presence()
    return client


async def populate(port: int) -> None:
    """Rosters made by Prosody itself, through the protocol."""
    alice, bob, dave = [await prosody_client(port, u) for u in ("alice", "bob", "dave")]

    async def settled(*clients: Client) -> None:
        # Prosody handles one session's stanzas in order: a ping answered means done.
        for c in clients:
            await c.plugin["xep_0199"].send_ping("localhost", timeout=10)

    await alice.update_roster("bob@localhost", name="Bobby", groups=["Friends"])
    await alice.update_roster("carol@localhost", name="Carol C", groups=["Work", "Friends"])
    alice.send_presence(pto="bob@localhost", ptype="subscribe")
    alice.send_presence(pto="carol@localhost", ptype="subscribe")  # carol is offline
    await settled(alice)
    bob.send_presence(pto="alice@localhost", ptype="subscribed")
    bob.send_presence(pto="alice@localhost", ptype="subscribe")
    await settled(bob)
    alice.send_presence(pto="bob@localhost", ptype="subscribed")
    dave.send_presence(pto="alice@localhost", ptype="subscribe")  # alice never answers
    await settled(alice, dave)
    for c in (alice, bob, dave):
        await c.close()


def migrator_command(base: Path, out: Path) -> list[str]:
    """Prosody 0.12's xep0227 store writes into the global data path, fixed in the script at
    build time (CFG_DATADIR, /var/lib/prosody): run a copy that points it at `out`."""
    script = Path(shutil.which("prosody-migrator") or "").read_text()
    interpreter = script.splitlines()[0].removeprefix("#!").split()
    lines = [
        f"CFG_DATADIR='{out}';" if line.startswith("CFG_DATADIR=") else line
        for line in script.splitlines()
    ]
    assert f"CFG_DATADIR='{out}';" in lines
    copy = base / "prosody-migrator"
    copy.write_text("\n".join(lines) + "\n")
    return [*interpreter, str(copy)]


def wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prosody exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("prosody did not listen in time")


@pytest.fixture(scope="module")
def prosody_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("prosody")
    port = free_port()
    config = prosody_config(base, port)
    for user, password in PASSWORDS.items():
        prosodyctl(config, "register", user, "localhost", password)
    proc = subprocess.Popen(
        ["prosody", "--config", str(config), "-F"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, base / "prosody.log")
        run(populate(port))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = base / "export"
    migrator = base / "migrator.cfg.lua"
    migrator.write_text(
        f"""
hosts = {{ ["localhost"] = {{ "accounts", "roster", "vcard", "private" }} }}
input {{ type = "internal"; path = "{base}/data"; hosts = hosts }}
output {{ type = "xep0227"; path = "{out}" }}
"""
    )
    out.mkdir()
    result = subprocess.run(
        [*migrator_command(base, out), "--root", f"--config={migrator}", "input", "output"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.glob("*.xml")) == [f"{u}@localhost.xml" for u in PASSWORDS]
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, prosody_export: Path) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("xmppd-import"))
    result = server.cli("import", str(prosody_export))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported 4 accounts" in result.stdout
    server.start()
    yield server
    server.stop()


def roster_of(client: slixmpp.ClientXMPP) -> dict[str, tuple[str, bool, str, list[str]]]:
    roster = client.client_roster
    return {
        jid: (r["subscription"], r["pending_out"], r["name"], sorted(r["groups"]))
        for jid in roster
        if (r := roster[jid])["subscription"] != "remove" and jid != client.boundjid.bare
    }


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "PLAIN"])
def test_old_passwords_log_in(imported: ServerProcess, mech: str) -> None:
    async def scenario() -> None:
        # No presence: at an initial presence alice's pending request would reach carol, whose
        # slixmpp approves it by default, and test_rosters_intact expects it still pending.
        kw = {"password": PASSWORDS["carol"], "mech": mech, "presence": False}
        client = await connect(imported, "carol", mech, **kw)
        await client.close()
        with pytest.raises(PermissionError):
            await connect(imported, "carol", "wrong", password="not-it", mech=mech)

    run(scenario())


def test_rosters_intact(imported: ServerProcess) -> None:
    async def scenario() -> None:
        # mech=None: slixmpp picks SCRAM-SHA-256 first, fails (no such keys yet), then SHA-1.
        kw = {"mech": None, "presence": False}
        alice = await connect(imported, "alice", "r", password=PASSWORDS["alice"], **kw)
        manual(alice)
        await alice.get_roster()
        alice.send_presence()
        assert roster_of(alice) == {
            "bob@localhost": ("both", False, "Bobby", ["Friends"]),
            "carol@localhost": ("none", True, "Carol C", ["Friends", "Work"]),
        }
        # dave's unanswered request comes again at login (RFC 6121 §3.1.3).
        presence = await asyncio.wait_for(_subscribe_from(alice, "dave@localhost"), 10)
        assert presence["type"] == "subscribe"
        bob = await connect(imported, "bob", "r", password=PASSWORDS["bob"], mech="SCRAM-SHA-1")
        await bob.get_roster()
        assert roster_of(bob) == {"alice@localhost": ("both", False, "", [])}
        carol = await connect(imported, "carol", "r", password=PASSWORDS["carol"], presence=False)
        manual(carol)
        await carol.get_roster()
        assert roster_of(carol) == {}
        carol.send_presence()
        await asyncio.wait_for(_subscribe_from(carol, "alice@localhost"), 10)
        # Subscriptions work on: bob sees alice come online, as 'both' means.
        alice.send_presence(pstatus="moved")
        await asyncio.wait_for(_available_from(bob, "alice@localhost", "moved"), 10)
        for c in (alice, bob, carol):
            await c.close()

    run(scenario())


def test_plain_login_adds_the_other_hashes(imported: ServerProcess) -> None:
    """Prosody keeps SCRAM-SHA-1 only; after one PLAIN login SCRAM-SHA-256 works too."""

    async def scenario() -> None:
        kw = {"password": PASSWORDS["dave"]}
        with pytest.raises(PermissionError):
            await connect(imported, "dave", "a", mech="SCRAM-SHA-256", **kw)
        client = await connect(imported, "dave", "b", mech="PLAIN", **kw)
        await client.close()
        client = await connect(imported, "dave", "c", mech="SCRAM-SHA-256", **kw)
        await client.close()

    run(scenario())


async def _subscribe_from(client: Client, sender: str) -> slixmpp.Presence:
    while True:
        presence = await client.presences.get()
        if presence["from"].bare == sender and presence["type"] == "subscribe":
            return presence


async def _available_from(client: Client, sender: str, status: str) -> slixmpp.Presence:
    while True:
        presence = await client.presences.get()
        if presence["from"].bare == sender and presence["status"] == status:
            return presence
