"""The room configuration form (XEP-0045 §10.2): rendering, submission, refusals."""

from __future__ import annotations

import pytest

from xmppd.muc.config import RoomConfig, apply_submission, form
from xmppd.protocol.forms import FormError

P = "muc#roomconfig_"


def test_form_lists_every_field_with_current_values() -> None:
    x = form(RoomConfig(name="Lounge", persistent=True), max_users=100, max_history=50)
    values = {
        f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
        for f in x.findall("{jabber:x:data}field")
    }
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
    assert values[P + "roomname"] == ["Lounge"]
    assert values[P + "persistentroom"] == ["1"]
    assert values[P + "maxusers"] == ["100"]
    assert values["muc#maxhistoryfetch"] == ["20"]


def test_submission_changes_only_given_fields() -> None:
    old = RoomConfig(name="Old", moderated=True)
    new = apply_submission(old, {P + "roomname": ["New"], P + "whois": ["anyone"]}, 100, 50)
    assert (new.name, new.moderated, new.non_anonymous) == ("New", True, True)
    assert old.name == "Old"
    assert RoomConfig.from_doc({**new.to_doc(), "unknown": 1}) == new


@pytest.mark.parametrize(
    "values",
    [
        {P + "whois": ["everyone"]},
        {P + "allowpm": ["all"]},
        {P + "maxusers": ["101"]},
        {P + "maxusers": ["many"]},
        {"muc#maxhistoryfetch": ["51"]},
        {P + "membersonly": ["maybe"]},
        {P + "passwordprotectedroom": ["1"]},  # without a password
        {P + "roomname": ["a", "b"]},
    ],
)
def test_bad_submissions(values: dict[str, list[str]]) -> None:
    with pytest.raises(FormError):
        apply_submission(RoomConfig(), values, 100, 50)
