"""XEP-0313 archive queries, shared by account archives (modules/mam.py) and room archives
(muc/archive.py): `serve_query` (store + owner + query element -> result messages + fin) and
its parts `parse_query`, `run_query`, `result_messages`, `fin`, `query_form`, `metadata`.
Helper of modules/mam.py, not a module itself.
"""

from __future__ import annotations

import datetime
import re
import uuid
from dataclasses import dataclass, field

from lxml import etree

from ..protocol import forms, rsm
from ..protocol import namespaces as ns
from ..protocol import stanza as st
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, get_child, sub
from ..storage.base import ArchiveItem, ArchivePage, ArchiveStore, UnknownArchiveId

XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"  # XEP-0122
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_FIELDS = frozenset({"with", "start", "end", "before-id", "after-id", "ids", "include-groupchat"})
# XEP-0082 DateTime: the time zone is required.
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def stamp(when: datetime.datetime) -> str:
    """XEP-0082 DateTime in UTC, to the microsecond the archive keeps (a client can reuse it
    as an exact start or end)."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- queries (shared with room archives) ------------------------------------------------------


class QueryError(Exception):
    """A query the archive refuses: answer `condition` (RFC 6120 §8.3.3) with `text`."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(slots=True)
class Query:
    queryid: str | None = None
    with_jid: str | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    after_id: str | None = None  # form 'after-id' (#extended)
    before_id: str | None = None  # form 'before-id'
    ids: list[str] = field(default_factory=list)
    page: rsm.Request = field(default_factory=rsm.Request)
    limit: int = 50
    flip: bool = False


def query_form() -> Element:
    """The fields a query may use (§4.1.5), in the `<query/>` answering a get."""
    query = element(ns.MAM, "query")
    types = {"with": "jid-single", "ids": "list-multi", "include-groupchat": "boolean"}
    names = ("with", "start", "end", "before-id", "after-id", "ids", "include-groupchat")
    x = forms.build(ns.MAM, [forms.Field(n, types.get(n, "text-single")) for n in names])
    for f in x:
        if f.get("var") == "ids":  # §4.1.5: an open list, never the list of all ids
            sub(sub(f, XDATA_VALIDATE, "validate", datatype="xs:string"), XDATA_VALIDATE, "open")
    query.append(x)
    return query


def parse_query(query: Element, *, default_limit: int, max_limit: int) -> Query:
    """Read a `<query xmlns='urn:xmpp:mam:2'/>` (form and RSM set); QueryError when it is bad.

    A page larger than `max_limit` is cut to it (XEP-0313 §4.3.1 lets the server limit pages;
    the fin then says the results are not complete)."""
    if query.get("node") is not None:
        raise QueryError("item-not-found", "this archive has no nodes")
    try:
        values = _form_values(query)
        unknown = sorted(set(values) - _FIELDS)
        if unknown:  # §4.1.5
            raise QueryError("feature-not-implemented", f"unknown query field {unknown[0]!r}")
        forms.boolean(values, "include-groupchat")  # user archives hold no groupchat anyway
        page = rsm.find(query) or rsm.Request()
        q = Query(
            queryid=query.get("queryid"),
            with_jid=_jid(forms.single(values, "with")),
            start=_datetime(forms.single(values, "start")),
            end=_datetime(forms.single(values, "end")),
            after_id=forms.single(values, "after-id") or None,
            before_id=forms.single(values, "before-id") or None,
            ids=list(dict.fromkeys(v for v in values.get("ids", []) if v)),
            page=page,
            flip=get_child(query, ns.MAM, "flip-page") is not None,
        )
    except (forms.FormError, rsm.RSMError, ValueError) as exc:
        raise QueryError("bad-request", str(exc)) from exc
    if page.index is not None:
        raise QueryError("feature-not-implemented", "page with <after/> or <before/>, not <index/>")
    if len(q.ids) > max_limit:
        raise QueryError("policy-violation", f"at most {max_limit} ids in one query")
    q.limit = min(default_limit if page.max is None else page.max, max_limit)
    return q


def _form_values(query: Element) -> dict[str, list[str]]:
    x = get_child(query, ns.DATA_FORMS, "x")
    return {} if x is None else forms.parse_submission(x, ns.MAM)


