// The web client: state, actions and the wiring of session.js to views.js and dialogs.js.
import { announce, avatar, h, replaceChildren } from "./dom.js";
import { openDialogs } from "./dialogs.js";
import { hooks } from "./hooks.js";
import "./files.js"; // attach, drag and drop, upload with progress, shared files shown
import "./calls.js";
import {
  Connection, forgetSession, login, logoutToken, saveSession, savedSession, tokenFromHash,
} from "./session.js";
import { conversationView, loginView, showLabel, sidebarLists } from "./views.js";

const root = document.getElementById("app");
const BASE_TITLE = "Chat";
let conn = null;
let state = null;
let dialogs = null;

function freshState(session) {
  return {
    me: session.jid, session, connected: false, started: false, status: { show: "available", text: "" },
    contacts: new Map(), requests: new Map(), presence: {}, convs: new Map(), active: null,
    filter: "", panel: null, sidebar: true,
    presenceOf(key) {
      const entry = this.presence[key];
      const meta = entry && entry.metas[entry.metas.length - 1];
      return meta ? { show: meta.show || "available", status: meta.status || "" } : { show: "", status: "" };
    },
  };
}

function conversation(key, kind, title) {
  if (!state.convs.has(key)) {
    const contact = state.contacts.get(key);
    state.convs.set(key, { key, kind, title: title || (contact && contact.name) || key.split("@")[0],
      messages: [], unread: 0, typing: new Set(), occupants: {}, nick: null, editing: null,
      loading: false, done: false });
  }
  return state.convs.get(key);
}

const findMessage = (conv, id, msgId) =>
  conv.messages.find((m) => (id && m.id === id) || (msgId && m.msgId === msgId));

// ---- signing in and out -------------------------------------------------------------------

function showLogin(error = "", busy = false) {
  root.setAttribute("aria-busy", "false");
  root.classList.remove("sidebar-open");
  root.replaceChildren(loginView({ onSubmit: submitLogin, error, busy }));
  document.title = `Sign in · ${BASE_TITLE}`;
  const field = root.querySelector(error ? "#login-password" : "#login-user");
  if (field) field.focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const form = event.target;
  const user = form.user.value.trim();
  const password = form.password.value;
  const remember = form.remember.checked;
  form.password.value = "";
  form.querySelector("button[type=submit]").disabled = true;
  try {
    const session = await login(user, password);
    saveSession(session, remember);
    start(session);
  } catch (err) {
    showLogin(err.message);
    root.querySelector("#login-user").value = user;
  }
}

async function logout() {
  const session = state && state.session;
  forgetSession();
  if (conn) conn.close();
  conn = null;
  state = null;
  document.title = BASE_TITLE;
  showLogin();
  announce("Signed out");
  await logoutToken(session);
}

// ---- events from the server ---------------------------------------------------------------

