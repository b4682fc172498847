from __future__ import annotations

import pytest
from lxml import etree

from xmppd.protocol import namespaces as ns
from xmppd.protocol.forms import Field, FormError, boolean, build, parse_submission, single

MUC_CONFIG = "http://jabber.org/protocol/muc#roomconfig"


def submitted(xml: str) -> etree._Element:
    return etree.fromstring(xml)


def test_build_puts_form_type_first_with_options_and_required() -> None:
    form = build(
        MUC_CONFIG,
        [
            Field("muc#roomconfig_roomname", label="Name", values=["Lobby"]),
            Field(
                "muc#roomconfig_whois",
                "list-single",
                values=["moderators"],
                options=[("Moderators", "moderators"), ("Anyone", "anyone")],
                required=True,
            ),
        ],
        title="Configure",
    )
    xml = etree.tostring(form).decode()
    assert form.get("type") == "form" and form.tag == f"{{{ns.DATA_FORMS}}}x"
    fields = form.findall(f"{{{ns.DATA_FORMS}}}field")
    assert [f.get("var") for f in fields][0] == "FORM_TYPE"
    assert fields[0].get("type") == "hidden" and fields[0].findtext("*") == MUC_CONFIG
    assert '<option label="Anyone"><value>anyone</value></option>' in xml
    assert "<required/>" in xml
    assert "<title>Configure</title>" in xml


def test_parse_submission_reads_values_and_checks_form_type() -> None:
    x = submitted(
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{MUC_CONFIG}</value></field>"
        "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        "<field var='muc#roomconfig_roomadmins'><value>a@x</value><value>b@x</value></field>"
        "<field var='empty'/></x>"
    )
    values = parse_submission(x, MUC_CONFIG)
    assert values == {
        "muc#roomconfig_persistentroom": ["1"],
        "muc#roomconfig_roomadmins": ["a@x", "b@x"],
        "empty": [],
    }
    assert boolean(values, "muc#roomconfig_persistentroom") is True
    assert boolean(values, "missing", default=True) is True
    assert single(values, "empty", "dflt") == "dflt"
    with pytest.raises(FormError, match="one value"):
        single(values, "muc#roomconfig_roomadmins")
    with pytest.raises(FormError, match="FORM_TYPE"):
        parse_submission(x, "urn:xmpp:mam:2")


@pytest.mark.parametrize(
    "xml, words",
    [
        ("<x xmlns='jabber:x:data' type='form'/>", "submitted form"),
        ("<x xmlns='jabber:x:data' type='submit'><field><value>1</value></field></x>", "var"),
        (
            "<x xmlns='jabber:x:data' type='submit'><field var='a'/><field var='a'/></x>",
            "twice",
        ),
        ("<x xmlns='urn:other' type='submit'/>", "jabber:x:data"),
    ],
)
def test_malformed_submissions_are_refused(xml: str, words: str) -> None:
    with pytest.raises(FormError, match=words):
        parse_submission(submitted(xml))


def test_boolean_refuses_other_words() -> None:
    with pytest.raises(FormError, match="boolean"):
        boolean({"b": ["yes"]}, "b")


def test_unknown_field_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Field("x", "colour")
