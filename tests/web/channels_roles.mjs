// The `phoenix` npm client in node, driven by tests/web/test_channels_roles.py.
// Usage: node channels_roles.mjs ENDPOINT TOKEN ROOM [KICK_NICK]
// Joins room:ROOM; prints the join answer (or the refusal) as one JSON line; with KICK_NICK,
// waits for that occupant, pushes `kick` and prints the answer. Exits 0.
import { WebSocket as WsWebSocket } from "ws";
globalThis.WebSocket ??= WsWebSocket; // node < 22 has no global WebSocket
const { Socket, Presence } = await import("phoenix");

const [endpoint, token, room, kick] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const done = () => socket.disconnect(() => process.exit(0));
setTimeout(() => { say({ timed_out: true }); process.exit(1); }, 20000).unref();

const socket = new Socket(endpoint, { params: { token }, reconnectAfterMs: () => 60000 });
socket.connect();
const channel = socket.channel(`room:${room}`, { nick: "web" });
const presence = new Presence(channel);
let pushed = false;
presence.onSync(() => {
  const nicks = presence.list((nick) => nick);
  if (!kick || pushed || !nicks.includes(kick)) return;
  pushed = true;
  channel.push("kick", { nick: kick, reason: "by a service admin" })
    .receive("ok", (resp) => { say({ kicked: resp }); done(); })
    .receive("error", (resp) => { say({ kick_error: resp }); done(); });
});
channel.join()
  .receive("ok", (resp) => { say({ joined: resp }); if (!kick) done(); })
  .receive("error", (resp) => { say({ join_error: resp }); done(); });
