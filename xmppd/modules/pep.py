"""XEP-0163 Personal Eventing Protocol: every account is a pubsub service (XEP-0060).

- Only the owner publishes, retracts, configures, deletes and purges (to its own bare JID or
  with no `to`); others may only retrieve items, as the node's access model allows (§6.5.9):
  open = anyone, presence = contacts with subscription from/both, whitelist = the owner and
  the JIDs it gave the member affiliation (§8.9). disco#items lists the readable nodes.
- Nodes are created on first publish (§7.1.4 auto-create), configured by publish-options;
  on an existing node the options are preconditions: a mismatch is `conflict` +
  `precondition-not-met` (§7.1.5).
- Subscriptions are implicit (XEP-0163 §4.3): a notification goes to each available resource of
  the owner and of the contacts the access model allows whose caps (module `caps`) include
  `<node>+notify`. The last item of each such node is sent when a resource comes online or its
  caps become known (XEP-0163 §6.2, `send_last_published_item` on_sub_and_presence).
- Limits: `max_nodes` per account (`not-allowed` + `max-nodes-exceeded`), `max_items` per node
  (requested values are clamped; "max" means the limit), `max_item_size` bytes per payload
  (`not-acceptable` + `payload-too-big`).
- XEP-0402 `#compat`: private XML (XEP-0049) for `storage:bookmarks` maps to the bookmarks node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..pep import bookmarks
from ..pep.config import Config, default, form, parse_options
from ..pep.service import Item, Pep, PubsubError, elements, local_of, parse, serialize
from ..protocol import namespaces as ns
from ..protocol.forms import FormError, parse_submission
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import (
    Element,
    element,
    error_reply,
    first_child,
    get_child,
    local_name,
    qname,
    reply,
    sub,
)
from ..router import StanzaEvent
from ..storage import StorageError

if TYPE_CHECKING:
    from ..session import Session

_ITEM = qname(ns.PUBSUB, "item")
FEATURES = [
    f"{ns.PUBSUB}#{name}"
    for name in (
        "access-open",
        "access-presence",
        "access-whitelist",
        "auto-create",
        "config-node",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "last-published",
        "manage-affiliations",
        "member-affiliation",
        "multi-items",
        "persistent-items",
        "presence-notifications",
        "publish",
        "publish-options",
        "purge-nodes",
        "retract-items",
        "retrieve-affiliations",
        "retrieve-items",
    )
]


# ---- requests ---------------------------------------------------------------------------------


def publish_options(pubsub: Element, limit: int) -> Config | None:
    options = get_child(pubsub, ns.PUBSUB, "publish-options")
    x = get_child(options, ns.DATA_FORMS, "x") if options is not None else None
    if x is None:
        return None
    try:
        fields = parse_submission(x, ns.PUBSUB_PUBLISH_OPTIONS)
    except FormError as exc:
        raise PubsubError("bad-request", text=str(exc)) from exc
    try:
        return parse_options(fields, limit)
    except FormError as exc:  # an option the service cannot meet (§7.1.5)
        raise PubsubError("conflict", "precondition-not-met", str(exc)) from exc


def config_submission(x: Element | None, limit: int) -> Config:
    if x is None:
        return {}
    try:
        if x.get("type") == "cancel":
            return {}
        return parse_options(parse_submission(x, ns.PUBSUB_NODE_CONFIG), limit)
    except FormError as exc:
        raise PubsubError("not-acceptable", text=str(exc)) from exc


async def affiliations(pep: Pep, owner: str, request: Element, type_: str) -> Element | None:
    """XEP-0060 §8.9: the whitelist as member affiliations; owner is the account itself."""
    node = request.get("node") or ""
    if type_ == "get":
        config = await pep.node(owner, node)
        result = element(ns.PUBSUB_OWNER, "pubsub")
        out = sub(result, ns.PUBSUB_OWNER, "affiliations", node=node)
        sub(out, ns.PUBSUB_OWNER, "affiliation", jid=owner, affiliation="owner")
        for member in config.get("members", ()):
            sub(out, ns.PUBSUB_OWNER, "affiliation", jid=member, affiliation="member")
        return result
    changes: dict[str, bool] = {}
    for item in request.iterchildren(qname(ns.PUBSUB_OWNER, "affiliation")):
        try:
            jid = str(JID.parse(item.get("jid", "")).bare)
        except JIDError as exc:
            raise PubsubError("bad-request", text=str(exc)) from exc
        kind = item.get("affiliation")
        if jid == owner or kind not in ("member", "none"):
            raise PubsubError("not-acceptable", text="only member or none, not for the owner")
        changes[jid] = kind == "member"
    await pep.set_members(owner, node, changes)
    return None


def install_disco(module: Module, pep: Pep) -> None:
    """XEP-0060 §5.2, §5.5: disco#items of an account lists the nodes the asker may read,
    disco#items at a node lists its items."""
    host = module.host

    async def items(event: StanzaEvent) -> bool:
        assert event.sender is not None
        target = event.to or event.sender
        owner, asker = str(target.bare), str(event.sender.bare)
        if event.to is not None and not await host.auth.user_exists(target.local or ""):
            return False  # the disco module answers for accounts that do not exist
        node = event.stanza[0].get("node")
        result = reply(event.stanza)
        query = sub(result, ns.DISCO_ITEMS, "query")
        try:
            if node is None:
                for name, config in await pep.visible_nodes(owner, asker):
                    item = sub(query, ns.DISCO_ITEMS, "item", jid=owner, node=name)
                    if config["title"]:
                        item.set("name", config["title"])
            else:
                query.set("node", node)
                for item_id, _xml in await pep.items(owner, node, asker, [], None):
                    sub(query, ns.DISCO_ITEMS, "item", jid=owner, name=item_id)
        except PubsubError as exc:
            return await event.reply_error(exc.condition, exc.text)
        except StorageError:
            return await event.reply_error("internal-server-error")
        return await event.reply(result)

    for scope in ("self", "bare"):
        module.hook(f"iq-get/{scope}/{ns.DISCO_ITEMS}:query", items, 1)


