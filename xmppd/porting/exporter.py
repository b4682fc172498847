"""`xmppd export`: every account of every host into one XEP-0227 file.

Passwords are never known to us, so none is written in 'password' (1.1 discourages it
anyway): each stored SCRAM hash becomes a `<scram-credentials/>` element, which Prosody reads
for SCRAM-SHA-1 and `xmppd import` for all three. A not yet upgraded imported hash (passlib
format) goes into an `xmppd:password-hash` attribute of our own namespace. Rosters include
unanswered inbound requests as `<presence type='subscribe'/>` children of `<user/>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from auth.internal import ACCOUNTS_STORE
from auth.scram import ScramCredentials

from ..modules.roster import item_element
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, make, qname, sub
from . import loaded_hosts, pie

if TYPE_CHECKING:
    from ..config import Config
    from ..host import Host

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass
class Counts:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int = 1) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + n


async def export_path(config: Config, path: Path) -> Counts:
    root = pie.new_document()
    counts = Counts()
    async with loaded_hosts(config) as hosts:
        for host in hosts.values():
            host_el = pie.add_host(root, host.domain)
            accounts = host.storage.keyval(ACCOUNTS_STORE)
            for name in sorted(await accounts.users()):
                record = await accounts.get(name)
                if record is not None:
                    await export_user(host, pie.add_user(host_el, name), name, record, counts)
    pie.write(path, root)
    return counts


async def export_user(
    host: Host, user: Element, name: str, record: dict[str, Any], counts: Counts
) -> None:
    counts.add("accounts")
    for hash_name, data in sorted((record.get("scram") or {}).items()):
        user.append(pie.scram_element(hash_name, ScramCredentials.from_dict(data)))
    if isinstance(record.get("password_hash"), str):
        user.set(f"{{{pie.XMPPD}}}password-hash", record["password_hash"])
    bare = f"{name}@{host.domain}"
    await _roster(host, bare, user, counts)
    vcard = await host.storage.keyval("vcard").get(name)
    if vcard is not None:
        user.append(_parse(vcard["xml"]))
        counts.add("vCards")
    private = await host.storage.map("private").get_all(name)
    if private:
        query = sub(user, ns.PRIVATE, "query")
        for doc in private.values():
            for xml in doc["xml"]:
                query.append(_parse(xml))
        counts.add("private XML namespaces", len(private))
    offline = await host.storage.map("offline").get_all(name)
    if offline:
        holder = etree.SubElement(user, f"{{{pie.PIE}}}offline-messages")
        for key in sorted(offline):
            holder.append(_parse(offline[key]["xml"]))
        counts.add("offline messages", len(offline))


async def _roster(host: Host, bare: str, user: Element, counts: Counts) -> None:
    rosters = host.services.get("roster")
    if rosters is None:
        return
    roster = await rosters.load(bare)
    listed = sorted(roster.listed().items())
    if listed:
        query = sub(user, ns.ROSTER, "query")
        for contact, doc in listed:
            item_element(query, contact, doc)
        counts.add("roster items", len(listed))
    for contact, doc in sorted(roster.items.items()):
        if doc["pending_in"] and doc["sub"] in ("none", "to"):
            user.append(_request(doc, contact))
            counts.add("subscription requests")


def _request(doc: dict[str, Any], contact: str) -> Element:
    """The stored request (it may carry a status or nick), or a plain one."""
    stanza = None
    if doc.get("request"):
        try:
            stanza = etree.fromstring(doc["request"], _PARSER)
        except etree.XMLSyntaxError:
            stanza = None
    if stanza is None or stanza.tag != qname(ns.CLIENT, "presence"):
        stanza = make("presence", {"type": "subscribe"})
    stanza.set("from", contact)
    stanza.attrib.pop("to", None)
    return stanza


def _parse(xml: str) -> Element:
    return etree.fromstring(xml.encode(), _PARSER)
