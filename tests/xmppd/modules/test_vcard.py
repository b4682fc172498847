"""vcard-temp (XEP-0054) and the avatar hash in presence (XEP-0153) with real clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from support import Client, ServerProcess, connect, run

VCARD = "vcard-temp"
UPDATE = "vcard-temp:x:update"
IMAGE = bytes(range(256)) * 4  # 1 KiB "image"
SERVER_CONFIG = "[modules.vcard]\nmax_size = 4096\n"  # read by the `im` fixture
IM = Any  # the `im` fixture of tests/xmppd/modules/conftest.py


def vcard(name: str, photo: bytes | str | None = None) -> ET.Element:
    card = ET.Element(f"{{{VCARD}}}vCard")
    ET.SubElement(card, f"{{{VCARD}}}FN").text = name
    if photo is not None:
        element = ET.SubElement(card, f"{{{VCARD}}}PHOTO")
        ET.SubElement(element, f"{{{VCARD}}}TYPE").text = "image/png"
        text = photo if isinstance(photo, str) else base64.encodebytes(photo).decode()
        ET.SubElement(element, f"{{{VCARD}}}BINVAL").text = text  # with line breaks
    return card


async def set_vcard(client: Client, card: ET.Element, to: str | None = None) -> None:
    iq = client.make_iq_set(ito=to)
    iq.append(card)
    await iq.send(timeout=5)


async def get_vcard(client: Client, to: str | None = None) -> ET.Element:
    iq = client.make_iq_get(ito=to)
    iq.append(ET.Element(f"{{{VCARD}}}vCard"))
    result = await iq.send(timeout=5)
    card = result.xml.find(f"{{{VCARD}}}vCard")
    assert card is not None
    return card


async def error_of(request: Any) -> str:
    with pytest.raises(IqError) as raised:
        await request
    return raised.value.iq["error"]["condition"]


def photo_in(presence: Any) -> str | None:
    """The text of <x xmlns='vcard-temp:x:update'><photo/></x>: "" empty, None absent."""
    photo = presence.xml.find(f"{{{UPDATE}}}x/{{{UPDATE}}}photo")
    return None if photo is None else (photo.text or "")


def test_own_and_other_vcards_and_errors(im: IM) -> None:
    async def scenario() -> None:
        ann, bob = im.users("ann", "bob")
        a, b = await im.login(ann), await im.login(bob)
        assert len(await get_vcard(a)) == 0  # none yet: an empty vCard (§3.1)
        assert await error_of(get_vcard(b, f"{ann}@localhost")) == "service-unavailable"
        assert await error_of(get_vcard(b, "nobody@localhost")) == "service-unavailable"

        await set_vcard(a, vcard("Ann Example", IMAGE))
        own = await get_vcard(a, f"{ann}@localhost")  # to the own bare JID works too
        assert own.findtext(f"{{{VCARD}}}FN") == "Ann Example"
        seen = await get_vcard(b, f"{ann}@localhost")
        binval = seen.findtext(f"{{{VCARD}}}PHOTO/{{{VCARD}}}BINVAL")
        assert base64.b64decode("".join(binval.split())) == IMAGE

        # Someone else's vCard cannot be set; too big, or a photo that is not base64: refused.
        assert await error_of(set_vcard(b, vcard("Evil"), f"{ann}@localhost")) == "forbidden"
        big = vcard("Big", IMAGE * 4)
        assert await error_of(set_vcard(a, big)) == "not-acceptable"
        assert await error_of(set_vcard(a, vcard("Bad", "not*base64!"))) == "bad-request"
        assert (await get_vcard(b, f"{ann}@localhost")).findtext(f"{{{VCARD}}}FN") == "Ann Example"

        # An empty vCard removes it.
        await set_vcard(a, ET.Element(f"{{{VCARD}}}vCard"))
        assert await error_of(get_vcard(b, f"{ann}@localhost")) == "service-unavailable"
        await asyncio.gather(a.close(), b.close())

    run(scenario())


def test_avatar_hash_goes_out_with_presence(im: IM) -> None:
    async def scenario() -> None:
        ann, bob = im.users("ann", "bob")
        a, b = await im.login(ann), await im.login(bob)
        for sender, receiver, type_ in [(b, a, "subscribe"), (a, b, "subscribed")]:
            im.subscription(sender, receiver.boundjid.bare, type_)
            await im.barrier(sender)  # now bob sees ann's presence
        await im.until_marker(a, b)  # skip what subscribing brought

        def from_ann(stanza: Any) -> bool:
            return stanza.name == "presence" and stanza["from"].full == a.boundjid.full

        # No vCard yet: the server says "no avatar" with an empty <photo/>.
        a.send_presence(pstatus="no avatar")
        assert photo_in(await im.wait_for(b, from_ann)) == ""

        await set_vcard(a, vcard("Ann", IMAGE))
        a.send_presence(pstatus="with avatar")  # the client itself leaves the hash out
        expected = hashlib.sha1(IMAGE).hexdigest()
        assert photo_in(await im.wait_for(b, from_ann)) == expected
        other = await im.login(ann, "other")  # her other resource sees the same in the echo
        a.send_presence(pstatus="again")
        assert photo_in(await im.wait_for(other, from_ann)) == expected
        assert photo_in(await im.wait_for(b, from_ann)) == expected

        # A client that states its own hash is left alone; an empty <x/> is completed.
        own = a.make_presence(pstatus="mine")
        x = ET.SubElement(own.xml, f"{{{UPDATE}}}x")
        ET.SubElement(x, f"{{{UPDATE}}}photo").text = "0" * 40
        own.send()
        assert photo_in(await im.wait_for(b, from_ann)) == "0" * 40
        empty = a.make_presence(pstatus="not ready")
        ET.SubElement(empty.xml, f"{{{UPDATE}}}x")
        empty.send()
        got = await im.wait_for(b, from_ann)
        assert photo_in(got) == expected
        assert len(got.xml.findall(f"{{{UPDATE}}}x")) == 1
        await asyncio.gather(a.close(), b.close(), other.close())

    run(scenario())


def test_feature_and_durability(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.add_user("dora", "dora-pw")

    async def scenario(write: bool) -> None:
        client = await connect(server, "dora", "r", password="dora-pw", presence=False)
        info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert VCARD in info["disco_info"]["features"]
        if write:
            await set_vcard(client, vcard("Dora", IMAGE))
        assert (await get_vcard(client)).findtext(f"{{{VCARD}}}FN") == "Dora"
        await client.close()

    server.start()
    try:
        run(scenario(True))
        server.stop()
        server.start()
        run(scenario(False))
    finally:
        server.stop()
