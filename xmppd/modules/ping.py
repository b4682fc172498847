"""XEP-0199: the server answers pings addressed to itself, and (RFC 6120 §10.3.3) pings with no
`to` or to the sender's own account, which it handles on the account's behalf."""

from ..module import Implements, Module, ModuleSpec
from ..protocol import namespaces as ns
from ..protocol.stanza import reply
from ..router import StanzaEvent


def load(module: Module) -> None:
    module.add_feature(ns.PING)

    async def pong(event: StanzaEvent) -> bool:
        return await event.reply(reply(event.stanza))

    module.hook_iq("get/host get/self", ns.PING, "ping", pong)


spec = ModuleSpec(
    name="ping",
    summary="answers XMPP pings to the server",
    load=load,
    implements=(Implements("XEP-0199", "2.0.1"),),
)
