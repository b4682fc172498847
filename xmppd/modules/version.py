"""XEP-0092: software name and version of the server."""

import platform

from .. import __version__
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import reply, sub
from ..router import StanzaEvent


def load(module: Module) -> None:
    module.add_feature(ns.VERSION)
    os_name = None if module.options["hide_os"] else f"{platform.system()} {platform.release()}"

    async def version(event: StanzaEvent) -> bool:
        result = reply(event.stanza)
        query = sub(result, ns.VERSION, "query")
        sub(query, ns.VERSION, "name", "xmppd")
        sub(query, ns.VERSION, "version", __version__)
        if os_name:
            sub(query, ns.VERSION, "os", os_name)
        return await event.reply(result)

    module.hook_iq("get/host", ns.VERSION, "query", version)


spec = ModuleSpec(
    name="version",
    summary="tells clients the server's software name and version",
    load=load,
    options={"hide_os": Option(bool, False, "leave the operating system out of the answer")},
    implements=(Implements("XEP-0092", "1.1"),),
)
