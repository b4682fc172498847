// Signing in and the JSON channel protocol as this client uses it (docs/channels.md).
// The password is sent once, over HTTPS, to LOGIN_PATH and never stored; the session token it
// buys (or a host-app token from `/#token=...`) is kept in sessionStorage, or localStorage
// when the user asks to stay signed in, so a reload keeps the session.
// Every event name of the protocol is in this file, so that protocol changes stay here.
import { Socket, syncDiff, syncState } from "./phx.js";

export const LOGIN_PATH = "/login";
export const LOGOUT_PATH = "/logout";
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
  const claims = claimsOf(token) || {};
  // The rooms the host app names in the token are joined at once (docs/channels.md, `rooms`).
  const rooms = Array.isArray(claims.rooms) ? claims.rooms.filter((r) => typeof r === "string") : [];
  return { token, jid: params.get("jid") || jidFromClaims(claims), rooms };
}

/** A JWS's claims (a JWE's are sealed: the app then adds `&jid=` to the fragment). */
function claimsOf(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/** The user's bare JID: `sub`, with `aud` (by default the server's domain) when it has no @. */
function jidFromClaims(claims) {
  const sub = String(claims.sub || "");
  if (sub.includes("@")) return sub.toLowerCase();
  const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
  return sub ? `${sub}@${aud || location.hostname}`.toLowerCase() : null;
}

/** POST the password once; resolves to {token, jid} or throws an Error with the reason. */
export async function login(user, password) {
  const body = user.includes("@") ? { jid: user, password } : { username: user, password };
  let response;
  try {
    response = await fetch(LOGIN_PATH, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new Error("The server cannot be reached. Check your connection.");
  }
  if (response.status === 404) throw new Error("Password sign-in is not available on this server.");
  if (response.status === 429) throw new Error("Too many failed attempts. Wait a while and try again.");
  let answer = {};
  try { answer = await response.json(); } catch { /* plain-text errors */ }
  if (response.status === 401) throw new Error("Wrong address or password.");
  if (!response.ok || !answer.token) {
    throw new Error(answer.error ? `Sign-in refused: ${answer.error}.` : `Sign-in failed (${response.status}).`);
  }
  return { token: answer.token, jid: String(answer.jid).split("/")[0].toLowerCase(), login: true };
}

/** Revoke a password-login token (host-app tokens are the host app's to revoke). */
export function logoutToken(session) {
  if (!session || !session.login) return Promise.resolve();
  return fetch(LOGOUT_PATH, {
    method: "POST", headers: { Authorization: `Bearer ${session.token}` }, credentials: "omit",
  }).catch(() => undefined);
}

/**
 * One signed-in user: the socket, the user topic and the rooms, turned into calls on `app`
 * (onContacts, onPresence, onMessage, onTyping, onMarker, onRetract, onRoomPresence, ...).
 * `full` is true once the server speaks the whole chat protocol (its user join reply carries
 * `unread`); before that only rooms and plain 1:1 messages exist.
 */
export class Connection {
  constructor(session, app) {
    this.session = session;
    this.jid = session.jid;
    this.app = app;
    this.full = false;
    this.contactPresence = {};
    this.rooms = new Map(); // room JID -> {channel, nick, presence, last}
    this.last = null; // newest 1:1 archive id seen: the `since` of a rejoin
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new Socket(`${scheme}://${location.host}/socket`, () => ({ token: this.session.token }));
    this.socket.on("open", () => app.onConnection(true));
    this.socket.on("close", (event) => {
      if (this.closed) return; // signed out: nobody is listening any more
      app.onConnection(false);
      if (event.code === 4001 || event.code === 4003) app.onSessionEnded(event.reason);
    });
  }

  async start(presence) {
    this.socket.connect();
    this.user = this.socket.channel(`user:${this.jid}`, () => {
      const { show, status } = presence();
      const params = presencePayload(show, status);
      if (this.last) params.since = this.last;
      return params;
    });
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
    u.on("roster", (p) => this.app.onContacts(p.items || [], true));
    u.on("roster_push", (p) => this.app.onContacts([p.item], false));
    u.on("subscribe_request", (p) => this.app.onSubscribeRequest(p.from, p.status));
    u.on("new_msg", (msg) => {
      if (msg.id) this.last = msg.id;
      this.app.onMessage(this.chatKey(msg), this.chatMessage(msg));
    });
    u.on("chat_state", (p) => this.app.onTyping(bare(p.from), bare(p.from), p.state));
    u.on("marker", (p) => {
      if (bare(p.from) !== this.jid) this.app.onMarker(bare(p.with || p.from), p.id, p.msg_id, p.type);
    });
    u.on("retract", (p) => this.app.onRetract(bare(p.with || p.from), p.id, p.msg_id));
    u.on("unread", (p) => this.app.onUnread({ [p.with]: p.count }));
    u.on("invite", (p) => this.app.onInvite(p));
    return u.join();
  }

  async userJoined(reply) {
    if (reply.status !== "ok") {  // refused: the token is no good; else a reconnect retries
      if (reply.status === "error" && reply.response.reason !== "disconnected") {
        this.app.onSessionEnded(reply.response.reason);
      }
      return;
    }
    const r = reply.response || {};
    this.full = "unread" in r;
    this.upload = r.upload || null; // {max_file_size, url}: the server keeps shared files
    let bookmarks = null;
    if (this.full) {
      const answer = await this.user.push("bookmarks", {});
      if (answer.status === "ok") bookmarks = answer.response.bookmarks || [];
    }
    this.app.onUserJoined(r, bookmarks);
    // After the rooms are being joined, so that a room's count files under the room.
    if (r.unread) this.app.onUnread(r.unread);
  }

  has(feature) { return this.full || feature === "chat"; }

  chatKey(msg) {
    if (msg.with) return bare(msg.with);
    const from = bare(msg.from || "");
    return from === this.jid && msg.to ? bare(msg.to) : from;
  }

  chatMessage(msg) {
    const from = bare(msg.from || "");
    return {
      id: msg.id || null, msgId: msg.msg_id || null, from, body: msg.body || "",
      stamp: msg.stamp || null, mine: from === this.jid, replace: msg.replace || null,
      delayed: this.full ? !!msg.delayed : !!msg.stamp, retracted: !!msg.retracted,
      retract: msg.retract || null, // 1:1 history: this entry retracts that msg_id
      file: msg.file || null,
    };
  }

  roomMessage(entry, msg) {
    return {
      id: msg.id || null, msgId: msg.msg_id || null, from: msg.from, body: msg.body || "",
      stamp: msg.stamp || null, mine: msg.from === entry.nick, replace: msg.replace || null,
      // Before the full protocol only join history carries a stamp.
      delayed: this.full ? !!msg.delayed : !!msg.stamp, retracted: !!msg.retracted,
      file: msg.file || null,
      moderatedBy: (msg.retracted && msg.retracted.by) || null,
    };
  }

  /** A slot for one file (the server's upload rules): {put, get, headers} or the refusal. */
  uploadSlot(name, size, type) {
    const payload = { filename: name, size };
    if (type) payload.content_type = type;
    return this.user.push("upload_slot", payload);
  }

  /** Share an uploaded file in a chat or room: its URL is the body, XEP-0066 for XMPP. */
  shareFile(key, url) {
    const entry = this.rooms.get(key);
    return entry ? entry.channel.push("new_msg", { file: { url } }) : this.user.push("new_msg", { to: key, file: { url } });
  }

  send(to, body) { return this.user.push("new_msg", { to, body }); }
  correct(to, msg, body) { return this.user.push("correct", { to, replace: msg.msgId, body }); }
  retract(to, msg) { return this.user.push("retract", { to, msg_id: msg.msgId }); }

  async history(withJid, before) {
    const payload = { with: withJid, limit: 50 };
    if (before) payload.before = before;
    const reply = await this.user.push("history", payload);
    if (reply.status !== "ok") return null;
    const r = reply.response;
    return { messages: (r.messages || []).map((m) => this.chatMessage(m)), complete: !!r.complete };
  }

  typing(to, state) {
    if (!this.full) return;
    if (this.rooms.has(to)) this.rooms.get(to).channel.push("chat_state", { state });
    else this.user.push("chat_state", { to, state });
  }

  markRead(key, id) {
    if (!this.full || !id) return;
    if (this.rooms.has(key)) this.rooms.get(key).channel.push("displayed", { id });
    else this.user.push("displayed", { with: key, id });
  }

  setStatus(show, status) { return this.user.push("presence", presencePayload(show, status)); }
  subscribe(jid, name) { return this.user.push("subscribe", { jid, name }); }
  answerSubscription(jid, yes) { return this.user.push(yes ? "approve" : "deny", { jid }); }
  listRooms() { return this.user.push("rooms", {}); }
  createRoom(name, nick, membersOnly) {
    return this.user.push("room_create", { name, nick, config: { members_only: membersOnly } });
  }
  bookmark(jid, nick) { if (this.full) this.user.push("bookmark_set", { jid, nick, autojoin: true }); }
  unbookmark(jid) { if (this.full) this.user.push("bookmark_remove", { jid }); }

  async joinRoom(room, nick) {
    if (this.rooms.has(room)) return { status: "ok", response: { nick: this.rooms.get(room).nick } };
    const entry = { channel: null, nick, presence: {}, last: null };
    const channel = this.socket.channel(`room:${room}`, () => {
      const params = { nick: entry.nick };
      if (entry.last && this.full) params.since = entry.last;
      return params;
    });
    entry.channel = channel;
    this.rooms.set(room, entry);
    channel.on("presence_state", (state) => {
      entry.presence = syncState(entry.presence, state);
      this.app.onRoomPresence(room, entry.presence);
    });
    channel.on("presence_diff", (diff) => {
      entry.presence = syncDiff(entry.presence, diff);
      this.app.onRoomPresence(room, entry.presence);
    });
    channel.on("new_msg", (msg) => {
      if (msg.id) entry.last = msg.id;
      this.app.onMessage(room, this.roomMessage(entry, msg));
    });
    // XEP-0425: a moderator's retraction names who did it; the author's does not.
    channel.on("retract", (p) => this.app.onRetract(room, p.id, null, p.moderated ? p.by || "a moderator" : null));
    channel.on("chat_state", (p) => { if (p.from !== entry.nick) this.app.onTyping(room, p.from, p.state); });
    channel.on("phx_close", (p) => this.app.onRoomClosed(room, p && p.reason));
    const reply = await channel.join();
    if (reply.status === "ok") entry.nick = (reply.response && reply.response.nick) || nick;
    else this.rooms.delete(room);
    return reply;
  }

  sendRoom(room, body) { return this.rooms.get(room).channel.push("new_msg", { body }); }
  correctRoom(room, msg, body) { return this.rooms.get(room).channel.push("correct", { id: msg.id, body }); }
  retractRoom(room, msg, moderator) {
    const channel = this.rooms.get(room).channel;
    return msg.mine ? channel.push("retract", { id: msg.id }) : channel.push("moderate", { id: msg.id });
  }
  kick(room, nick) { return this.rooms.get(room).channel.push("kick", { nick }); }
  invite(room, jid) { return this.rooms.get(room).channel.push("invite", { jid }); }

  async roomHistory(room, before) {
    const payload = { limit: 50 };
    if (before) payload.before = before;
    const reply = await this.rooms.get(room).channel.push("history", payload);
    if (reply.status !== "ok") return null;
    const entry = this.rooms.get(room);
    const r = reply.response;
    return { messages: (r.messages || []).map((m) => this.roomMessage(entry, m)), complete: !!r.complete };
  }

  async leaveRoom(room) {
    const entry = this.rooms.get(room);
    this.rooms.delete(room);
    if (entry) await entry.channel.leave();
  }

  close() {
    this.closed = true;
    this.socket.disconnect();
  }
}

/** `show` null is plain online; an empty status is left out (the server wants 1 to 1,024). */
function presencePayload(show, status) {
  const payload = { show: show || null };
  if (status) payload.status = status;
  return payload;
}

export function bare(jid) { return String(jid).split("/")[0]; }
