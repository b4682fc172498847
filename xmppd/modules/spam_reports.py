"""XEP-0377 Spam Reporting: a `<report xmlns='urn:xmpp:reporting:1'/>` inside a XEP-0191
`<block/>` item reaches the admins.

Each report is written to the admin log (logger `xmppd.admin.reports`, level WARNING: reporter,
reported JID, reason, the reported stanza ids and the reporter's text) and kept in the archive
store `spam_reports` under the host's domain, newest last (`Reports.recent`, which the admin
HTTP API can list). The block itself is the blocking module's: this hook only observes the
request, before it, and never answers it. A request whose report is malformed (an unknown
reason) is refused with `bad-request` before anything is blocked.

Limits: MAX_TEXT characters of the reporter's text and MAX_IDS stanza ids are kept per report.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import first_child, qname
from ..router import StanzaEvent
from ..storage import StorageError

REPORTING = "urn:xmpp:reporting:1"
REASONS = ("urn:xmpp:reporting:spam", "urn:xmpp:reporting:abuse")
STANZA_ID = "urn:xmpp:sid:0"
STORE = "spam_reports"
MAX_TEXT = 2000
MAX_IDS = 20
report_log = logging.getLogger("xmppd.admin.reports")
_ITEM = qname(ns.BLOCKING, "item")
_REPORT = qname(REPORTING, "report")


class Reports:
    """The "spam_reports" service of a host."""

    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.log = module.log
        self.store = module.open_archive(STORE)

    async def observe(self, event: StanzaEvent) -> bool:
        """`iq-set/self/urn:xmpp:blocking:block`, before the blocking module answers it."""
        session, block = event.origin, first_child(event.stanza)
        if session is None or block is None:
            return False
        found = []
        for item in block.iterchildren(_ITEM):
            report = item.find(_REPORT)
            if report is None:
                continue
            if report.get("reason") not in REASONS:
                reasons = " or ".join(REASONS)
                return await event.reply_error("bad-request", f"a report's reason is {reasons}")
            found.append(parse(item.get("jid") or "", report))
        for entry in found:
            await self.record(session.bare, entry)
        return False  # the blocking module blocks and answers

    async def record(self, reporter: str, entry: dict[str, Any]) -> None:
        entry = {"reporter": reporter, **entry}
        report_log.warning(
            "spam report from %s about %s: %s, stanza ids %s, text %r",
            reporter,
            entry["jid"],
            entry["reason"].rpartition(":")[2],
            ",".join(entry["stanza_ids"]) or "-",
            entry["text"],
        )
        try:
            await self.store.append(
                self.host.domain, with_jid=entry["jid"], stanza_xml=json.dumps(entry)
            )
        except StorageError as exc:  # the log line above is the record that matters
            self.log.error("cannot store a spam report: %s", exc)

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest reports (oldest first), each with its archive id and time."""
        page = await self.store.query(self.host.domain, limit=limit, backward=True)
        return [
            {"id": i.id, "time": i.timestamp.isoformat(), **json.loads(i.stanza_xml)}
            for i in page.items
        ]


def parse(jid: str, report: Any) -> dict[str, Any]:
    ids = [
        {"id": s.get("id", ""), "by": s.get("by", "")}
        for s in report.iterchildren(qname(STANZA_ID, "stanza-id"))
    ][:MAX_IDS]
    texts = [t.text or "" for t in report.iterchildren(qname(REPORTING, "text"))]
    return {
        "jid": jid,
        "reason": report.get("reason"),
        "stanza_ids": [i["id"] for i in ids if i["id"]],
        "text": "\n".join(texts)[:MAX_TEXT],
    }


def load(module: Module) -> None:
    reports = Reports(module)
    module.host.services["spam_reports"] = reports
    module.add_feature(REPORTING)
    for reason in REASONS:
        module.add_feature(reason)
    module.hook(f"iq-set/self/{ns.BLOCKING}:block", reports.observe, 1)


spec = ModuleSpec(
    name="spam_reports",
    summary="spam and abuse reports in blocking requests go to the admin log (XEP-0377)",
    load=load,
    depends=("blocking",),
    implements=(Implements("XEP-0377", "0.4.0"),),
)
