// The `phoenix` npm client in node, driven by tests/web/test_channels.py.
// Usage: node channels.mjs ENDPOINT TOKEN ROOM PEER_NICK websocket|longpoll
// Joins room:ROOM with a host-app token, waits until PEER_NICK is in the presence state, sends
// a new_msg, then waits for PEER_NICK's answer. Prints one JSON line per step and exits 0.
import { WebSocket as WsWebSocket } from "ws";
globalThis.WebSocket ??= WsWebSocket; // node < 22 has no global WebSocket
const { Socket, LongPoll, Presence } = await import("phoenix");

const [endpoint, token, room, peer, transport] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (err) => {
  process.stderr.write(`error: ${JSON.stringify(err)}\n`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 20000).unref();

const options = { params: { token }, reconnectAfterMs: () => 60000 };
if (transport === "longpoll") options.transport = LongPoll;
const socket = new Socket(endpoint, options);
socket.onError((e) => say({ socket_error: String(e && (e.message || e.type || e)) }));
socket.connect();

const channel = socket.channel(`room:${room}`, { nick: "webuser" });
const presence = new Presence(channel);
let sent = false;
presence.onSync(() => {
  const nicks = presence.list((nick) => nick).sort();
  if (!sent && nicks.includes(peer)) {
    sent = true;
    say({ presence: nicks });
    channel.push("new_msg", { body: "hello from phoenix" })
      .receive("ok", () => say({ pushed: true }))
      .receive("error", fail);
  }
});
channel.on("new_msg", (msg) => {
  if (msg.from === peer) {
    say({ reply: msg.body });
    channel.leave().receive("ok", () => {
      socket.disconnect(() => process.exit(0));
    });
  }
});
channel.join()
  .receive("ok", (resp) => say({ joined: resp }))
  .receive("error", fail);
