"""XEP-0199: the server answers pings addressed to itself."""

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import reply
from ..router import StanzaEvent


def load(module: Module) -> None:
    module.add_feature(ns.PING)

    async def pong(event: StanzaEvent) -> bool:
        return await event.reply(reply(event.stanza))

    module.hook_iq("get/host", ns.PING, "ping", pong)


spec = ModuleSpec(
    name="ping",
    summary="answers XMPP pings to the server",
    load=load,
    implements=(Implements("XEP-0199", "2.0.1"),),
)
