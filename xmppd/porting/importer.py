"""`xmppd import`: XEP-0227 users into accounts, rosters, vCards, private XML, offline messages.

What goes where (XEP-0227 §4):
- credentials: a plaintext 'password' becomes our SCRAM keys for every hash (auth/internal.py
  `create_user`); `<scram-credentials/>` (1.1 §4.3.1) and ejabberd's "scram:..." password are
  stored as they are, so accounts keep their passwords without us ever knowing them. Prosody
  and ejabberd keep SCRAM-SHA-1 only: such an account logs in with SCRAM-SHA-1 or PLAIN, and
  its first PLAIN login adds the other hashes (auth/internal.py).
- roster (§4.4) and pending inbound subscription requests (`<presence type='subscribe'/>`
  children of `<user/>`) through the roster service, so its limits and versioning apply;
- vCard (§4.7), private XML (§4.6) and offline messages (§4.5) in their modules' storage
  formats, within the same per-account limits the modules enforce.
An account that exists already is left alone (reported as skipped): an import never
overwrites a password or a roster. Problems with one item are reported and the rest goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from auth.internal import ACCOUNTS_STORE, InternalAuth

from ..modules import private as private_mod
from ..modules import vcard as vcard_mod
from ..modules.offline import utc_stamp
from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError, prep_domain, prep_localpart
from ..protocol.stanza import Element, first_child, local_name, namespace_of, qname, sub
from . import loaded_hosts, pie

if TYPE_CHECKING:
    from ..config import Config
    from ..host import Host

_SUBSCRIPTIONS = ("none", "to", "from", "both")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass
class Report:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


async def import_path(config: Config, path: Path) -> Report:
    users = pie.read(path)
    report = Report()
    async with loaded_hosts(config) as hosts:
        # Every host is checked before anything is written.
        unknown = sorted({d for d in (_domain(jid) for jid, _ in users) if d not in hosts})
        if unknown:
            served = ", ".join(hosts)
            raise pie.PieError(f"hosts not served here: {', '.join(unknown)} (served: {served})")
        for jid, user in users:
            await import_user(hosts[_domain(jid)], user, report)
    return report


def _domain(jid: str) -> str:
    try:
        return prep_domain(jid)
    except JIDError as exc:
        raise pie.PieError(f"bad host jid {jid!r}: {exc}") from exc


async def import_user(host: Host, user: Element, report: Report) -> None:
    try:
        name = prep_localpart(user.get("name", ""))
    except JIDError as exc:
        report.warnings.append(f"user {user.get('name')!r} on {host.domain} skipped: {exc}")
        return
    bare = f"{name}@{host.domain}"
    accounts = InternalAuth(host.storage.keyval(ACCOUNTS_STORE))
    if await accounts.user_exists(name):
        report.skipped.append(bare)
        return
    try:
        await _credentials(accounts, host, name, user, report)
    except pie.PieError as exc:
        report.warnings.append(f"{bare} skipped: {exc}")
        return
    report.imported.append(bare)
    modules = {m.spec.name: m.options for m in host.modules}
    for child in user:
        if not isinstance(child.tag, str):
            continue
        if child.tag == qname(ns.ROSTER, "query") and "roster" in modules:
            await _roster(host, bare, child, modules["roster"], report)
        elif child.tag == qname(ns.VCARD, "vCard") and "vcard" in modules:
            await _vcard(host, name, child, modules["vcard"], report)
        elif child.tag == qname(ns.PRIVATE, "query") and "private" in modules:
            await _private(host, name, child, modules["private"], report)
        elif local_name(child) == "offline-messages" and "offline" in modules:
            await _offline(host, bare, child, modules["offline"], report)
    for child in user:  # after the roster: a request from a contact may update its item
        if isinstance(child.tag, str) and local_name(child) == "presence":
            await _pending_in(host, bare, child, report)


async def _credentials(
    accounts: InternalAuth, host: Host, name: str, user: Element, report: Report
) -> None:
    scram = pie.scram_credentials(user)
    password = pie.plain_password(user)
    legacy = user.get(f"{{{pie.XMPPD}}}password-hash")
    if password is not None:
        try:
            await accounts.create_user(name, password)
            return
        except ValueError as exc:  # PRECIS refused it; SCRAM keys may still be there
            if not scram:
                raise pie.PieError(str(exc)) from exc
    record: dict[str, Any] = {"created": int(time.time())}
    if scram:
        record["scram"] = {h: creds.to_dict() for h, creds in scram.items()}
    if legacy:
        record["password_hash"] = legacy
    if not scram and not legacy:
        report.warnings.append(
            f"{name}@{host.domain} has no password in the file: set one with `xmppd passwd`"
        )
    await host.storage.keyval(ACCOUNTS_STORE).set(name, record)


# ---- roster -------------------------------------------------------------------------------------


def _contact(text: str | None, own: str) -> str | None:
    try:
        jid = JID.parse(text or "")
    except JIDError:
        return None
    contact = str(jid.bare)
    return None if contact == own else contact


def _too_big(name: str | None, groups: list[str], opts: dict) -> bool:
    """The limits a client's roster set meets (roster module options)."""
    return (
        len(name or "") > opts["max_name_length"]
        or len(groups) > opts["max_groups"]
        or any(len(g) > opts["max_group_length"] for g in groups)
    )


