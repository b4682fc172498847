"""XEP-0202: the server's current time."""

import datetime

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import reply, sub
from ..router import StanzaEvent


def load(module: Module) -> None:
    module.add_feature(ns.TIME)

    async def entity_time(event: StanzaEvent) -> bool:
        now = datetime.datetime.now(datetime.UTC)
        result = reply(event.stanza)
        time_el = sub(result, ns.TIME, "time")
        sub(time_el, ns.TIME, "tzo", "+00:00")
        # COMPAT: whole seconds, as in XEP-0202's examples; some clients choke on fractions.
        sub(time_el, ns.TIME, "utc", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return await event.reply(result)

    module.hook_iq("get/host", ns.TIME, "time", entity_time)


spec = ModuleSpec(
    name="time",
    summary="tells clients the server's time",
    load=load,
    implements=(Implements("XEP-0202", "2.0"),),
)
