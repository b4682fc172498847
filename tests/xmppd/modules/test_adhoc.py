"""XEP-0050 ad-hoc commands and the XEP-0133 admin set, driven by slixmpp's xep_0050 plugin
against a real server: admins see and run them, others get `forbidden`; multi-step dialogues,
cancel, and the XEP-0050 errors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from support import HEADER, Client, RawClient, ServerProcess, connect, run

COMMANDS = "http://jabber.org/protocol/commands"
ADMIN = "http://jabber.org/protocol/admin"
USERS = ["admin", "alice", "bob", "carol", "dave", "erin", "frank"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("adhoc"), "")
    text = proc.config_path.read_text().replace(
        "demo_account = false", 'demo_account = false\nadmins = ["admin@localhost"]'
    )
    proc.config_path.write_text(text)
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login(server: ServerProcess, user: str, password: str | None = None, **kw: Any) -> Client:
    client = await connect(server, user, "r", password=password or f"{user}-pw", **kw)
    client.register_plugin("xep_0004")
    client.register_plugin("xep_0050")
    return client


def form(client: Client, **values: Any) -> Any:
    submitted = client.plugin["xep_0004"].make_form(ftype="submit")
    submitted.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
    for var, value in values.items():
        submitted.add_field(
            var=var.replace("_", "-") if var == "password_verify" else var, value=value
        )
    return submitted


async def command(client: Client, name: str, action: str = "execute", **kw: Any) -> Any:
    node = name if ":" in name else f"{ADMIN}#{name}"
    iq = await client.plugin["xep_0050"].send_command("localhost", node, action=action, **kw)
    return iq["command"]


async def error_of(request: Any) -> tuple[str, str]:
    """(stanza error condition, XEP-0050 condition or '')."""
    with pytest.raises(IqError) as raised:
        await request
    error = raised.value.iq.xml.find("{jabber:client}error")
    app = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{COMMANDS}}}")]
    return raised.value.iq["error"]["condition"], (app[0] if app else "")


def fields_of(result: Any) -> dict[str, Any]:
    fields = result["form"]["fields"]
    return {f["var"]: f["value"] for f in (fields.values() if isinstance(fields, dict) else fields)}


def note(result: Any) -> str:
    return result.xml.findtext(f"{{{COMMANDS}}}note") or ""


def test_admin_discovers_the_commands_others_see_none(server: ServerProcess) -> None:
    async def main() -> None:
        admin, alice = await login(server, "admin"), await login(server, "alice")
        info = await admin.plugin["xep_0030"].get_info(jid="localhost")
        assert COMMANDS in info["disco_info"]["features"]
        items = await admin.plugin["xep_0050"].get_commands("localhost")
        nodes = {i[1] for i in items["disco_items"]["items"]}
        for name in (
            "add-user",
            "delete-user",
            "disable-user",
            "reenable-user",
            "announce",
            "change-user-password",
            "end-user-session",
            "get-online-users-num",
            "get-online-users-list",
            "set-motd",
            "edit-motd",
            "delete-motd",
        ):
            assert f"{ADMIN}#{name}" in nodes
        mine = await alice.plugin["xep_0050"].get_commands("localhost")
        theirs = {i[1] for i in mine["disco_items"]["items"]}
        assert not any(n.startswith(ADMIN) for n in theirs)
        assert "urn:xmppd:commands:strangers" in theirs  # every user's own setting
        node_info = await admin.plugin["xep_0030"].get_info(
            jid="localhost", node=f"{ADMIN}#add-user"
        )
        assert ("automation", "command-node", None, "Add a User") in node_info["disco_info"][
            "identities"
        ]
        assert await error_of(
            alice.plugin["xep_0030"].get_info(jid="localhost", node=f"{ADMIN}#add-user")
        ) == ("forbidden", "")
        assert await error_of(command(alice, "add-user")) == ("forbidden", "")
        assert await error_of(command(alice, "get-online-users-num")) == ("forbidden", "")
        await asyncio.gather(admin.close(), alice.close())

    run(main())


def test_add_user_and_change_password(server: ServerProcess) -> None:
    async def main() -> None:
        admin = await login(server, "admin")
        first = await command(admin, "add-user")
        assert first["status"] == "executing" and first["sessionid"]
        assert first.xml.find(f"{{{COMMANDS}}}actions/{{{COMMANDS}}}complete") is not None
        sid = first["sessionid"]
        values = {"accountjid": "newbie@localhost", "password": "pw-1", "password_verify": "other"}
        assert await error_of(
            command(admin, "add-user", "complete", sessionid=sid, payload=form(admin, **values))
        ) == ("bad-request", "bad-payload")
        values["password_verify"] = "pw-1"
        done = await command(
            admin, "add-user", "complete", sessionid=sid, payload=form(admin, **values)
        )
        assert done["status"] == "completed" and "created newbie@localhost" in note(done)
        newbie = await login(server, "newbie", "pw-1")
        await newbie.close()
        # change-user-password: the old password stops working
        sid = (await command(admin, "change-user-password"))["sessionid"]
        payload = form(admin, accountjid="newbie@localhost", password="pw-2")
        done = await command(
            admin, "change-user-password", "complete", sessionid=sid, payload=payload
        )
        assert "changed" in note(done)
        with pytest.raises(PermissionError):
            await login(server, "newbie", "pw-1")
        newbie = await login(server, "newbie", "pw-2")
        await asyncio.gather(admin.close(), newbie.close())

    run(main())


def test_delete_user_is_two_steps_with_prev_and_confirmation(server: ServerProcess) -> None:
    async def main() -> None:
        admin = await login(server, "admin")
        bob = await login(server, "bob")
        first = await command(admin, "delete-user")
        sid = first["sessionid"]
        assert first.xml.find(f"{{{COMMANDS}}}actions").get("execute") == "next"
        # complete is not offered on the first step
        assert await error_of(
            command(
                admin,
                "delete-user",
                "complete",
                sessionid=sid,
                payload=form(admin, accountjids=["bob@localhost"]),
            )
        ) == ("bad-request", "bad-action")
        second = await command(
            admin,
            "delete-user",
            "next",
            sessionid=sid,
            payload=form(admin, accountjids=["bob@localhost"]),
        )
        assert second["status"] == "executing"
        actions = second.xml.find(f"{{{COMMANDS}}}actions")
        assert actions.find(f"{{{COMMANDS}}}prev") is not None
        back = await command(admin, "delete-user", "prev", sessionid=sid)
        fields = fields_of(back)
        assert fields["accountjids"] == ["bob@localhost"]  # what was submitted is kept
        await command(
            admin,
            "delete-user",
            "next",
            sessionid=sid,
            payload=form(admin, accountjids=["bob@localhost"]),
        )
        done = await command(
            admin, "delete-user", "complete", sessionid=sid, payload=form(admin, confirm="1")
        )
        assert done["status"] == "completed" and "deleted: bob@localhost" in note(done)
        await asyncio.wait_for(bob.disconnected_event.wait(), 5)
        with pytest.raises(PermissionError):
            await login(server, "bob")
        # the session is gone once completed
        assert await error_of(
            command(
                admin,
                "delete-user",
                "next",
                sessionid=sid,
                payload=form(admin, accountjids=["x@localhost"]),
            )
        ) == ("bad-request", "bad-sessionid")
        await admin.close()

    run(main())


def sasl_plain(server: ServerProcess, user: str, password: str) -> bytes:
    raw = RawClient(server)
    try:
        raw.starttls()
        raw.send(HEADER)
        raw.read_until("</stream:features>")
        raw.take()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return raw.read_until("</failure>")
    finally:
        raw.close()


def test_disable_ends_sessions_and_refuses_login_until_reenabled(server: ServerProcess) -> None:
    async def main() -> None:
        admin, carol = await login(server, "admin"), await login(server, "carol")
        sid = (await command(admin, "disable-user"))["sessionid"]
        payload = form(admin, accountjids=["carol@localhost"], reason="spamming")
        done = await command(admin, "disable-user", "complete", sessionid=sid, payload=payload)
        assert "disabled: carol@localhost" in note(done)
        await asyncio.wait_for(carol.disconnected_event.wait(), 5)
        assert carol.stream_errors == ["not-authorized"]
        with pytest.raises(PermissionError):  # SCRAM
            await login(server, "carol")
        assert sasl_plain(server, "carol", "carol-pw").count(b"<account-disabled/>") == 1
        assert b"the account is disabled: spamming" in sasl_plain(server, "carol", "carol-pw")
        # only a proven password learns that the account is disabled
        assert b"<not-authorized/>" in sasl_plain(server, "carol", "wrong")
        sid = (await command(admin, "reenable-user"))["sessionid"]
        payload = form(admin, accountjids=["carol@localhost"])
        done = await command(admin, "reenable-user", "complete", sessionid=sid, payload=payload)
        assert "re-enabled: carol@localhost" in note(done)
        carol = await login(server, "carol")
        await asyncio.gather(admin.close(), carol.close())

    run(main())


def test_online_users_end_session_and_announce(server: ServerProcess) -> None:
    async def main() -> None:
        admin = await login(server, "admin")
        dave, erin = await login(server, "dave"), await login(server, "erin")
        count = await command(admin, "get-online-users-num")
        assert count["status"] == "completed"
        values = fields_of(count)
        assert int(values["onlineusersnum"]) >= 3
        sid = (await command(admin, "get-online-users-list"))["sessionid"]
        listed = await command(
            admin,
            "get-online-users-list",
            "complete",
            sessionid=sid,
            payload=form(admin, max_items="none"),
        )
        jids = fields_of(listed)["onlineuserjids"]
        assert {"admin@localhost", "dave@localhost", "erin@localhost"} <= {str(j) for j in jids}
        sid = (await command(admin, "announce"))["sessionid"]
        payload = form(admin, subject="Maintenance", announcement=["Back at 5", "thanks"])
        done = await command(admin, "announce", "complete", sessionid=sid, payload=payload)
        assert "sent to" in note(done)
        for client in (dave, erin):
            msg = await client.next_message()
            assert msg["type"] == "headline" and msg["from"] == "localhost"
            assert msg["subject"] == "Maintenance" and msg["body"] == "Back at 5\nthanks"
        sid = (await command(admin, "end-user-session"))["sessionid"]
        done = await command(
            admin,
            "end-user-session",
            "complete",
            sessionid=sid,
            payload=form(admin, accountjids=["erin@localhost"]),
        )
        assert "ended: erin@localhost" in note(done)
        await asyncio.wait_for(erin.disconnected_event.wait(), 5)
        assert erin.stream_errors == ["policy-violation"]
        await asyncio.gather(admin.close(), dave.close())

    run(main())


def test_message_of_the_day(server: ServerProcess) -> None:
    async def main() -> None:
        admin = await login(server, "admin")
        sid = (await command(admin, "set-motd"))["sessionid"]
        await command(
            admin, "set-motd", "complete", sessionid=sid, payload=form(admin, motd=["Be nice"])
        )
        frank = await login(server, "frank")
        msg = await frank.next_message()
        assert msg["type"] == "headline" and msg["body"] == "Be nice"
        await frank.close()
        edit = await command(admin, "edit-motd")
        assert fields_of(edit)["motd"] == ["Be nice"]
        await command(admin, "edit-motd", "cancel", sessionid=edit["sessionid"])
        done = await command(admin, "delete-motd")
        assert done["status"] == "completed"
        frank = await login(server, "frank")
        with pytest.raises(asyncio.TimeoutError):
            await frank.next_message(timeout=1)
        await asyncio.gather(admin.close(), frank.close())

    run(main())


def test_xep0050_errors_and_cancel(server: ServerProcess) -> None:
    async def main() -> None:
        admin, alice = await login(server, "admin"), await login(server, "alice")
        assert await error_of(command(admin, f"{ADMIN}#no-such")) == ("item-not-found", "")
        assert await error_of(command(admin, "add-user", "fly")) == (
            "bad-request",
            "malformed-action",
        )
        assert await error_of(command(admin, "add-user", "next", sessionid="nope")) == (
            "bad-request",
            "bad-sessionid",
        )
        first = await command(admin, "add-user")
        canceled = await command(admin, "add-user", "cancel", sessionid=first["sessionid"])
        assert canceled["status"] == "canceled"
        assert await error_of(
            command(
                admin,
                "add-user",
                "complete",
                sessionid=first["sessionid"],
                payload=form(admin, accountjid="x@localhost", password="p"),
            )
        ) == ("bad-request", "bad-sessionid")
        # a session belongs to the resource that opened it
        again = await command(admin, "add-user")
        assert await error_of(
            command(alice, "urn:xmppd:commands:strangers", "complete", sessionid=again["sessionid"])
        ) == ("bad-request", "bad-sessionid")
        # no form where one is required
        assert await error_of(
            command(admin, "add-user", "complete", sessionid=again["sessionid"])
        ) == ("bad-request", "bad-payload")
        await asyncio.gather(admin.close(), alice.close())

    run(main())