const app = {
  onConnection(up) { state.connected = up; renderStatusLine(); },
  onSessionEnded(reason) {
    forgetSession();
    if (conn) conn.close();
    conn = null;
    showLogin(reason ? `Your session ended (${reason}). Sign in again.` : "Your session ended.");
  },
  onUserJoined(reply, bookmarks) {
    if (reply.show !== undefined) state.status = { show: reply.show || "available", text: reply.status || "" };
    if (state.started) return; // a reconnect: the socket rejoins the rooms itself
    state.started = true;
    const rooms = bookmarks ? bookmarks.filter((b) => b.autojoin) : savedRooms();
    for (const room of rooms) joinRoom(room.jid, room.nick || state.me.split("@")[0], false);
    const named = (state.session.rooms || []).filter((jid) => !rooms.some((r) => r.jid === jid));
    for (const jid of named) joinRoom(jid, undefined, false); // the token's name is the nick
    renderAll();
  },
  onContacts(items, whole) {
    if (whole) state.contacts.clear();
    for (const c of items) {
      if (c.subscription === "remove") state.contacts.delete(c.jid);
      else state.contacts.set(c.jid, { ...c, name: c.name || c.jid.split("@")[0] });
    }
    renderSidebar();
  },
  onSubscribeRequest(from, status) { state.requests.set(from, status || ""); renderSidebar(); },
  onPresence(presence) { state.presence = presence; renderSidebar(); renderConversation(); },
  onUnread(counts) {
    for (const [key, n] of Object.entries(counts)) {
      if (!conn.rooms.has(key) && !state.convs.has(key) && !n) continue;
      const conv = conversation(key, conn.rooms.has(key) ? "room" : "chat");
      conv.unread = n;
      conv.counted = true; // the server counts this one: no local counting
    }
    renderAll();
  },
  onInvite(p) {
    dialogs.invitation(p);
    announce(`${p.from} invites you to ${p.room}`);
  },
  onMessage(key, msg) {
    if (!key) return;
    const conv = conversation(key, conn.rooms.has(key) ? "room" : "chat");
    if (msg.replace) { // XEP-0308 names the original by its msg_id, in rooms too
      const old = findMessage(conv, null, msg.replace);
      if (old) { old.body = msg.body; old.edited = true; renderConversation(); return; }
    }
    if (msg.id && findMessage(conv, msg.id)) return;
    conv.messages.push(msg);
    conv.typing.delete(conv.kind === "room" ? msg.from : conv.title);
    const seen = state.active === key && !document.hidden;
    if (!msg.mine && !msg.delayed && !seen) {
      // The server counts 1:1 chats and bookmarked rooms and says `unread`; count the rest here.
      if (!conn.full || (conv.kind === "room" && !conv.counted)) conv.unread += 1;
      notify(conv, msg);
    }
    if (seen && !msg.mine) conn.markRead(key, msg.id);
    renderAll();
  },
  onTyping(key, name, what) {
    const conv = state.convs.get(key);
    if (!conv) return;
    const who = conv.kind === "room" ? name : conv.title;
    if (what === "composing") conv.typing.add(who); else conv.typing.delete(who);
    renderConversation();
  },
  onMarker(key, id, msgId, type) {
    const conv = state.convs.get(key);
    if (!conv) return;
    const upTo = conv.messages.indexOf(findMessage(conv, id, msgId));
    conv.messages.forEach((m, i) => {
      if (m.mine && i <= upTo) m[type === "displayed" ? "read" : "delivered"] = true;
    });
    renderConversation();
  },
  onRetract(key, id, msgId, moderatedBy = null) {
    const conv = state.convs.get(key);
    const msg = conv && findMessage(conv, id, msgId);
    if (msg) { msg.retracted = true; msg.body = ""; msg.moderatedBy = moderatedBy; renderConversation(); }
  },
  onRoomPresence(room, presence) {
    const conv = conversation(room, "room");
    conv.occupants = Object.fromEntries(Object.entries(presence).map(([nick, v]) => [nick, v.metas[0]]));
    renderAll();
  },
  onRoomClosed(room, reason) {
    const conv = state.convs.get(room);
    const why = { kicked: "You were removed from the room", banned: "You were banned from the room",
      destroyed: "The room was closed" }[reason] || "You left the room";
    if (conv) conv.messages.push({ id: null, from: "", body: `${why}.`, mine: false, stamp: null, notice: true });
    conn.rooms.delete(room);
    forgetRoom(room);
    renderAll();
  },
};

function notify(conv, msg) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  const n = new Notification(conv.kind === "room" ? `${msg.from} in ${conv.title}` : conv.title,
    { body: (msg.file ? `Shared a file: ${msg.file.name}` : msg.body).slice(0, 140), tag: conv.key, icon: "icon.svg" });
  n.onclick = () => { window.focus(); actions.open(conv.key); n.close(); };
}

// Rooms are remembered in the account's bookmarks (XEP-0402) when the server has them, in this
// browser otherwise.
function savedRooms() {
  try { return JSON.parse(localStorage.getItem(`xmppd.rooms.${state.me}`) || "[]"); } catch { return []; }
}
function rememberRoom(jid, nick) {
  if (conn.full) return conn.bookmark(jid, nick);
  const rooms = savedRooms().filter((r) => r.jid !== jid);
  localStorage.setItem(`xmppd.rooms.${state.me}`, JSON.stringify([...rooms, { jid, nick }]));
}
function forgetRoom(jid) {
  if (conn && conn.full) return conn.unbookmark(jid);
  localStorage.setItem(`xmppd.rooms.${state.me}`, JSON.stringify(savedRooms().filter((r) => r.jid !== jid)));
}

async function joinRoom(jid, nick, open = true) {
  const reply = await conn.joinRoom(jid, nick);
  if (reply.status !== "ok") return (reply.response && reply.response.reason) || "the room refused";
  const conv = conversation(jid, "room", reply.response.config && reply.response.config.name);
  conv.kind = "room"; // a mediated invitation may have opened it as a 1:1 chat with the room
  if (reply.response.config && reply.response.config.name) conv.title = reply.response.config.name;
  conv.nick = conn.rooms.get(jid).nick;
  rememberRoom(jid, conv.nick);
  if (open) actions.open(jid);
  renderAll();
  return null;
}

// ---- what the user does -------------------------------------------------------------------

