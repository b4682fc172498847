// Signing in and the JSON channel protocol as this client uses it (docs/channels.md).
// The password is sent once, over HTTPS, to LOGIN_PATH and never stored; the session token it
// buys (or a host-app token from `/#token=...`) is kept in sessionStorage, or localStorage
// when the user asks to stay signed in, so a reload keeps the session.
// Every event name of the protocol is in this file, so that protocol changes stay here.
import { Socket, syncDiff, syncState } from "./phx.js";

export const LOGIN_PATH = "/login";
const KEY = "xmppd.session";

export function savedSession() {
  for (const store of [sessionStorage, localStorage]) {
    try {
      const saved = JSON.parse(store.getItem(KEY) || "null");
      if (saved && saved.token) return saved;
    } catch { /* a damaged entry is no session */ }
  }
  return null;
}

export function saveSession(session, remember) {
  forgetSession();
  (remember ? localStorage : sessionStorage).setItem(KEY, JSON.stringify(session));
}

export function forgetSession() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** A host-app token in the URL fragment (never sent to a server by the browser). */
export function tokenFromHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (!token) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return { token, jid: params.get("jid") || jidFromToken(token) };
}

/** The user's bare JID from a JWS's claims: `sub`, with `aud` (default: the server's domain). */
export function jidFromToken(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    const sub = String(claims.sub || "");
    if (sub.includes("@")) return sub.toLowerCase();
    const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
    return sub ? `${sub}@${aud || location.hostname}`.toLowerCase() : null;
  } catch {
    return null;
  }
}

/** POST the password once; resolves to {token, jid} or throws an Error with the reason. */
export async function login(user, password) {
  const jid = user.includes("@") ? user : `${user}@${location.hostname}`;
  let response;
  try {
    response = await fetch(LOGIN_PATH, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jid, username: user, password }),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new Error("The server cannot be reached. Check your connection.");
  }
  if (response.status === 404) throw new Error("Password sign-in is not available on this server.");
  if (response.status === 429) throw new Error("Too many attempts. Wait a minute and try again.");
  let body = {};
  try { body = await response.json(); } catch { /* plain-text errors */ }
  if (!response.ok || !body.token) {
    throw new Error(response.status === 401 || response.status === 403
      ? "Wrong address or password." : body.reason || `Sign-in failed (${response.status}).`);
  }
  return { token: body.token, jid: (body.jid || jid).split("/")[0].toLowerCase() };
}

/**
 * One signed-in user: the socket, the user topic and the rooms, turned into calls on `app`
 * (onContacts, onPresence, onMessage, onTyping, onMarker, onRetract, onRoomPresence, ...).
 */
export class Connection {
  constructor(session, app) {
    this.session = session;
    this.jid = session.jid;
    this.app = app;
    this.features = new Set();
    this.contactPresence = {};
    this.rooms = new Map(); // room JID -> {channel, nick, presence}
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new Socket(`${scheme}://${location.host}/socket`, () => ({ token: this.session.token }));
    this.socket.on("open", () => app.onConnection(true));
    this.socket.on("close", (event) => {
      app.onConnection(false);
      if (event.code === 4001 || event.code === 4003) app.onSessionEnded(event.reason);
    });
  }

  async start() {
    this.socket.connect();
    this.user = this.socket.channel(`user:${this.jid}`, {});
    const u = this.user;
    u.on("joined", (reply) => this.userJoined(reply));
    u.on("presence_state", (state) => {
      this.contactPresence = syncState(this.contactPresence, state);
      this.app.onPresence(this.contactPresence);
    });
    u.on("presence_diff", (diff) => {
      this.contactPresence = syncDiff(this.contactPresence, diff);
      this.app.onPresence(this.contactPresence);
    });
    u.on("contacts", (payload) => this.app.onContacts(payload.contacts || []));
    u.on("new_msg", (msg) => this.app.onMessage(this.chatKey(msg), this.chatMessage(msg)));
    u.on("typing", (p) => this.app.onTyping(bare(p.from), p.from, p.state));
    u.on("marker", (p) => this.app.onMarker(bare(p.from), p.id, p.type || "displayed"));
    u.on("retract", (p) => this.app.onRetract(bare(p.from === this.jid ? p.to : p.from), p.id));
    u.on("unread", (p) => this.app.onUnread(p.counts || p));
    u.on("invite", (p) => this.app.onInvite(p));
    const reply = await u.join();
    return reply;
  }

