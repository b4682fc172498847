"""XEP-0004 data forms: build forms to send, read forms clients submit. No I/O.

A form is described by `Field`s; a submitted form comes back as `{var: [values]}` after
`parse_submission`, which checks the FORM_TYPE when one is expected and refuses duplicate
fields (XEP-0004 §3.2: a var appears at most once). Callers turn `FormError` into a
`bad-request` or `not-acceptable` stanza error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import namespaces as ns
from .stanza import Element, element, qname, sub

FIELD_TYPES = frozenset(
    {
        "boolean",
        "fixed",
        "hidden",
        "jid-multi",
        "jid-single",
        "list-multi",
        "list-single",
        "text-multi",
        "text-private",
        "text-single",
    }
)
_FIELD = qname(ns.DATA_FORMS, "field")
_VALUE = qname(ns.DATA_FORMS, "value")


class FormError(ValueError):
    """A submitted form is malformed or of the wrong FORM_TYPE."""


@dataclass(slots=True)
class Field:
    var: str
    type: str = "text-single"
    label: str = ""
    values: list[str] = field(default_factory=list)
    options: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    required: bool = False
    desc: str = ""

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"unknown data form field type {self.type!r}")


def build(
    form_type: str | None,
    fields: list[Field],
    *,
    kind: str = "form",
    title: str = "",
    instructions: str = "",
) -> Element:
    """An `<x xmlns='jabber:x:data' type=kind>` element; FORM_TYPE first when given."""
    x = element(ns.DATA_FORMS, "x", type=kind)
    if title:
        sub(x, ns.DATA_FORMS, "title", title)
    if instructions:
        sub(x, ns.DATA_FORMS, "instructions", instructions)
    if form_type is not None:
        hidden = sub(x, ns.DATA_FORMS, "field", var="FORM_TYPE", type="hidden")
        sub(hidden, ns.DATA_FORMS, "value", form_type)
    for f in fields:
        attrs = {"var": f.var, "type": f.type}
        if f.label:
            attrs["label"] = f.label
        if kind == "submit":
            attrs.pop("type")  # XEP-0004 §3.2: a submitting entity may omit the type
        el = sub(x, ns.DATA_FORMS, "field", **attrs)
        if f.desc and kind == "form":
            sub(el, ns.DATA_FORMS, "desc", f.desc)
        if f.required and kind == "form":
            sub(el, ns.DATA_FORMS, "required")
        for value in f.values:
            sub(el, ns.DATA_FORMS, "value", value)
        if kind == "form":
            for label, value in f.options:
                option = sub(el, ns.DATA_FORMS, "option", **({"label": label} if label else {}))
                sub(option, ns.DATA_FORMS, "value", value)
    return x


def parse_submission(x: Element, form_type: str | None = None) -> dict[str, list[str]]:
    """Values by var of a submitted form (`type='submit'`); FORM_TYPE is checked, not returned."""
    if x.tag != qname(ns.DATA_FORMS, "x"):
        raise FormError("not a jabber:x:data form")
    if x.get("type") not in ("submit", "result"):
        raise FormError(f"expected a submitted form, got type {x.get('type')!r}")
    values: dict[str, list[str]] = {}
    for el in x.iter(_FIELD):
        var = el.get("var")
        if not var:
            raise FormError("a submitted field needs a var")
        if var in values:
            raise FormError(f"field {var!r} appears twice")
        values[var] = [(v.text or "") for v in el.iter(_VALUE)]
    submitted_type = values.pop("FORM_TYPE", None)
    if form_type is not None and submitted_type is not None and submitted_type != [form_type]:
        raise FormError(f"FORM_TYPE must be {form_type}")
    return values


def single(values: dict[str, list[str]], var: str, default: str | None = None) -> str | None:
    """The one value of a single-valued field; FormError when it has several."""
    got = values.get(var)
    if not got:
        return default
    if len(got) > 1:
        raise FormError(f"field {var!r} takes one value")
    return got[0]


def boolean(values: dict[str, list[str]], var: str, default: bool = False) -> bool:
    """XEP-0004 §3.3 boolean: 1/true or 0/false."""
    value = single(values, var)
    if value is None:
        return default
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise FormError(f"field {var!r} must be a boolean, got {value!r}")