const actions = {
  can: (feature) => conn && conn.has(feature),
  connection: () => conn,
  me: () => state.me,
  status: () => state.status,
  joinRoom,
  open(key, kind) {
    const conv = conversation(key, kind || (conn.rooms.has(key) ? "room" : "chat"));
    state.active = key;
    state.sidebar = false;
    if (!conn.full || !conv.counted) conv.unread = 0;
    const last = [...conv.messages].reverse().find((m) => !m.mine && m.id);
    if (last) conn.markRead(key, last.id);
    renderAll();
    if (!conv.messages.length) loadHistory(conv);
    const input = document.getElementById("composer-input");
    if (input) input.focus();
  },
  toggleSidebar() { state.sidebar = !state.sidebar; renderAll(); },
  togglePanel() { state.panel = state.panel ? null : "occupants"; renderConversation(); },
  async submit(event, key) {
    event.preventDefault();
    const input = event.target.body;
    const body = input.value.trim();
    if (!body) return;
    const conv = state.convs.get(key);
    const room = conv.kind === "room";
    const editing = conv.editing && findMessage(conv, conv.editing);
    input.value = ""; // before the await: the echo re-renders the composer meanwhile
    let reply;
    if (editing) reply = room ? await conn.correctRoom(key, editing, body) : await conn.correct(key, editing, body);
    else reply = room ? await conn.sendRoom(key, body) : await conn.send(key, body);
    if (reply.status !== "ok") {
      document.getElementById("composer-input").value = body;
      announce(`Not sent: ${(reply.response && reply.response.reason) || reply.status}`);
      return;
    }
    conv.editing = null;
    const r = reply.response || {};
    if (editing && !room) { editing.body = body; editing.edited = true; }
    if (!editing && !room && !(r.id && findMessage(conv, r.id))) {
      conv.messages.push({ id: r.id || null, msgId: r.msg_id || null, from: state.me, body, mine: true,
        stamp: r.stamp || null });
    }
    conn.typing(key, "active");
    actions.lastTyping = 0;
    renderConversation();
    document.getElementById("composer-input").focus();
  },
  composerKey(event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); event.target.form.requestSubmit(); }
    if (event.key === "ArrowUp" && !event.target.value) actions.editLast();
  },
  editLast() {
    const conv = state.convs.get(state.active);
    const last = conv && [...conv.messages].reverse().find((m) => m.mine && !m.retracted && !m.file);
    if (last && actions.can("corrections")) actions.edit(conv.key, last);
  },
  typed(key) {
    const now = Date.now();
    if (!actions.lastTyping || now - actions.lastTyping > 4000) { conn.typing(key, "composing"); actions.lastTyping = now; }
  },
  edit(key, msg) {
    const conv = state.convs.get(key);
    conv.editing = msg.id;
    renderConversation();
    const input = document.getElementById("composer-input");
    input.value = msg.body;
    input.focus();
  },
  cancelEdit(key) { state.convs.get(key).editing = null; renderConversation(); },
  async retract(key, msg) {
    const conv = state.convs.get(key);
    const reply = conv.kind === "room" ? await conn.retractRoom(key, msg) : await conn.retract(key, msg);
    const by = conv.kind === "room" && !msg.mine ? conv.nick : null;
    if (reply.status === "ok") app.onRetract(key, msg.id, msg.msgId, by);
    else announce("The message could not be deleted.");
  },
  async kick(room, nick) {
    const reply = await conn.kick(room, nick);
    announce(reply.status === "ok" ? `${nick} was removed.` : `${nick} could not be removed.`);
  },
  async leave(room) {
    await conn.leaveRoom(room);
    forgetRoom(room);
    state.convs.delete(room);
    state.active = null;
    state.sidebar = true;
    renderAll();
    announce("You left the room.");
  },
  async answer(jid, yes) {
    await conn.answerSubscription(jid, yes);
    state.requests.delete(jid);
    renderSidebar();
  },
  scrolled(key, list) {
    const conv = state.convs.get(key);
    if (list.scrollTop < 40 && conv && !conv.loading && !conv.done) loadHistory(conv);
  },
  closeDialog(event) { event.target.closest("dialog").close(); },
  saveStatus(event) {
    event.preventDefault();
    const form = event.target;
    state.status = { show: form.show.value, text: form.text.value.trim() };
    conn.setStatus(state.status.show === "available" ? null : state.status.show, state.status.text);
    form.closest("dialog").close();
    renderStatusLine();
  },
  inviteDialog: (room) => dialogs.invite(room),
};

/** History holds corrections and retractions as entries of their own: fold them in. */
function applyEdits(conv) {
  const kept = [];
  for (const m of conv.messages) {
    const target = (m.replace || m.retract) && findMessage(conv, null, m.replace || m.retract);
    if (m.retract) {
      if (target) { target.retracted = true; target.body = ""; }
    } else if (m.replace && target && target !== m) {
      target.body = m.body;
      target.edited = true;
    } else {
      kept.push(m);
    }
  }
  conv.messages = kept;
}

