// @xmpp/client over WebSocket, driven by tests/web/test_xmpp_client.py.
// Usage: node xmpp_client.mjs SERVICE DOMAIN USER PASSWORD PEER
// Logs in, sends "ping from node" to PEER, waits for PEER's answer, prints one JSON line per
// step ({"online": jid}, {"reply": body}) and exits 0; any error exits 1.
import { WebSocket as WsWebSocket } from "ws";
// node < 22 has no global WebSocket, which @xmpp/websocket expects: use the ws package then.
globalThis.WebSocket ??= WsWebSocket;
const { client, xml } = await import("@xmpp/client");

const [service, domain, username, password, peer] = process.argv.slice(2);
const xmpp = client({ service, domain, username, password, resource: "node" });
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (err) => {
  process.stderr.write(`error: ${err && (err.stack || err)}\n`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 20000).unref();

xmpp.on("error", fail);
xmpp.on("stanza", async (stanza) => {
  if (stanza.is("message") && stanza.attrs.from?.startsWith(peer)) {
    say({ reply: stanza.getChildText("body") });
    await xmpp.stop();
    process.exit(0);
  }
});
xmpp.on("online", async (address) => {
  say({ online: address.toString() });
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { type: "chat", to: peer }, xml("body", {}, "ping from node")));
});
xmpp.start().catch(fail);
