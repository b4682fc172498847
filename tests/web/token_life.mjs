// The `phoenix` npm client in node, driven by tests/xmppd/test_tokens.py: a session whose
// host-app token runs out or is revoked. Usage:
//   node token_life.mjs ENDPOINT websocket|longpoll TOPIC TOKEN [NEXT_TOKEN]
// Joins TOPIC with TOKEN and prints one JSON line per event: {"joined": n}, {"close": {code,
// reason}}, {"error": ...}. With NEXT_TOKEN, `params` hands the socket that token once it has
// closed (the refresh-by-reconnect flow of docs/channels.md), the channel rejoins, and the
// script exits after the second join; without, it exits after the first close.
// With REFRESH=tok1,tok2 in the environment, it pushes `refresh_token` with each on the
// `phoenix` topic once joined, and prints each reply as {"refresh": {status, response}}.
import { WebSocket as WsWebSocket } from "ws";
globalThis.WebSocket ??= WsWebSocket; // node < 22 has no global WebSocket
const { Socket, LongPoll } = await import("phoenix");

const [endpoint, transport, topic, token, nextToken] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
setTimeout(() => { say({ timeout: true }); process.exit(1); }, 30000).unref();

let current = token;
let joins = 0;
const options = { params: () => ({ token: current }), reconnectAfterMs: () => 300 };
if (transport === "longpoll") options.transport = LongPoll;
const socket = new Socket(endpoint, options);
socket.onError((e) => say({ error: String(e && (e.message || e.type || e)) }));
socket.onClose((event) => {
  say({ close: { code: event.code, reason: event.reason } });
  if (!nextToken) {
    socket.disconnect(() => process.exit(0));
  }
  current = nextToken;
});
socket.connect();

const refreshes = (process.env.REFRESH || "").split(",").filter(Boolean);
const pending = new Set();
socket.onMessage(({ topic: on, event, payload, ref }) => {
  if (on === "phoenix" && event === "phx_reply" && pending.delete(ref)) {
    say({ refresh: payload });
  }
});
const refresh = () => {
  for (const next of refreshes.splice(0)) {
    const ref = socket.makeRef();
    pending.add(ref);
    socket.push({ topic: "phoenix", event: "refresh_token", payload: { token: next }, ref });
  }
};

const channel = socket.channel(topic, {});
channel.join()
  .receive("ok", () => {
    joins += 1;
    say({ joined: joins });
    refresh();
    if (joins === 2) {
      socket.disconnect(() => process.exit(0));
    }
  })
  .receive("error", (err) => say({ join_error: err }));