def install(module: Module, pep: Pep) -> None:
    host = module.host

    async def answer(event: StanzaEvent, work: Any) -> bool:
        try:
            result = await work
        except PubsubError as exc:
            app = element(ns.PUBSUB_ERRORS, exc.app) if exc.app else None
            if app is not None and exc.feature:
                app.set("feature", exc.feature)
            await host.route(
                None, error_reply(event.stanza, exc.condition, exc.text, app_condition=app)
            )
            return True
        except StorageError as exc:
            module.log.error("PEP storage failed: %s", exc)
            return await event.reply_error("internal-server-error")
        out = reply(event.stanza)
        if result is not None:
            out.append(result)
        return await event.reply(out)

    def owner_of(event: StanzaEvent) -> str:
        assert event.sender is not None
        return str(event.sender.bare)

    async def owner_set(event: StanzaEvent, pubsub: Element) -> Element | None:
        owner, action = owner_of(event), first_child(pubsub)
        name = local_name(action) if action is not None else ""
        node = action.get("node") if action is not None else None
        if name == "publish":
            options = publish_options(pubsub, pep.max_items)
            if not node:
                raise PubsubError("bad-request", "nodeid-required")
            items = list(action.iterchildren(_ITEM))  # type: ignore[union-attr]
            if len(items) > 1:
                raise PubsubError("bad-request", "invalid-payload", "one item per publish")
            item_id = await pep.publish(owner, node, items[0] if items else None, options)
            result = element(ns.PUBSUB, "pubsub")
            sub(sub(result, ns.PUBSUB, "publish", node=node), ns.PUBSUB, "item", id=item_id)
            return result
        if name == "retract":
            ids = [i.get("id", "") for i in action.iterchildren(_ITEM)]  # type: ignore[union-attr]
            notify = action.get("notify") in ("1", "true")  # type: ignore[union-attr]
            await pep.retract(owner, node or "", ids, notify)
            return None
        if name == "create":
            if not node:
                raise PubsubError("not-acceptable", "nodeid-required")
            configure = get_child(pubsub, ns.PUBSUB, "configure")
            x = get_child(configure, ns.DATA_FORMS, "x") if configure is not None else None
            await pep.create(owner, node, config_submission(x, pep.max_items))
            return None
        if name in ("subscribe", "unsubscribe", "options"):
            feature = "subscribe" if name != "options" else "subscription-options"
            raise PubsubError("feature-not-implemented", "unsupported", feature=feature)
        raise PubsubError("bad-request", text="unknown pubsub request")

    async def owner_config(event: StanzaEvent, pubsub: Element) -> Element | None:
        owner, action = owner_of(event), first_child(pubsub)
        name = local_name(action) if action is not None else ""
        node = action.get("node") if action is not None else None
        type_ = event.stanza.get("type")
        if type_ == "get" and name == "configure":
            config = await pep.node(owner, node)
            result = element(ns.PUBSUB_OWNER, "pubsub")
            sub(result, ns.PUBSUB_OWNER, "configure", node=node or "").append(
                form(config, pep.max_items)
            )
            return result
        if type_ == "get" and name == "default":
            result = element(ns.PUBSUB_OWNER, "pubsub")
            sub(result, ns.PUBSUB_OWNER, "default").append(
                form(default(pep.max_items), pep.max_items)
            )
            return result
        if type_ == "set" and name == "configure":
            x = get_child(action, ns.DATA_FORMS, "x")  # type: ignore[arg-type]
            if x is None:
                raise PubsubError("bad-request", text="a configure set needs a form")
            await pep.configure(owner, node or "", config_submission(x, pep.max_items))
            return None
        if type_ == "set" and name == "delete":
            await pep.delete(owner, node or "")
            return None
        if type_ == "set" and name == "purge":
            await pep.purge(owner, node or "")
            return None
        if name == "affiliations":
            return await affiliations(pep, owner, action, type_ or "")  # type: ignore[arg-type]
        feature = "manage-subscriptions" if name == "subscriptions" else "config-node"
        raise PubsubError("feature-not-implemented", "unsupported", feature=feature)

    async def get_items(event: StanzaEvent, pubsub: Element) -> Element:
        assert event.sender is not None
        owner = str(event.to.bare) if event.to is not None else owner_of(event)
        request = get_child(pubsub, ns.PUBSUB, "items")
        if request is None:
            raise PubsubError("feature-not-implemented", "unsupported", feature="subscribe")
        node = request.get("node", "")
        ids = [i.get("id", "") for i in request.iterchildren(_ITEM)]
        last = request.get("max_items")
        if last is not None and (not last.isdigit() or int(last) < 1):
            raise PubsubError("bad-request", text="max_items must be a positive integer")
        found = await pep.items(
            owner, node, str(event.sender.bare), ids, int(last) if last else None
        )
        result = element(ns.PUBSUB, "pubsub")
        out = sub(result, ns.PUBSUB, "items", node=node)
        for item_id, xml in found:
            sub(out, ns.PUBSUB, "item", id=item_id).append(parse(xml))
        return result

    async def on_pubsub_set(event: StanzaEvent) -> bool:
        async with pep.changing(owner_of(event)):
            return await answer(event, owner_set(event, event.stanza[0]))

    async def on_owner(event: StanzaEvent) -> bool:
        async with pep.changing(owner_of(event)):
            return await answer(event, owner_config(event, event.stanza[0]))

    async def on_get(event: StanzaEvent) -> bool:
        assert event.to is not None
        if not await host.auth.user_exists(event.to.local or ""):
            return await event.reply_error("service-unavailable")
        return await answer(event, get_items(event, event.stanza[0]))

    async def on_self_get(event: StanzaEvent) -> bool:
        return await answer(event, get_items(event, event.stanza[0]))

    async def not_yours(event: StanzaEvent) -> bool:
        return await event.reply_error("forbidden", "only the owner may change a PEP node")

    module.hook_iq("set/self", ns.PUBSUB, "pubsub", on_pubsub_set)
    module.hook_iq("get/self", ns.PUBSUB, "pubsub", on_self_get)
    module.hook_iq("get/bare", ns.PUBSUB, "pubsub", on_get)
    module.hook_iq("get/self set/self", ns.PUBSUB_OWNER, "pubsub", on_owner)
    module.hook_iq("set/bare get/bare", ns.PUBSUB_OWNER, "pubsub", not_yours)
    module.hook_iq("set/bare", ns.PUBSUB, "pubsub", not_yours)


