// The stock `phoenix` npm client, driven line by line from a test (tests/web/test_chat_protocol.py).
// Usage: node chat_driver.mjs ENDPOINT TOKEN [websocket|longpoll]
// stdin, one JSON command per line:
//   {"op": "join", "topic", "payload"}            -> {"joined": topic, "reply"} | {"join_error": topic, "reply"}
//   {"op": "push", "tag", "topic", "event", "payload"} -> {"tag", "ok": resp} | {"tag", "error": resp}
//   {"op": "leave", "topic"}                      -> {"left": topic}
//   {"op": "exit"}
// stdout: those answers, every event on a channel ({"topic", "event", "payload"}), and each
// Phoenix.Presence sync ({"sync": topic, "presence": {key: [metas]}}).
import { WebSocket as WsWebSocket } from "ws";
import readline from "node:readline";
globalThis.WebSocket ??= WsWebSocket;
const { Socket, LongPoll, Presence } = await import("phoenix");

const [endpoint, token, transport] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const options = { params: { token }, reconnectAfterMs: () => 60000 };
if (transport === "longpoll") options.transport = LongPoll;
const socket = new Socket(endpoint, options);
socket.onError((e) => say({ socket_error: String(e && (e.message || e.type || e)) }));
socket.onClose((e) => say({ socket_close: e && e.code }));
socket.connect();

const channels = new Map();
const SKIP = new Set(["phx_reply", "presence_state", "presence_diff"]);

function channelFor(topic, payload) {
  const channel = socket.channel(topic, payload || {});
  const original = channel.onMessage.bind(channel);
  channel.onMessage = (event, body, ref) => {
    if (!SKIP.has(event) && !event.startsWith("chan_reply_")) say({ topic, event, payload: body });
    return original(event, body, ref);
  };
  const presence = new Presence(channel);
  presence.onSync(() => {
    const out = {};
    presence.list((key, { metas }) => { out[key] = metas; });
    say({ sync: topic, presence: out });
  });
  channels.set(topic, channel);
  return channel;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "join") {
    channelFor(cmd.topic, cmd.payload).join()
      .receive("ok", (reply) => say({ joined: cmd.topic, reply }))
      .receive("error", (reply) => say({ join_error: cmd.topic, reply }));
  } else if (cmd.op === "push") {
    channels.get(cmd.topic).push(cmd.event, cmd.payload || {})
      .receive("ok", (resp) => say({ tag: cmd.tag, ok: resp }))
      .receive("error", (resp) => say({ tag: cmd.tag, error: resp }))
      .receive("timeout", () => say({ tag: cmd.tag, timeout: true }));
  } else if (cmd.op === "leave") {
    channels.get(cmd.topic).leave().receive("ok", () => say({ left: cmd.topic }));
  } else if (cmd.op === "exit") {
    socket.disconnect(() => process.exit(0));
  }
});
lines.on("close", () => process.exit(0));
