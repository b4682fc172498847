"""XEP-0030: what the server and its accounts support, collected from the loaded modules."""

from __future__ import annotations

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, reply, sub
from ..router import StanzaEvent


def info_result(
    event: StanzaEvent, identities: set[tuple[str, str, str]], features: set[str]
) -> Element:
    result = reply(event.stanza)
    query = sub(result, ns.DISCO_INFO, "query")
    node = event.stanza[0].get("node")
    if node:
        query.set("node", node)
    for category, type_, name in sorted(identities):
        identity = sub(query, ns.DISCO_INFO, "identity", category=category, type=type_)
        if name:
            identity.set("name", name)
    for var in sorted(features | {ns.DISCO_INFO, ns.DISCO_ITEMS}):
        sub(query, ns.DISCO_INFO, "feature", var=var)
    return result


def load(module: Module) -> None:
    host = module.host

    async def server_info(event: StanzaEvent) -> bool:
        if event.stanza[0].get("node"):
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
        identities = {("account", "registered", "")}
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
    summary="service discovery: identities, features and items of the server and accounts",
    load=load,
    implements=(Implements("XEP-0030", "2.5rc3"),),
)
