"""`xmppd import` / `xmppd export` (XEP-0227) through the CLI, checked by logging in with slixmpp.

The file below is written the way ejabberd's export_piefxis writes one: a main file with an
XInclude per host, the host file holding its users, SCRAM keys in the 'password' attribute as
"scram:StoredKey,ServerKey,Salt,IterationCount", offline messages and a pending subscription
request. (tests/interop/test_prosody_import.py imports a file made by a real Prosody.)
"""

from __future__ import annotations

import asyncio
import base64
import stat
from pathlib import Path

import pytest
import slixmpp
from lxml import etree
from slixmpp.xmlstream import ET
from support import Client, ServerProcess, connect, run

from auth.scram import derive_credentials

JULIET_PW = "Neither, fair saint"
ROMEO_PW = "plain-old-pw"


def ejabberd_scram(password: str) -> str:
    creds = derive_credentials("SHA-1", password, b"0123456789abcdef", 4096)
    fields = [creds.stored_key, creds.server_key, creds.salt]
    return "scram:" + ",".join(base64.b64encode(f).decode() for f in fields) + ",4096"


HOST_FILE = f"""<?xml version='1.0' encoding='UTF-8'?>
<host xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude' jid='localhost'>
  <user name='Juliet' password='{ejabberd_scram(JULIET_PW)}'>
    <offline-messages>
      <message xmlns='jabber:client' from='romeo@localhost/orchard' to='juliet@localhost'
               type='chat'><body>first</body>
        <delay xmlns='urn:xmpp:delay' from='localhost' stamp='2020-07-21T00:32:29Z'/></message>
      <message from='nurse@localhost/x' type='normal'><body>second</body></message>
    </offline-messages>
    <vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN></vCard>
    <query xmlns='jabber:iq:roster'>
      <item jid='romeo@localhost' name='Romeo' subscription='both'><group>Friends</group></item>
      <item jid='tybalt@localhost' subscription='none' ask='subscribe'/>
    </query>
    <query xmlns='jabber:iq:private'><prefs xmlns='x:prefs'><nick>Jules</nick></prefs></query>
    <presence xmlns='jabber:client' from='paris@localhost' to='juliet@localhost'
              type='subscribe'><status>marry me</status></presence>
  </user>
  <user name='romeo' password='{ROMEO_PW}'>
    <query xmlns='jabber:iq:roster'><item jid='juliet@localhost' subscription='both'/></query>
  </user>
</host>
"""
MAIN_FILE = """<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>
  <xi:include href='20240101-000000_localhost.xml'/>
</server-data>
"""


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ejabberd-export")
    (base / "20240101-000000.xml").write_text(MAIN_FILE)
    (base / "20240101-000000_localhost.xml").write_text(HOST_FILE)
    return base


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, export_dir: Path) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("import"))
    result = server.cli("import", str(export_dir / "20240101-000000.xml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "imported 2 accounts, 3 roster items, 1 subscription requests, 1 vCards, "
        "1 private XML namespaces, 2 offline messages\n"
    )
    server.start()
    yield server
    server.stop()


def manual(client: slixmpp.ClientXMPP) -> None:
    client.auto_authorize = None
    client.auto_subscribe = False


def roster_of(client: slixmpp.ClientXMPP) -> dict[str, tuple[str, bool, str, list[str]]]:
    roster = client.client_roster
    return {
        jid: (r["subscription"], r["pending_out"], r["name"], sorted(r["groups"]))
        for jid in roster
        if (r := roster[jid])["subscription"] != "remove" and jid != client.boundjid.bare
    }


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "PLAIN"])
def test_ejabberd_scram_password_logs_in(imported: ServerProcess, mech: str) -> None:
    async def scenario() -> None:
        kw = {"mech": mech, "presence": False}  # offline messages stay for the test below
        client = await connect(imported, "juliet", mech, password=JULIET_PW, **kw)
        await client.close()
        with pytest.raises(PermissionError):
            await connect(imported, "juliet", "bad", password="wrong", **kw)

    run(scenario())


def test_plaintext_password_gets_every_hash(imported: ServerProcess) -> None:
    async def scenario() -> None:
        client = await connect(imported, "romeo", "r", password=ROMEO_PW, mech="SCRAM-SHA-256")
        await client.get_roster()
        assert roster_of(client) == {"juliet@localhost": ("both", False, "", [])}
        await client.close()

    run(scenario())


def test_user_data_imported(imported: ServerProcess) -> None:
    async def scenario() -> None:
        juliet = await connect(
            imported, "juliet", "d", password=JULIET_PW, mech="SCRAM-SHA-1", presence=False
        )
        manual(juliet)
        await juliet.get_roster()
        assert roster_of(juliet) == {
            "romeo@localhost": ("both", False, "Romeo", ["Friends"]),
            "tybalt@localhost": ("none", True, "", []),
        }
        juliet.send_presence()
        first, second = await juliet.next_message(), await juliet.next_message()
        assert (first["body"], second["body"]) == ("first", "second")
        assert first["from"] == "romeo@localhost/orchard"
        assert first.xml.find("{urn:xmpp:delay}delay").get("stamp") == "2020-07-21T00:32:29Z"
        assert second.xml.find("{urn:xmpp:delay}delay") is not None
        request = await asyncio.wait_for(_subscribe_from(juliet, "paris@localhost"), 10)
        assert request["status"] == "marry me"
        juliet.register_plugin("xep_0054")
        vcard = await juliet.plugin["xep_0054"].get_vcard("juliet@localhost", cached=False)
        assert vcard["vcard_temp"]["FN"] == "Juliet Capulet"
        iq = juliet.Iq(stype="get")
        iq.append(
            ET.fromstring("<query xmlns='jabber:iq:private'><prefs xmlns='x:prefs'/></query>")
        )
        result = await iq.send(timeout=10)
        assert result.xml.findtext(".//{x:prefs}nick") == "Jules"
        await juliet.close()

    run(scenario())