async function loadHistory(conv) {
  if (!conn.full) { conv.done = true; return; }
  conv.loading = true;
  renderConversation();
  const oldest = conv.messages.find((m) => m.id);
  const before = oldest ? oldest.id : null;
  const page = conv.kind === "room" ? await conn.roomHistory(conv.key, before) : await conn.history(conv.key, before);
  conv.loading = false;
  if (!page || page.complete || !page.messages.length) conv.done = true;
  if (page) conv.messages = [...page.messages.filter((m) => !(m.id && findMessage(conv, m.id))), ...conv.messages];
  applyEdits(conv);
  renderConversation(true);
}

async function enableNotifications() {
  if (!("Notification" in window)) return announce("This browser has no notifications.");
  const answer = await Notification.requestPermission();
  announce(answer === "granted" ? "Notifications on." : "Notifications are blocked.");
  renderStatusLine();
}

// ---- rendering ----------------------------------------------------------------------------

function shell() {
  const name = state.me.split("@")[0];
  root.replaceChildren(
    h("nav", { class: "sidebar", id: "sidebar", "aria-label": "Conversations" },
      h("div", { class: "me" }, avatar(name, state.me),
        h("div", { class: "item-text" }, h("span", { class: "item-name" }, name),
          h("span", { class: "item-sub", id: "status-line" })),
        h("button", { class: "icon-button", onclick: dialogs.status, "aria-label": "Set your status" }, "✎"),
        h("button", { class: "icon-button", onclick: logout, "aria-label": "Sign out" }, "⎋")),
      h("div", { class: "search" }, h("label", { for: "search", class: "visually-hidden" }, "Search conversations and people"),
        h("input", { id: "search", type: "search", placeholder: "Search", autocomplete: "off",
          oninput: (e) => { state.filter = e.target.value; renderSidebar(); } })),
      h("div", { class: "row actions" },
        h("button", { class: "secondary", onclick: dialogs.newChat }, "New chat"),
        h("button", { class: "secondary", onclick: dialogs.room }, "Group chat")),
      h("p", { class: "notify", id: "notify-button" }, "Know when a message arrives in another tab: ",
        h("button", { class: "link", onclick: enableNotifications }, "turn on notifications")),
      h("div", { class: "lists", id: "lists" })),
    h("main", { class: "main", id: "main" }));
  root.setAttribute("aria-busy", "false");
}

function renderStatusLine() {
  const line = document.getElementById("status-line");
  if (!line || !state) return;
  line.textContent = state.connected
    ? `${showLabel(state.status.show)}${state.status.text ? ` · ${state.status.text}` : ""}`
    : "Connecting…";
  const bell = document.getElementById("notify-button");
  if (bell) bell.hidden = !("Notification" in window) || Notification.permission !== "default";
}

function renderSidebar() {
  const lists = document.getElementById("lists");
  if (lists) replaceChildren(lists, sidebarLists(state, actions));
}

function renderConversation(keepTop = false) {
  const main = document.getElementById("main");
  if (!main) return;
  const old = document.getElementById("messages");
  const atBottom = !old || old.scrollHeight - old.scrollTop - old.clientHeight < 60;
  const fromBottom = old ? old.scrollHeight - old.scrollTop : 0;
  const input = document.getElementById("composer-input");
  const draft = input ? input.value : "";
  const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : null;
  main.replaceChildren(conversationView(state, state.convs.get(state.active), actions));
  const list = document.getElementById("messages");
  if (list) list.scrollTop = keepTop || !atBottom ? list.scrollHeight - fromBottom : list.scrollHeight;
  const again = document.getElementById("composer-input");
  if (again && draft) again.value = draft;
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function renderAll() {
  if (!state) return;
  root.classList.toggle("sidebar-open", state.sidebar);
  renderSidebar();
  renderConversation();
  renderStatusLine();
  const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) ${BASE_TITLE}` : BASE_TITLE;
}

async function start(session) {
  state = freshState(session);
  conn = new Connection(session, app);
  dialogs = openDialogs({ conn, actions, state });
  window.xmppdClient = { state: () => state, connection: () => conn, hooks };
  shell();
  renderAll();
  const started = conn.start(() => ({
    show: state.status.show === "available" ? null : state.status.show, status: state.status.text,
  }));
  for (const ready of hooks.connected) ready(conn); // conn.user exists once start() began
  await started;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state && state.active) actions.open(state.active);
});

const arrived = tokenFromHash();
if (arrived) saveSession(arrived, false);
const session = arrived || savedSession();
if (session && session.jid) start(session); else showLogin();
