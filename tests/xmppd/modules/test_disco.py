"""Service discovery and the server's entity capabilities (XEP-0030, XEP-0115)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from lxml import etree
from slixmpp.exceptions import IqError
from support import PASSWORDS, RawClient, ServerProcess, connect, run

from xmppd.modules.disco import caps_ver

CAPS = "http://jabber.org/protocol/caps"

# XEP-0115 §5.2 (simple) and §5.3 (complex) generation examples, as disco#info answers.
SIMPLE = """<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""
COMPLEX = """<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version' type='text-multi' >
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>"""


@pytest.mark.parametrize(
    "query, ver",
    [(SIMPLE, "QgayPKawpkPSDYmwT/WM94uAlu0="), (COMPLEX, "q07IKJEyjvHSyhy//CH0CxmKi8w=")],
)
def test_verification_string_examples(query: str, ver: str) -> None:
    assert caps_ver(etree.fromstring(query)) == ver


def test_identities_sort_by_field_not_by_joined_string() -> None:
    # "a/x" joined sorts after "a-b/x", but category "a" comes before "a-b" (§5.1 step 2).
    query = etree.fromstring(
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity category='a-b' type='x'/><identity category='a' type='x'/></query>"
    )
    expected = base64.b64encode(hashlib.sha1(b"a/x//<a-b/x//<").digest()).decode()
    assert caps_ver(query) == expected


def features_after_login(server: ServerProcess, user: str) -> bytes:
    """The stream features a client gets after authenticating (raw bytes)."""
    raw = RawClient(server)
    try:
        raw.starttls()
        raw.send(
            "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        raw.read_until("</stream:features>")
        raw.take()
        token = base64.b64encode(f"\0{user}\0{PASSWORDS[user]}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        raw.read_until("<success")
        raw.take()
        raw.send(
            "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        return raw.read_until("</stream:features>")
    finally:
        raw.close()


def caps_element(features: bytes) -> etree._Element:
    match = re.search(rb"<stream:features.*</stream:features>", features, re.S)
    assert match is not None
    wrapped = b"<w xmlns:stream='http://etherx.jabber.org/streams'>" + match.group(0) + b"</w>"
    caps = etree.fromstring(wrapped).find(f".//{{{CAPS}}}c")
    assert caps is not None, features
    return caps


def test_caps_stream_feature_matches_the_servers_disco_info(server: ServerProcess) -> None:
    caps = caps_element(features_after_login(server, "alice"))
    assert caps.get("hash") == "sha-1"
    node, ver = caps.get("node"), caps.get("ver")
    assert node and ver

    async def scenario() -> None:
        client = await connect(server, "alice", "caps", presence=False)
        disco = client.plugin["xep_0030"]
        plain = await disco.get_info(jid="localhost", timeout=5)
        # The ver covers every module's features: recomputed from the live answer (§5.4).
        query = etree.fromstring(str(plain["disco_info"]).encode())
        assert caps_ver(query) == ver
        features = plain["disco_info"]["features"]
        for var in ("urn:xmpp:carbons:2", "urn:xmpp:blocking", "vcard-temp", CAPS):
            assert var in features

        # §6.2: the caps node answers the same information, with the node echoed.
        at_node = await disco.get_info(jid="localhost", node=f"{node}#{ver}", timeout=5)
        assert at_node["disco_info"]["node"] == f"{node}#{ver}"
        assert at_node["disco_info"]["features"] == features
        assert at_node["disco_info"]["identities"] == plain["disco_info"]["identities"]
        for wrong in (f"{node}#not-the-ver", "some-other-node"):
            with pytest.raises(IqError) as raised:
                await disco.get_info(jid="localhost", node=wrong, timeout=5)
            assert raised.value.iq["error"]["condition"] == "item-not-found"
        await client.close()

    run(scenario())


def test_caps_are_not_offered_before_login(server: ServerProcess) -> None:
    raw = RawClient(server)
    try:
        raw.starttls()
        raw.send(
            "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        assert CAPS.encode() not in raw.read_until("</stream:features>")
    finally:
        raw.close()