def install_bookmarks(module: Module, pep: Pep) -> None:
    """XEP-0402 #compat: `storage:bookmarks` in private XML is the bookmarks node."""

    def storage_of(event: StanzaEvent) -> Element | None:
        query = first_child(event.stanza)
        children = elements(query) if query is not None else []
        if len(children) == 1 and children[0].tag == qname(ns.LEGACY_BOOKMARKS, "storage"):
            return children[0]
        return None

    async def current(owner: str) -> list[Item]:
        try:
            return await pep.items(owner, ns.BOOKMARKS, owner, [], None)
        except PubsubError:
            return []  # no node yet

    async def read(event: StanzaEvent) -> bool:
        if storage_of(event) is None:
            return False  # another namespace: the private module's
        owner = str(event.sender.bare)  # type: ignore[union-attr]
        items = [(item_id, parse(xml)) for item_id, xml in await current(owner)]
        result = reply(event.stanza)
        sub(result, ns.PRIVATE, "query").append(bookmarks.to_storage(items))
        return await event.reply(result)

    async def write(event: StanzaEvent) -> bool:
        if (storage := storage_of(event)) is None:
            return False
        owner = str(event.sender.bare)  # type: ignore[union-attr]
        try:
            wanted = bookmarks.from_storage(storage)
        except ValueError as exc:
            return await event.reply_error("bad-request", str(exc))
        if len(wanted) > pep.max_items:
            return await event.reply_error("not-acceptable", f"at most {pep.max_items} bookmarks")
        async with pep.changing(owner):
            return await sync(event, owner, wanted)

    async def sync(event: StanzaEvent, owner: str, wanted: dict[str, Element]) -> bool:
        options = {**bookmarks.NODE_CONFIG, "max_items": pep.max_items}
        try:
            config = (await pep.store.nodes(local_of(owner))).get(ns.BOOKMARKS)
            exists = config is not None
            if config is not None and config["max_items"] < len(wanted):
                limit = f"the bookmarks node keeps {config['max_items']} items"
                return await event.reply_error("not-acceptable", limit)
            old = dict((i, x) for i, x in await current(owner))
            for jid, conference in wanted.items():
                if old.get(jid) != serialize(conference):
                    item = element(ns.PUBSUB, "item", id=jid)
                    item.append(conference)
                    await pep.publish(owner, ns.BOOKMARKS, item, None if exists else options)
                    exists = True
            gone = [jid for jid in old if jid not in wanted]
            if gone:
                await pep.retract(owner, ns.BOOKMARKS, gone, True)
        except PubsubError as exc:
            return await event.reply_error(exc.condition, exc.text)
        except StorageError as exc:
            module.log.error("bookmarks storage failed: %s", exc)
            return await event.reply_error("internal-server-error")
        return await event.reply(reply(event.stanza))

    # Before the private module's own handler (priority 0).
    module.hook("iq-get/self/jabber:iq:private:query", read, 1)
    module.hook("iq-set/self/jabber:iq:private:query", write, 1)


