"""The ban commands of modules/adhoc_bans.py driven from slixmpp's xep_0050 plugin: an admin bans
an account, a room entry and a network with a duration or an end time, lists and lifts them;
the effects are those of the ban service (the admin API reads the same bans); others are
refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apisupport import api_config, client, sasl_answer, wait_for_http
from slixmpp.exceptions import IqError
from support import PASSWORDS, Client, RawClient, ServerProcess, connect, run

BANS = "urn:xmppd:admin:bans"
ROOM = "hall@conference.localhost"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path, extra_config=api_config(requests_per_second=1000.0, burst=1000))
    text = proc.config_path.read_text().replace(
        "demo_account = false", 'demo_account = false\nadmins = ["alice@localhost"]'
    )
    proc.config_path.write_text(text)
    for user, password in PASSWORDS.items():
        proc.add_user(user, password)
    proc.start()
    wait_for_http(proc)
    yield proc
    proc.stop()


async def login(server: ServerProcess, user: str) -> Client:
    client_ = await connect(server, user, "r")
    client_.register_plugin("xep_0004")
    client_.register_plugin("xep_0050")
    return client_


async def run_command(client_: Client, name: str, **values: Any) -> Any:
    """Execute, then complete with `values` (multi-valued fields take lists)."""
    adhoc, node = client_.plugin["xep_0050"], f"{BANS}#{name}"
    first = (await adhoc.send_command("localhost", node))["command"]
    if not values:
        return first
    form = client_.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=BANS)
    for var, value in values.items():
        form.add_field(var=var, value=value)
    done = await adhoc.send_command(
        "localhost", node, action="complete", sessionid=first["sessionid"], payload=form
    )
    return done["command"]


def note(result: Any) -> str:
    return result.xml.findtext("{http://jabber.org/protocol/commands}note") or ""


def fields_of(result: Any) -> dict[str, Any]:
    fields = result["form"]["fields"]
    return {f["var"]: f["value"] for f in (fields.values() if isinstance(fields, dict) else fields)}


def test_ban_commands(server: ServerProcess) -> None:
    async def main() -> None:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        items = await alice.plugin["xep_0050"].get_commands("localhost")
        nodes = {i[1] for i in items["disco_items"]["items"]}
        assert {f"{BANS}#{n}" for n in ("ban-account", "ban-from-room", "ban-address")} <= nodes
        assert {f"{BANS}#list-bans", f"{BANS}#lift-ban"} <= nodes
        mine = await bob.plugin["xep_0050"].get_commands("localhost")
        assert not any(i[1].startswith(BANS) for i in mine["disco_items"]["items"])
        with pytest.raises(IqError) as refused:
            await bob.plugin["xep_0050"].send_command("localhost", f"{BANS}#ban-account")
        assert refused.value.iq["error"]["condition"] == "forbidden"

        # Server-wide, for a duration: bob's session ends, his login is refused with the reason.
        done = await run_command(
            alice, "ban-account", accountjids=["bob@localhost"], duration="3s", reason="flood"
        )
        assert "banned bob@localhost until 20" in note(done), note(done)
        await asyncio.wait_for(bob.disconnected_event.wait(), 5)
        assert "policy-violation" in bob.stream_errors
        refused_login = sasl_answer(server, "bob", PASSWORDS["bob"])
        assert "<account-disabled/>" in refused_login and "flood" in refused_login

        # From a room, until an end time: carol becomes an outcast; the API sees the same ban.
        with client(server) as ops:
            assert ops.get("/users/alice@localhost").json()["role"] == "admin"  # roles in the API
            assert ops.post("/rooms", json={"jid": ROOM, "owners": ["alice@localhost"]}).is_success
            done = await run_command(
                alice,
                "ban-from-room",
                roomjid=ROOM,
                accountjids=["carol@localhost"],
                until="2099-01-01T00:00:00Z",
            )
            assert f"banned {ROOM} carol@localhost until 2099-01-01T00:00:00Z" in note(done)
            affiliations = ops.get(f"/rooms/{ROOM}/affiliations").json()["affiliations"]
            assert {"jid": "carol@localhost", "affiliation": "outcast"} in affiliations
            # An address ban, and a bad one in the same form.
            done = await run_command(alice, "ban-address", addresses="127.0.0.2\nnot-an-ip")
            assert "banned 127.0.0.2/32 until lifted" in note(done)
            assert "failed: not-an-ip" in note(done)
            assert sorted(b["kind"] for b in ops.get("/bans").json()["bans"]) == [
                "account",
                "ip",
                "room",
            ]
        banned = RawClient(server, source="127.0.0.2")
        assert b"connections from your address are banned" in banned.read_to_close()

        listed = fields_of(await run_command(alice, "list-bans"))["bans"]
        listed = listed if isinstance(listed, list) else listed.splitlines()
        assert any("account bob@localhost until" in line and "(flood)" in line for line in listed)
        await asyncio.sleep(3.2)  # bob's ban has ended
        assert "<success" in sasl_answer(server, "bob", PASSWORDS["bob"])

        # Lifting: the form offers the bans in force; the room ban lifted ends the outcast.
        first = await alice.plugin["xep_0050"].send_command("localhost", f"{BANS}#lift-ban")
        fields = first["command"]["form"]["fields"]
        fields = fields.values() if isinstance(fields, dict) else fields
        (chooser,) = [f for f in fields if f["var"] == "bans"]
        ids = [o["value"] for o in chooser["options"]]
        assert len(ids) == 2
        form = alice.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=BANS)
        form.add_field(var="bans", ftype="list-multi", value=ids)
        done = await alice.plugin["xep_0050"].send_command(
            "localhost",
            f"{BANS}#lift-ban",
            action="complete",
            sessionid=first["command"]["sessionid"],
            payload=form,
        )
        lines = note(done["command"]).splitlines()
        assert len(lines) == 2 and all(line.startswith("lifted ") for line in lines)
        with client(server) as ops:
            assert ops.get("/bans").json()["bans"] == []
            affiliations = ops.get(f"/rooms/{ROOM}/affiliations").json()["affiliations"]
            assert affiliations == [{"jid": "alice@localhost", "affiliation": "owner"}]

        # Bad ends are refused with bad-request before anything is stored.
        for values in (
            {"duration": "soon"},
            {"until": "2001-01-01T00:00:00Z"},
            {"duration": "1h", "until": "2099-01-01T00:00:00Z"},
        ):
            with pytest.raises(IqError) as bad:
                await run_command(alice, "ban-account", accountjids=["bob@localhost"], **values)
            assert bad.value.iq["error"]["condition"] == "bad-request"
        assert fields_of(await run_command(alice, "list-bans"))["bans"] in (["none"], "none")
        await alice.close()

    run(main())
