"""XEP-0227 file reading: the §5 XInclude layout, old namespace, SCRAM credentials."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from auth.scram import derive_credentials
from xmppd.porting import pie

XI = "xmlns:xi='http://www.w3.org/2001/XInclude'"


def test_nested_xinclude_layout_of_section_5(tmp_path: Path) -> None:
    """Main file -> host file -> user files in a subdirectory named after the host."""
    (tmp_path / "main.xml").write_text(
        f"<server-data xmlns='urn:xmpp:pie:0' {XI}><xi:include href='capulet.com.xml'/>"
        "</server-data>"
    )
    (tmp_path / "capulet.com.xml").write_text(
        f"<host xmlns='urn:xmpp:pie:0' {XI} jid='capulet.com'>"
        "<xi:include href='capulet.com/juliet.xml'/><xi:include href='capulet.com/nurse.xml'/>"
        "</host>"
    )
    (tmp_path / "capulet.com").mkdir()
    for name in ("juliet", "nurse"):
        (tmp_path / "capulet.com" / f"{name}.xml").write_text(
            f"<user xmlns='urn:xmpp:pie:0' name='{name}' password='pw-{name}'/>"
        )
    users = pie.read(tmp_path / "main.xml")
    assert [(host, u.get("name"), pie.plain_password(u)) for host, u in users] == [
        ("capulet.com", "juliet", "pw-juliet"),
        ("capulet.com", "nurse", "pw-nurse"),
    ]


def test_pre_draft_namespace_and_directory(tmp_path: Path) -> None:
    old = "http://www.xmpp.org/extensions/xep-0227.html#ns"
    for n in (1, 2):
        (tmp_path / f"u{n}.xml").write_text(
            f"<server-data xmlns='{old}'><host jid='h'><user name='u{n}'/></host></server-data>"
        )
    assert [u.get("name") for _, u in pie.read(tmp_path)] == ["u1", "u2"]


def test_scram_credentials_element(tmp_path: Path) -> None:
    creds = derive_credentials("SHA-256", "pw", b"salt-salt-salt!!", 5000)
    el = pie.scram_element("SHA-256", creds)
    user = pie.add_user(pie.add_host(pie.new_document(), "h"), "u")
    user.append(el)
    assert pie.scram_credentials(user) == {"SHA-256": creds}


@pytest.mark.parametrize(
    "child",
    [
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-MD5'/>",
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
        "<salt>c2FsdA==</salt><iter-count>0</iter-count><stored-key>AA==</stored-key>"
        "<server-key>AA==</server-key></scram-credentials>",
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
        "<salt>not base64!</salt><iter-count>4096</iter-count><stored-key>AA==</stored-key>"
        "<server-key>AA==</server-key></scram-credentials>",
    ],
    ids=["unknown-mechanism", "zero-iterations", "bad-base64"],
)
def test_bad_scram_credentials_refused(tmp_path: Path, child: str) -> None:
    (tmp_path / "f.xml").write_text(
        f"<server-data xmlns='urn:xmpp:pie:0'><host jid='h'><user name='u'>{child}</user>"
        "</host></server-data>"
    )
    [(_, user)] = pie.read(tmp_path / "f.xml")
    with pytest.raises(pie.PieError):
        pie.scram_credentials(user)


def test_ejabberd_scram_password_attribute() -> None:
    creds = derive_credentials("SHA-1", "pw", b"0123456789abcdef", 4096)
    b64 = [base64.b64encode(v).decode() for v in (creds.stored_key, creds.server_key, creds.salt)]
    user = pie.add_user(pie.add_host(pie.new_document(), "h"), "u")
    user.set("password", "scram:" + ",".join(b64) + ",4096")
    assert pie.scram_credentials(user) == {"SHA-1": creds}
    assert pie.plain_password(user) is None
