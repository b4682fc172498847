"""XEP-0049 Private XML Storage: a user keeps XML fragments on the server, one per namespace.

- Only for oneself (no `to`, or the own bare JID); addressed to another account: `forbidden`.
- A get names exactly one namespace with one empty child; a set carries one or more elements
  of one namespace, which replace what was stored under it (an empty element deletes it).
  A query without a namespaced child is `not-acceptable` (§2.3), one mixing namespaces or a get
  with several children `bad-request` (a get "MUST NOT query for more than one namespace").
- Reserved namespaces (`jabber:*`, `http://jabber.org/*`, `vcard-temp`) are `not-acceptable`.
- Map store `private`: key = namespace, value `{"xml": [fragment, ...]}`. Limits: `max_size`
  bytes per namespace and `max_namespaces` per account, both `not-acceptable`.
"""

from __future__ import annotations

from lxml import etree

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, first_child, namespace_of, reply, sub
from ..router import StanzaEvent
from ..storage import StorageError

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
_RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")


def reserved(namespace: str) -> bool:
    """XEP-0049 §2.3: namespaces a user may not store under."""
    return namespace.startswith(_RESERVED_PREFIXES) or namespace == ns.VCARD


def children(query: Element) -> list[Element]:
    return [child for child in query if isinstance(child.tag, str)]


def problem(query: Element, type_: str) -> tuple[str, str] | None:
    """The error (condition, text) a malformed request gets, or None."""
    items = children(query)
    if not items or any(not namespace_of(c) or namespace_of(c) == ns.PRIVATE for c in items):
        return "not-acceptable", "the query needs a child element in its own namespace"
    if len({namespace_of(c) for c in items}) > 1:
        return "bad-request", "one namespace per request"
    if type_ == "get" and len(items) > 1:
        return "bad-request", "a get names one namespace with one element"
    if reserved(namespace_of(items[0])):
        return "not-acceptable", f"namespace {namespace_of(items[0])!r} is reserved"
    return None


def serialize(el: Element) -> str:
    """The element alone, without the namespace declarations it inherited from the stanza."""
    el = copy(el)
    etree.cleanup_namespaces(el)
    return etree.tostring(el, encoding="unicode")


def is_empty(el: Element) -> bool:
    return len(el) == 0 and not (el.text or "").strip() and not el.attrib


def load(module: Module) -> None:
    store = module.open_map("private")
    max_size: int = module.options["max_size"]
    max_namespaces: int = module.options["max_namespaces"]
    module.add_feature(ns.PRIVATE)

    async def account_deleted(event: AccountDeleted) -> bool:
        await store.delete_user(event.local)
        return False

    module.hook("account-deleted", account_deleted)

    async def handle(event: StanzaEvent) -> bool:
        session, query = event.origin, first_child(event.stanza)
        assert session is not None and query is not None
        type_ = event.stanza.get("type", "")
        if (found := problem(query, type_)) is not None:
            return await event.reply_error(*found)
        user = session.jid.local or ""
        try:
            if type_ == "get":
                return await get(event, user, children(query)[0])
            return await put(event, user, children(query))
        except StorageError as exc:
            module.log.error("private storage of %s failed: %s", session.bare, exc)
            return await event.reply_error("internal-server-error")

    async def get(event: StanzaEvent, user: str, asked: Element) -> bool:
        result = reply(event.stanza)
        query = sub(result, ns.PRIVATE, "query")
        doc = await store.get(user, namespace_of(asked))
        if doc is None:
            query.append(copy(asked))  # nothing stored: the empty element back
        else:
            for xml in doc["xml"]:
                query.append(etree.fromstring(xml.encode(), _PARSER))
        return await event.reply(result)

    async def put(event: StanzaEvent, user: str, items: list[Element]) -> bool:
        namespace = namespace_of(items[0])
        fragments = [serialize(item) for item in items]
        if sum(len(f.encode()) for f in fragments) > max_size:
            limit = f"at most {max_size} bytes per namespace"
            return await event.reply_error("not-acceptable", limit)
        doc = None if len(items) == 1 and is_empty(items[0]) else {"xml": fragments}
        if doc is not None and await is_new_and_full(user, namespace):
            limit = f"at most {max_namespaces} namespaces"
            return await event.reply_error("not-acceptable", limit)
        await store.set(user, namespace, doc)
        return await event.reply(reply(event.stanza))

    async def is_new_and_full(user: str, namespace: str) -> bool:
        if await store.get(user, namespace) is not None:
            return False
        return len(await store.get_all(user)) >= max_namespaces

    async def not_yours(event: StanzaEvent) -> bool:
        return await event.reply_error("forbidden", "private data is only for its owner")

    module.hook_iq("get/self set/self", ns.PRIVATE, "query", handle)
    module.hook_iq("get/bare set/bare", ns.PRIVATE, "query", not_yours)


spec = ModuleSpec(
    name="private",
    summary="keeps private XML for each user, by namespace (XEP-0049)",
    load=load,
    options={
        "max_size": Option(int, 64 * 1024, "bytes stored under one namespace", min=1024),
        "max_namespaces": Option(int, 100, "namespaces per account", min=1),
    },
    implements=(Implements("XEP-0049", "1.2"),),
)
