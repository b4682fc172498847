"""XEP-0059 Result Set Management: read a request's `<set/>`, build a response's. No I/O.

A request names a page by the UID of the item it follows (`<after>`) or precedes (`<before>`;
empty: the last page), or by `<index>`, and caps its size with `<max>`. Callers turn `RSMError`
into a `bad-request` stanza error (§2.6 wants one for a malformed request).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import namespaces as ns
from .stanza import Element, element, get_child, local_name, namespace_of, sub

# Far beyond any page a server sends; longer digit strings are refused before int() reads them.
_MAX_DIGITS = 9


class RSMError(ValueError):
    """A malformed `<set/>` in a request."""


@dataclass(frozen=True, slots=True)
class Request:
    max: int | None = None  # None: the responding entity decides
    after: str | None = None  # the UID the page follows
    before: str | None = None  # the UID the page precedes; "" asks for the last page
    index: int | None = None  # §2.5 random access by position

    @property
    def backward(self) -> bool:
        """Paging from the newest end (`<before/>`, §2.3)."""
        return self.before is not None


def find(parent: Element) -> Request | None:
    """The request in `parent`'s `<set xmlns='http://jabber.org/protocol/rsm'/>`, if any."""
    el = get_child(parent, ns.RSM, "set")
    return None if el is None else parse(el)


def parse(set_el: Element) -> Request:
    values: dict[str, str] = {}
    for child in set_el:
        if not isinstance(child.tag, str) or namespace_of(child) != ns.RSM:
            continue
        name = local_name(child)
        if name not in ("max", "after", "before", "index"):
            continue  # first/last/count belong to responses; ignore them in a request
        if name in values:
            raise RSMError(f"<{name}/> appears twice")
        values[name] = (child.text or "").strip()
    after = values.get("after")
    if after == "":
        raise RSMError("<after/> needs the UID of an item")  # §2.2: only <before/> may be empty
    return Request(
        max=_count(values, "max"),
        after=after,
        before=values.get("before"),
        index=_count(values, "index"),
    )


def _count(values: dict[str, str], name: str) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise RSMError(f"<{name}/> must be a non-negative integer")
    return int(text)


def build(
    first: str | None = None,
    last: str | None = None,
    *,
    count: int | None = None,
    first_index: int | None = None,
) -> Element:
    """A response `<set/>`: the UIDs of the page's first and last items (§2.1), and the size of
    the whole result set when known. An empty page has neither first nor last (§2.7)."""
    out = element(ns.RSM, "set")
    if first is not None:
        attrs = {"index": str(first_index)} if first_index is not None else {}
        sub(out, ns.RSM, "first", first, **attrs)
    if last is not None:
        sub(out, ns.RSM, "last", last)
    if count is not None:
        sub(out, ns.RSM, "count", str(count))
    return out