def load(module: Module) -> None:
    host = module.host
    pep = Pep(module)
    host.services["pep"] = pep
    host.account_features.update([*FEATURES, ns.BOOKMARKS_COMPAT])
    host.account_identities.add(("pubsub", "pep", ""))  # XEP-0163 §3
    install(module, pep)
    install_disco(module, pep)
    install_bookmarks(module, pep)

    async def last_items(session: Session) -> bool:
        try:
            await pep.send_last(session)
        except StorageError:
            module.log.exception("cannot send the last PEP items to %s", session.full)
        return False

    async def account_deleted(event: AccountDeleted) -> bool:
        await pep.store.delete_user(event.local)
        return False

    module.hook("presence-initial", last_items)
    module.hook("account-deleted", account_deleted)
    module.hook("caps-changed", last_items)  # declared by the caps module (a dependency)


spec = ModuleSpec(
    name="pep",
    summary="personal eventing: a pubsub service on every account (XEP-0163, XEP-0060)",
    load=load,
    depends=("roster", "presence", "caps"),
    options={
        "max_nodes": Option(int, 100, "PEP nodes per account", min=1),
        "max_items": Option(int, 256, "items kept per node (larger requests are clamped)", min=1),
        "max_item_size": Option(int, 64 * 1024, "bytes per item payload", min=1024),
        "max_whitelist": Option(int, 100, "member JIDs on one whitelist node", min=1),
    },
    implements=(
        Implements("XEP-0163", "1.2.2", note="implicit +notify subscriptions, last item on login"),
        Implements(
            "XEP-0060",
            "1.26.0",
            status="partial",
            note="PEP subset: publish (options), retract, items, create, configure, delete, "
            "purge; access models open/presence/whitelist; no explicit subscriptions",
        ),
        Implements("XEP-0402", "1.1.4", note="#compat with XEP-0048 private storage"),
        Implements("XEP-0223", "1.1.1", note="persistent private nodes via publish-options"),
    ),
)
