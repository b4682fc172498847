"""`/filter/rules`: the word filter (xmppd/wordfilter.py) edited while the server runs, and
`/spam-reports`: the XEP-0377 reports users sent (modules/spam_reports.py).

An edit is stored (keyval `word_filter` of the main domain) before it takes effect, so it
outlives restarts and reloads; edits lie over the configured `[filter] rules`: a rule set here
wins over the configured one of that name, a configured rule removed here stays removed.
In a cluster the other nodes pick edits up at their next reload (SIGHUP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..storage.base import StorageError
from ..wordfilter import MAX_PATTERN, RuleError
from .routes import LIMIT, ApiError, Call, body_obj, not_found, obj, route

if TYPE_CHECKING:
    from ..server import Server

STORE, KEY = "word_filter", "edits"
RULE = obj(
    ["name", "pattern"],
    name={"type": "string"},
    pattern={"type": "string"},
    configured={"type": "boolean", "description": "whether [filter] rules has it"},
)
REPORT = obj(
    ["id", "time", "reporter", "jid", "reason", "stanza_ids", "text"],
    id={"type": "string"},
    time={"type": "string", "format": "date-time"},
    reporter={"type": "string"},
    jid={"type": "string", "description": "the reported JID"},
    reason={"type": "string", "enum": ["urn:xmpp:reporting:spam", "urn:xmpp:reporting:abuse"]},
    stanza_ids={"type": "array", "items": {"type": "string"}},
    text={"type": "string"},
)


def _store(server: Server) -> Any:
    assert server.db is not None
    return server.db.for_host(server.config.server["domain"]).keyval(STORE)


async def load_edits(server: Server) -> dict[str, str | None]:
    doc = await _store(server).get(KEY)
    return dict((doc or {}).get("rules", {}))


async def _save(call: Call, edits: dict[str, str | None]) -> None:
    try:
        await _store(call.server).set(KEY, {"rules": edits})
    except StorageError as exc:
        raise ApiError(503, "storage", f"cannot store the word filter: {exc}") from None


def _rule(call: Call, name: str) -> dict[str, Any]:
    word_filter = call.server.word_filter
    configured = word_filter.configured.get(name) is not None
    return {"name": name, "pattern": word_filter.rules[name].pattern, "configured": configured}


@route(
    "GET",
    "/filter/rules",
    "read",
    "The word filter's rules in force (configured and edited), by name",
    obj(["rules"], rules={"type": "array", "items": RULE}),
)
async def _list_rules(call: Call) -> Any:
    return {"rules": [_rule(call, name) for name in call.server.word_filter.rules]}


@route(
    "PUT",
    "/filter/rules/{name}",
    "moderation",
    "Add or replace a rule: messages matching the pattern (a Python regular expression, "
    "searched anywhere in the text) are refused with an error naming the rule",
    RULE,
    body=body_obj(
        ["pattern"], pattern={"type": "string", "minLength": 1, "maxLength": MAX_PATTERN}
    ),
)
async def _set_rule(call: Call) -> Any:
    name, pattern, word_filter = call.path["name"], call.body["pattern"], call.server.word_filter
    try:
        word_filter.check_rule(name, pattern)
    except RuleError as exc:
        about_name = str(exc).startswith(("rule name", "at most"))  # else about the pattern
        raise ApiError(422, "invalid", str(exc), "name" if about_name else "pattern") from None
    await _save(call, {**word_filter.edits, name: pattern})
    word_filter.set_rule(name, pattern)
    call.audit.append(f"set word filter rule {name!r} to {pattern!r}")
    return _rule(call, name)


@route(
    "DELETE",
    "/filter/rules/{name}",
    "moderation",
    "Remove a rule (a configured one stays removed across reloads and restarts)",
    RULE,
    errors=(404,),
)
async def _remove_rule(call: Call) -> Any:
    name, word_filter = call.path["name"], call.server.word_filter
    if name not in word_filter.rules:
        raise not_found(f"no word filter rule {name!r}")
    removed = _rule(call, name)
    await _save(call, {**word_filter.edits, name: None})
    word_filter.remove_rule(name)
    call.audit.append(f"removed word filter rule {name!r}")
    return removed


@route(
    "GET",
    "/spam-reports",
    "read",
    "The newest spam and abuse reports users sent (XEP-0377), oldest first",
    obj(["reports"], reports={"type": "array", "items": REPORT}),
    query={"limit": LIMIT},
)
async def _spam_reports(call: Call) -> Any:
    host = call.server.hosts[call.server.config.server["domain"]]
    reports = host.services.get("spam_reports")
    if reports is None:  # the module is off: nothing was recorded
        return {"reports": []}
    try:
        return {"reports": await reports.recent(call.query["limit"])}
    except StorageError as exc:
        raise ApiError(503, "storage", f"cannot read the reports: {exc}") from None