  userJoined(reply) {
    if (reply.status !== "ok") {  // refused: the token is no good; else a reconnect retries
      if (reply.status === "error" && reply.response.reason !== "disconnected") {
        this.app.onSessionEnded(reply.response.reason);
      }
      return;
    }
    const r = reply.response || {};
    for (const f of r.features || []) this.features.add(f);
    if (r.contacts) { this.features.add("contacts"); this.app.onContacts(r.contacts); }
    if (r.rooms) this.app.onRoomList(r.rooms);
    if (r.unread) this.app.onUnread(r.unread);
    this.app.onUserJoined(r);
  }

  has(feature) { return this.features.has(feature); }

  chatKey(msg) {
    const from = bare(msg.from || "");
    return from === this.jid && msg.to ? bare(msg.to) : from;
  }

  chatMessage(msg) {
    return {
      id: msg.id || null, from: bare(msg.from || ""), body: msg.body || "", stamp: msg.stamp || null,
      mine: bare(msg.from || "") === this.jid, replace: msg.replace || null,
    };
  }

  send(to, body, replace = null) {
    const payload = { to, body };
    if (replace) payload.replace = replace;
    return this.user.push("new_msg", payload);
  }

  async history(withJid, before) {
    const reply = await this.user.push("history", { with: withJid, before, limit: 50 });
    if (reply.status !== "ok") return null;
    return (reply.response.messages || []).map((m) => this.chatMessage(m));
  }

  typing(to, state) { if (this.has("typing")) this.user.push("typing", { to, state }); }
  markRead(to, id) { if (this.has("markers") && id) this.user.push("displayed", { to, id }); }
  retract(to, id) { return this.user.push("retract", { to, id }); }
  setStatus(show, status) { return this.user.push("presence", { show, status }); }
  listRooms() { return this.user.push("rooms", {}); }
  createRoom(config) { return this.user.push("create_room", config); }
  invite(room, jid) { return this.user.push("invite", { room, jid }); }

  async joinRoom(room, nick) {
    if (this.rooms.has(room)) return { status: "ok", response: { nick: this.rooms.get(room).nick } };
    const channel = this.socket.channel(`room:${room}`, { nick });
    const entry = { channel, nick, presence: {} };
    this.rooms.set(room, entry);
    channel.on("presence_state", (state) => {
      entry.presence = syncState(entry.presence, state);
      this.app.onRoomPresence(room, entry.presence);
    });
    channel.on("presence_diff", (diff) => {
      entry.presence = syncDiff(entry.presence, diff);
      this.app.onRoomPresence(room, entry.presence);
    });
    channel.on("new_msg", (msg) => this.app.onMessage(room, {
      id: msg.id || null, from: msg.from, body: msg.body || "", stamp: msg.stamp || null,
      mine: msg.from === entry.nick, replace: msg.replace || null,
    }));
    channel.on("retract", (p) => this.app.onRetract(room, p.id));
    channel.on("phx_close", (p) => this.app.onRoomClosed(room, p && p.reason));
    const reply = await channel.join();
    if (reply.status === "ok") entry.nick = (reply.response && reply.response.nick) || nick;
    else this.rooms.delete(room);
    return reply;
  }

  sendRoom(room, body, replace = null) {
    const payload = { body };
    if (replace) payload.replace = replace;
    return this.rooms.get(room).channel.push("new_msg", payload);
  }

  moderate(room, action, payload) { return this.rooms.get(room).channel.push(action, payload); }

  async leaveRoom(room) {
    const entry = this.rooms.get(room);
    this.rooms.delete(room);
    if (entry) await entry.channel.leave();
  }

  close() { this.socket.disconnect(); }
}

export function bare(jid) { return String(jid).split("/")[0]; }
