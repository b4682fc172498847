// The `phoenix` npm client on the user topic, driven by tests/xmppd/cluster/test_cluster_channels.py.
// Usage: node user_chat.mjs ENDPOINT TOKEN BARE PEER
// Joins user:BARE, asks PEER for a subscription and approves PEER's, answers PEER's first chat
// message, and exits 0 once it has answered and PEER shows in the presence list. Prints one
// JSON line per step.
import { WebSocket as WsWebSocket } from "ws";
globalThis.WebSocket ??= WsWebSocket; // node < 22 has no global WebSocket
const { Socket, Presence } = await import("phoenix");

const [endpoint, token, bare, peer] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (err) => {
  process.stderr.write(`error: ${JSON.stringify(err)}\n`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 40000).unref();

const socket = new Socket(endpoint, { params: { token }, reconnectAfterMs: () => 60000 });
socket.connect();
const channel = socket.channel(`user:${bare}`, {});
const presence = new Presence(channel);
let seen = false;
let answered = false;
const finish = () => {
  if (seen && answered) {
    channel.leave().receive("ok", () => socket.disconnect(() => process.exit(0)));
  }
};
presence.onSync(() => {
  const online = presence.list((jid) => jid);
  if (!seen && online.includes(peer)) {
    seen = true;
    say({ presence: online });
    finish();
  }
});
channel.on("subscribe_request", (request) => {
  channel.push("approve", { jid: request.from }).receive("ok", () => say({ approved: request.from }));
});
channel.on("new_msg", (msg) => {
  if (msg.from !== peer || answered) return;
  say({ got: msg.body, resource: msg.resource });
  channel.push("new_msg", { to: `${peer}/${msg.resource}`, body: "answer from phoenix" })
    .receive("ok", () => {
      answered = true;
      say({ answered: true });
      finish();
    })
    .receive("error", fail);
});
channel.join()
  .receive("ok", (resp) => {
    say({ joined: resp.jid });
    channel.push("subscribe", { jid: peer }).receive("error", fail);
  })
  .receive("error", fail);