async def _roster(host: Host, bare: str, query: Element, opts: dict, report: Report) -> None:
    rosters = host.services["roster"]
    for item in query.iterchildren(qname(ns.ROSTER, "item")):
        contact = _contact(item.get("jid"), bare)
        subscription = item.get("subscription", "none")
        if contact is None or subscription not in _SUBSCRIPTIONS:
            report.warnings.append(f"{bare}: roster item {item.get('jid')!r} skipped")
            continue
        groups = [g.text.strip() for g in item.iterchildren(qname(ns.ROSTER, "group")) if g.text]
        fields = {
            "listed": True,
            "name": item.get("name") or None,
            "groups": list(dict.fromkeys(g for g in groups if g)),
            "sub": subscription,
            "ask": item.get("ask") == "subscribe",
            "approved": item.get("approved") in ("true", "1"),
        }
        if _too_big(fields["name"], fields["groups"], opts):
            report.warnings.append(f"{bare}: {contact} skipped: name or groups over the limits")
            continue
        if await _update(rosters, bare, contact, fields, report):
            report.count("roster items")


async def _pending_in(host: Host, bare: str, presence: Element, report: Report) -> None:
    """XEP-0227 §4.4 (since 0.3): a subscription request the user has not answered yet."""
    rosters = host.services.get("roster")
    contact = _contact(presence.get("from"), bare)
    if rosters is None or presence.get("type") != "subscribe" or contact is None:
        return
    doc = await rosters.peek(bare, contact)
    if doc is not None and doc["sub"] in ("from", "both"):
        return  # already answered: nothing pending
    request = to_client(presence)
    request.attrib.pop("to", None)
    fields = {"pending_in": True, "request": etree.tostring(request, encoding="unicode")}
    if await _update(rosters, bare, contact, fields, report):
        report.count("subscription requests")


async def _update(rosters: Any, bare: str, contact: str, fields: dict, report: Report) -> bool:
    from ..modules.roster import RosterError

    try:
        await rosters.update(bare, contact, lambda doc: {**doc, **fields})
        return True
    except RosterError as exc:
        report.warnings.append(f"{bare}: {contact} not imported: {exc.text}")
        return False


# ---- vCard, private XML, offline messages -------------------------------------------------------


async def _vcard(host: Host, name: str, vcard: Element, opts: dict, report: Report) -> None:
    if first_child(vcard) is None:
        return  # an empty vCard is no vCard (the module stores nothing for it either)
    xml = vcard_mod.serialize(vcard)
    if len(xml.encode()) > opts["max_size"]:
        report.warnings.append(f"{name}@{host.domain}: vCard over {opts['max_size']} bytes")
        return
    try:
        photo = vcard_mod.photo_hash(vcard)
    except vcard_mod.BadPhoto:
        photo = ""
    await host.storage.keyval("vcard").set(name, {"xml": xml, "photo": photo})
    report.count("vCards")


async def _private(host: Host, name: str, query: Element, opts: dict, report: Report) -> None:
    store = host.storage.map("private")
    grouped: dict[str, list[str]] = {}
    for child in private_mod.children(query):
        namespace = namespace_of(child)
        if namespace and not private_mod.reserved(namespace):
            grouped.setdefault(namespace, []).append(private_mod.serialize(child))
    for namespace, fragments in grouped.items():
        size = sum(len(f.encode()) for f in fragments)
        full = len(await store.get_all(name)) >= opts["max_namespaces"]
        if size > opts["max_size"] or full:
            report.warnings.append(f"{name}@{host.domain}: private {namespace} over the limits")
            continue
        await store.set(name, namespace, {"xml": fragments})
        report.count("private XML namespaces")


async def _offline(host: Host, bare: str, holder: Element, opts: dict, report: Report) -> None:
    name = bare.partition("@")[0]
    store = host.storage.map("offline")
    existing = await store.get_all(name)
    seq = max((int(key) for key in existing), default=0) + 1
    room = opts["max_messages"] - len(existing)
    space = opts["max_bytes"] - sum(len(doc["xml"].encode()) for doc in existing.values())
    for el in holder:
        if not isinstance(el.tag, str) or local_name(el) != "message":
            continue
        message = to_client(el)
        message.set("to", message.get("to") or bare)
        if message.find(qname(ns.DELAY, "delay")) is None:  # when it was stored is unknown
            delay = sub(message, ns.DELAY, "delay", "Offline Storage", stamp=utc_stamp())
            delay.set("from", host.domain)
        xml = etree.tostring(message).decode()
        if room <= 0 or len(xml.encode()) > space:
            report.warnings.append(f"{bare}: offline messages beyond the offline limits dropped")
            return
        await store.set(name, f"{seq:016d}", {"xml": xml})
        seq, room, space = seq + 1, room - 1, space - len(xml.encode())
        report.count("offline messages")


def to_client(el: Element) -> Element:
    """A copy qualified by jabber:client where the file left it in the PIE namespace (or none):
    elements inherit the namespace of <user/> unless the exporter declared jabber:client."""
    moved = {None, "", pie.PIE, pie.PIE_OLD, ns.CLIENT}
    data = etree.tostring(el)
    copy = etree.fromstring(data, _PARSER)
    for node in copy.iter():
        if isinstance(node.tag, str) and (namespace_of(node) or None) in moved:
            node.tag = qname(ns.CLIENT, local_name(node))
    etree.cleanup_namespaces(copy)
    return etree.fromstring(etree.tostring(copy), _PARSER)