def test_existing_accounts_are_left_alone(imported: ServerProcess, export_dir: Path) -> None:
    result = imported.cli("import", str(export_dir / "20240101-000000.xml"))
    assert result.returncode == 0, result.stderr
    assert "skipped juliet@localhost: the account exists already" in result.stdout
    assert "imported 0 accounts" in result.stdout

    async def scenario() -> None:  # the password is still the one from the first import
        client = await connect(imported, "romeo", "again", password=ROMEO_PW)
        await client.close()

    run(scenario())


def test_export_then_import_round_trip(imported: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "export.xml"
    result = imported.cli("export", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # XEP-0227 §8: it holds credentials
    doc = etree.parse(str(out)).getroot()
    assert doc.tag == "{urn:xmpp:pie:0}server-data"
    romeo = doc.find("{urn:xmpp:pie:0}host/{urn:xmpp:pie:0}user[@name='romeo']")
    mechanisms = [c.get("mechanism") for c in romeo.iter("{urn:xmpp:pie:0#scram}scram-credentials")]
    assert mechanisms == ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert romeo.get("password") is None  # never known, never written

    (tmp_path / "fresh").mkdir()
    fresh = ServerProcess(tmp_path / "fresh")
    result = fresh.cli("import", str(out))
    assert result.returncode == 0, result.stderr
    fresh.start()
    try:

        async def scenario() -> None:
            romeo = await connect(fresh, "romeo", "r", password=ROMEO_PW, mech="SCRAM-SHA-512")
            await romeo.get_roster()
            assert roster_of(romeo) == {"juliet@localhost": ("both", False, "", [])}
            juliet = await connect(
                fresh, "juliet", "r", password=JULIET_PW, mech="SCRAM-SHA-1", presence=False
            )
            manual(juliet)
            await juliet.get_roster()
            assert roster_of(juliet)["romeo@localhost"] == ("both", False, "Romeo", ["Friends"])
            juliet.send_presence()  # the request is still pending after the move
            request = await asyncio.wait_for(_subscribe_from(juliet, "paris@localhost"), 10)
            assert request["status"] == "marry me"
            for c in (romeo, juliet):
                await c.close()

        run(scenario())
    finally:
        fresh.stop()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (MAIN_FILE.replace("20240101-000000_localhost.xml", "../../etc/passwd"), "leaves"),
        (MAIN_FILE.replace("20240101-000000_localhost.xml", "/etc/passwd"), "relative"),
        (HOST_FILE.replace("jid='localhost'", "jid='elsewhere.example'"), "not served"),
        ("<server-data xmlns='jabber:client'/>", "not XEP-0227"),
        ("<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>", "line 1"),
    ],
    ids=["xinclude-escape", "xinclude-absolute", "unknown-host", "wrong-root", "not-xml"],
)
def test_bad_files_import_nothing(tmp_path: Path, content: str, problem: str) -> None:
    server = ServerProcess(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "export.xml").write_text(content)
    result = server.cli("import", str(tmp_path / "in" / "export.xml"))
    assert result.returncode == 65, result.stdout + result.stderr
    assert problem in result.stderr
    assert "imported" not in result.stdout
    # Nothing was written: the account can still be created.
    assert server.cli("adduser", "juliet@localhost", "--password", "x").returncode == 0


async def _subscribe_from(client: Client, sender: str) -> slixmpp.Presence:
    while True:
        presence = await client.presences.get()
        if presence["from"].bare == sender and presence["type"] == "subscribe":
            return presence


def test_limits_apply_to_imported_data(tmp_path: Path) -> None:
    """What a client could not store is not imported either; the rest is."""
    long_name = "n" * 300  # roster max_name_length is 256
    (tmp_path / "in.xml").write_text(
        f"""<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='u' password='p'>
        <query xmlns='jabber:iq:roster'>
          <item jid='a@localhost' name='{long_name}' subscription='both'/>
          <item jid='b@localhost' subscription='from'/>
          <item jid='not a jid@' subscription='both'/>
        </query>
        <query xmlns='jabber:iq:private'><x xmlns='jabber:iq:roster'/></query>
        </user></host></server-data>"""
    )
    server = ServerProcess(tmp_path)
    result = server.cli("import", str(tmp_path / "in.xml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported 1 accounts, 1 roster items\n"
    assert "a@localhost skipped: name or groups over the limits" in result.stderr
    assert "roster item 'not a jid@' skipped" in result.stderr