def _jid(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(JID.parse(text))
    except JIDError as exc:
        raise ValueError(f"'with' is not a JID: {exc}") from exc


def _datetime(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a XEP-0082 DateTime")
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def run_query(store: ArchiveStore, owner: str, q: Query) -> ArchivePage:
    """The page `q` asks for. RSM's cursor pages within the form's range; when both name an
    id on one side, the cursor (taken from an earlier page of this range) bounds the page and
    the form's id is only checked to exist. item-not-found for any unknown id (§4.1.3, §4.3.2).
    """
    try:
        if q.ids:
            return await _by_ids(store, owner, q)
        page = q.page
        after = page.after if page.after is not None else q.after_id
        before = page.before or q.before_id
        for shadowed in (q.after_id if page.after is not None else None, q.before_id):
            if shadowed is not None and shadowed != before:
                await store.query(owner, after_id=shadowed, limit=0)
        return await store.query(
            owner,
            with_jid=q.with_jid,
            start=q.start,
            end=q.end,
            after_id=after,
            before_id=before,
            limit=q.limit,
            backward=page.backward,
        )
    except UnknownArchiveId as exc:
        raise QueryError("item-not-found", "no message with that id in this archive") from exc


async def _by_ids(store: ArchiveStore, owner: str, q: Query) -> ArchivePage:
    """Single-item retrieval (#extended): each id, then the query's other filters."""
    items = [await _fetch(store, owner, id_) for id_ in q.ids]
    items = [item for item in items if _matches(item, q)]
    items.sort(key=lambda item: item.timestamp)
    return ArchivePage(items=items, complete=True)


async def _fetch(store: ArchiveStore, owner: str, id_: str) -> ArchiveItem:
    """One item by id through the store's cursors: the item just before the one after it (or
    the newest). A message archived in between makes the guess miss: try again."""
    for _attempt in range(3):
        following = await store.query(owner, after_id=id_, limit=1)  # UnknownArchiveId if absent
        if following.items:
            page = await store.query(owner, before_id=following.items[0].id, backward=True, limit=1)
        else:
            page = await store.query(owner, backward=True, limit=1)
        if page.items and page.items[0].id == id_:
            return page.items[0]
    raise QueryError("resource-constraint", "the archive is changing too fast; try again")


def _matches(item: ArchiveItem, q: Query) -> bool:
    if q.start is not None and item.timestamp < q.start:
        return False
    if q.end is not None and item.timestamp > q.end:
        return False
    if q.with_jid is None:
        return True
    if "/" in q.with_jid:
        return item.with_jid == q.with_jid
    return item.with_jid.partition("/")[0] == q.with_jid


def result_messages(items: list[ArchiveItem], q: Query, *, archive: str, to: str) -> list[Element]:
    """One `<message><result><forwarded>` per item (§4.2), in archive order, or newest first
    for `<flip-page/>`."""
    out = []
    for item in reversed(items) if q.flip else items:
        message = st.make("message", {"from": archive, "to": to, "id": uuid.uuid4().hex})
        result = sub(message, ns.MAM, "result", id=item.id)
        if q.queryid is not None:
            result.set("queryid", q.queryid)
        forwarded = sub(result, ns.FORWARD, "forwarded")
        sub(forwarded, ns.DELAY, "delay", stamp=stamp(item.timestamp))
        forwarded.append(etree.fromstring(item.stanza_xml.encode(), _PARSER))
        out.append(message)
    return out


def fin(page: ArchivePage) -> Element:
    """The `<fin/>` for the iq result: complete when nothing lies beyond the page in its
    direction; RSM first/last are the page's oldest and newest ids. Results are stable (one
    database), so no 'stable' attribute (§4.3.2: absent means true)."""
    el = element(ns.MAM, "fin")
    if page.complete:
        el.set("complete", "true")
    items = page.items
    el.append(rsm.build(items[0].id if items else None, items[-1].id if items else None))
    return el


async def metadata(store: ArchiveStore, owner: str) -> Element:
    """§5: the oldest and newest items of the archive (nothing for an empty one)."""
    el = element(ns.MAM, "metadata")
    oldest = await store.query(owner, limit=1)
    newest = await store.query(owner, limit=1, backward=True)
    for name, page in (("start", oldest), ("end", newest)):
        for item in page.items:
            sub(el, ns.MAM, name, id=item.id, timestamp=stamp(item.timestamp))
    return el


async def serve_query(
    store: ArchiveStore,
    owner: str,
    query: Element,
    *,
    archive: str,
    to: str,
    default_limit: int,
    max_limit: int,
) -> tuple[list[Element], Element]:
    """Answer a query element: the result messages to send first, then the `<fin/>` for the iq
    result. QueryError for the iq error."""
    q = parse_query(query, default_limit=default_limit, max_limit=max_limit)
    page = await run_query(store, owner, q)
    return result_messages(page.items, q, archive=archive, to=to), fin(page)
