"""Stanza helpers over plain lxml elements.

Stanzas are lxml elements in the `jabber:client` namespace. Helpers here build new elements and
replies; they never mutate a stanza they did not create (copy-on-write, see DESIGN.md).
Every element we create carries the default namespace in its nsmap so that `etree.tostring`
writes `<message xmlns="jabber:client">`, never an `ns0:` prefix.
"""

from __future__ import annotations

from copy import deepcopy

from lxml import etree

from . import namespaces as ns

Element = etree._Element

_CLIENT_NSMAP = {None: ns.CLIENT}
KINDS = frozenset({"message", "presence", "iq"})


def qname(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


MESSAGE = qname(ns.CLIENT, "message")
PRESENCE = qname(ns.CLIENT, "presence")
IQ = qname(ns.CLIENT, "iq")


def local_name(el: Element) -> str:
    tag = el.tag
    return tag[tag.index("}") + 1 :] if tag[0] == "{" else tag


def namespace_of(el: Element) -> str:
    tag = el.tag
    return tag[1 : tag.index("}")] if tag[0] == "{" else ""


def make(kind: str, attrs: dict[str, str] | None = None, namespace: str = ns.CLIENT) -> Element:
    """A new top-level stanza element (message/presence/iq) with the given attributes."""
    el = etree.Element(qname(namespace, kind), nsmap={None: namespace})
    if attrs:
        for key, value in attrs.items():
            if value is not None:
                el.set(key, value)
    return el


def sub(
    parent: Element, namespace: str, local: str, text: str | None = None, **attrs: str
) -> Element:
    """Append a child, declaring `namespace` as its default when it differs from the parent's."""
    if namespace == namespace_of(parent):
        child = etree.SubElement(parent, qname(namespace, local))
    else:
        child = etree.SubElement(parent, qname(namespace, local), nsmap={None: namespace})
    for key, value in attrs.items():
        child.set(key, value)
    if text is not None:
        child.text = text
    return child


def element(namespace: str, local: str, **attrs: str) -> Element:
    el = etree.Element(qname(namespace, local), nsmap={None: namespace})
    for key, value in attrs.items():
        el.set(key, value)
    return el


def get_child(el: Element, namespace: str, local: str) -> Element | None:
    return el.find(qname(namespace, local))


def child_text(el: Element, namespace: str, local: str) -> str | None:
    child = el.find(qname(namespace, local))
    return None if child is None else (child.text or "")


def first_child(el: Element) -> Element | None:
    for child in el:
        if isinstance(child.tag, str):
            return child
    return None


def copy(el: Element) -> Element:
    """A deep copy a module may change freely (copy-on-write)."""
    return deepcopy(el)


def reply(stanza: Element, type_: str = "result") -> Element:
    """An empty reply to `stanza` (to/from swapped, same id) of the given type."""
    attrs = {"type": type_}
    if (sid := stanza.get("id")) is not None:
        attrs["id"] = sid
    if (frm := stanza.get("from")) is not None:
        attrs["to"] = frm
    if (to := stanza.get("to")) is not None:
        attrs["from"] = to
    return make(local_name(stanza), attrs, namespace_of(stanza) or ns.CLIENT)


# RFC 6120 §8.3.3: condition -> default error type
# Serialized bytes of original payload an error reply carries back at most (else none of it).
MAX_ERROR_PAYLOAD = 1024
ERROR_TYPES: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


def error_reply(
    stanza: Element,
    condition: str,
    text: str | None = None,
    type_: str | None = None,
    by: str | None = None,
    app_condition: Element | None = None,
) -> Element:
    """A stanza error reply (RFC 6120 §8.3) carrying the original payload for message/presence."""
    err_stanza = reply(stanza, "error")
    kind = local_name(stanza)
    if kind != "iq":
        # Include the original children so the sender can tell which stanza failed (RFC 6120
        # §8.3.1: MAY), unless they are big: a bounce never costs much more than its id.
        children = [c for c in stanza if isinstance(c.tag, str) and local_name(c) != "error"]
        if sum(len(etree.tostring(c)) for c in children) <= MAX_ERROR_PAYLOAD:
            for child in children:
                err_stanza.append(deepcopy(child))
    error = sub(err_stanza, namespace_of(err_stanza) or ns.CLIENT, "error")
    error.set("type", type_ or ERROR_TYPES.get(condition, "cancel"))
    if by:
        error.set("by", by)
    sub(error, ns.STANZA_ERRORS, condition)
    if text:
        text_el = sub(error, ns.STANZA_ERRORS, "text", text)
        text_el.set(qname(ns.XML, "lang"), "en")
    if app_condition is not None:
        error.append(app_condition)
    return err_stanza
