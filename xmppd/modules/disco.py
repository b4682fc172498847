"""XEP-0030: what the server and its accounts support, collected from the loaded modules.

XEP-0115 for the server itself: once every module is loaded, the verification string is computed
from the server's own disco#info answer (§5.1) and offered as a `<c/>` stream feature after login
(§6.3). disco#info at node `<caps_node>#<ver>` answers the same as without a node; any other
node is `item-not-found`.
"""

from __future__ import annotations

import base64
import hashlib

from .. import loader
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, element, qname, reply, sub
from ..router import StanzaEvent

_XML_LANG = qname(ns.XML, "lang")
_FIELD = qname(ns.DATA_FORMS, "field")
_VALUE = qname(ns.DATA_FORMS, "value")


def info_query(
    identities: set[tuple[str, str, str]], features: set[str], node: str | None = None
) -> Element:
    query = element(ns.DISCO_INFO, "query")
    if node:
        query.set("node", node)
    for category, type_, name in sorted(identities):
        identity = sub(query, ns.DISCO_INFO, "identity", category=category, type=type_)
        if name:
            identity.set("name", name)
    for var in sorted(features | {ns.DISCO_INFO, ns.DISCO_ITEMS}):
        sub(query, ns.DISCO_INFO, "feature", var=var)
    return query


def info_result(
    event: StanzaEvent, identities: set[tuple[str, str, str]], features: set[str]
) -> Element:
    result = reply(event.stanza)
    result.append(info_query(identities, features, event.stanza[0].get("node")))
    return result


def _utf8_key(text: str) -> bytes:
    return text.encode()  # RFC 4790 i;octet collation: compare the UTF-8 bytes


def caps_ver(query: Element) -> str:
    """XEP-0115 §5.1: the sha-1 verification string of a disco#info `<query/>`."""
    identities = sorted(
        tuple(_utf8_key(i.get(a, "")) for a in ("category", "type", _XML_LANG, "name"))
        for i in query.iterchildren(qname(ns.DISCO_INFO, "identity"))
    )
    features = [f.get("var", "") for f in query.iterchildren(qname(ns.DISCO_INFO, "feature"))]
    # Identities sort by category, type, then xml:lang (§5.1 step 2), not as joined strings.
    parts = ["/".join(part.decode() for part in i) for i in identities]
    parts += sorted(features, key=_utf8_key)
    for form_type, fields in sorted(_forms(query), key=lambda form: _utf8_key(form[0])):
        parts.append(form_type)
        for var, values in sorted(fields, key=lambda field: _utf8_key(field[0])):
            parts.append(var)
            parts.extend(sorted(values, key=_utf8_key))
    digest = hashlib.sha1("".join(p + "<" for p in parts).encode()).digest()
    return base64.b64encode(digest).decode()


def _forms(query: Element) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """XEP-0128 forms as (FORM_TYPE, [(var, values)]); forms without a FORM_TYPE are skipped."""
    forms = []
    for form in query.iterchildren(qname(ns.DATA_FORMS, "x")):
        form_type = None
        fields = []
        for field in form.iterchildren(_FIELD):
            values = [v.text or "" for v in field.iterchildren(_VALUE)]
            if field.get("var") == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields.append((field.get("var", ""), values))
        if form_type is not None:
            forms.append((form_type, fields))
    return forms


def load(module: Module) -> None:
    host = module.host
    caps_node: str = module.options["caps_node"]
    module.add_feature(ns.CAPS)
    caps = element(ns.CAPS, "c", hash="sha-1", node=caps_node)
    module.add_stream_feature(caps)

    def compute_caps() -> None:
        caps.set("ver", caps_ver(info_query(host.disco_identities, host.disco_features)))

    compute_caps()  # for a host whose loader never calls back (tests that load by hand)
    loader.when_loaded(host, compute_caps)

    async def server_info(event: StanzaEvent) -> bool:
        node = event.stanza[0].get("node")
        if node and node != f"{caps_node}#{caps.get('ver')}":
            return await event.reply_error("item-not-found")
        return await event.reply(info_result(event, host.disco_identities, host.disco_features))

    async def server_items(event: StanzaEvent) -> bool:
        if event.stanza[0].get("node"):
            return await event.reply_error("item-not-found")
        result = reply(event.stanza)
        query = sub(result, ns.DISCO_ITEMS, "query")
        for jid, name in sorted(host.disco_items.items()):
            item = sub(query, ns.DISCO_ITEMS, "item", jid=jid)
            if name:
                item.set("name", name)
        return await event.reply(result)

    async def account_info(event: StanzaEvent) -> bool:
        # XEP-0030 §3.1: an account's bare JID is answered by the server on its behalf.
        assert event.to is not None or event.sender is not None
        target = event.to or event.sender
        if event.to is not None and not await host.auth.user_exists(target.local or ""):
            return await event.reply_error("service-unavailable")
        if event.stanza[0].get("node"):
            return await event.reply_error("item-not-found")
        identities = host.account_identities
        return await event.reply(info_result(event, identities, host.account_features))

    async def account_items(event: StanzaEvent) -> bool:
        result = reply(event.stanza)
        sub(result, ns.DISCO_ITEMS, "query")
        return await event.reply(result)

    module.hook_iq("get/host", ns.DISCO_INFO, "query", server_info)
    module.hook_iq("get/host", ns.DISCO_ITEMS, "query", server_items)
    module.hook_iq("get/self get/bare", ns.DISCO_INFO, "query", account_info)
    module.hook_iq("get/self get/bare", ns.DISCO_ITEMS, "query", account_items)


spec = ModuleSpec(
    name="disco",
    summary="service discovery of the server and accounts; the server's entity capabilities",
    load=load,
    options={
        "caps_node": Option(
            str, "urn:x-xmppd:caps", "XEP-0115 node URI naming this software in caps"
        ),
    },
    implements=(
        Implements("XEP-0030", "2.5rc3"),
        Implements("XEP-0115", "1.6.0", note="the server's caps as a stream feature"),
    ),
)
