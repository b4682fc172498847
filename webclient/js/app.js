// The web client: state, actions and the wiring of session.js to views.js.
import { announce, avatar, h, replaceChildren } from "./dom.js";
import {
  Connection, forgetSession, login, saveSession, savedSession, tokenFromHash,
} from "./session.js";
import { conversationView, loginView, showLabel, sidebarLists, statusMenu } from "./views.js";

const root = document.getElementById("app");
const BASE_TITLE = "Chat";
let conn = null;
let state = null;

function freshState(jid) {
  return {
    me: jid, connected: false, status: { show: "available", text: "" },
    contacts: new Map(), presence: {}, convs: new Map(), active: null, filter: "", panel: null,
    sidebar: true,
    presenceOf(key) {
      const entry = this.presence[key];
      const meta = entry && entry.metas[entry.metas.length - 1];
      return meta ? { show: meta.show || "available", status: meta.status || "" } : { show: "", status: "" };
    },
  };
}

function conversation(key, kind, title) {
  if (!state.convs.has(key)) {
    state.convs.set(key, { key, kind, title: title || key.split("@")[0], messages: [], unread: 0,
      typing: new Set(), occupants: {}, nick: null, editing: null, loading: false, done: false });
  }
  return state.convs.get(key);
}

// ---- signing in and out -------------------------------------------------------------------

function showLogin(error = "", busy = false) {
  root.setAttribute("aria-busy", "false");
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

function logout() {
  forgetSession();
  if (conn) conn.close();
  conn = null;
  document.title = BASE_TITLE;
  showLogin();
  announce("Signed out");
}

// ---- the signed-in app --------------------------------------------------------------------

const app = {
  onConnection(up) { state.connected = up; renderStatusLine(); },
  onSessionEnded(reason) {
    forgetSession();
    if (conn) conn.close();
    conn = null;
    showLogin(reason ? `Your session ended (${reason}). Sign in again.` : "Your session ended.");
  },
  onUserJoined() {
    if (state.started) return; // a reconnect: the socket rejoins the rooms itself
    state.started = true;
    for (const room of savedRooms()) joinRoom(room.jid, room.nick, false);
    renderAll();
  },
  onContacts(list) {
    for (const c of list) state.contacts.set(c.jid, { jid: c.jid, name: c.name || c.jid.split("@")[0] });
    renderSidebar();
  },
  onPresence(presence) { state.presence = presence; renderSidebar(); renderConversation(); },
  onRoomList() { /* the room directory dialog asks when it opens */ },
  onUnread(counts) {
    for (const [key, n] of Object.entries(counts)) if (state.convs.has(key)) state.convs.get(key).unread = n;
    renderAll();
  },
  onInvite(p) { announce(`${p.from} invites you to ${p.room}`); },
  onMessage(key, msg) {
    if (!key) return;
    const conv = conversation(key, conn.rooms.has(key) ? "room" : "chat");
    if (msg.replace) {
      const old = conv.messages.find((m) => m.id === msg.replace);
      if (old) { old.body = msg.body; old.edited = true; renderConversation(); return; }
    }
    if (msg.id && conv.messages.some((m) => m.id === msg.id)) return;
    conv.messages.push(msg);
    conv.typing.delete(msg.from);
    const seen = state.active === key && !document.hidden;
    if (!msg.mine && !msg.stamp && !seen) {
      conv.unread += 1;
      notify(conv, msg);
    }
    if (seen && !msg.mine) conn.markRead(key, msg.id);
    renderAll();
  },
  onTyping(key, from, what) {
    const conv = state.convs.get(key);
    if (!conv) return;
    const name = conv.title;
    if (what === "composing") conv.typing.add(name); else conv.typing.delete(name);
    renderConversation();
  },
  onMarker(key, id) {
    const conv = state.convs.get(key);
    if (!conv) return;
    for (const m of conv.messages) if (m.mine) { m.read = true; if (m.id === id) break; }
    renderConversation();
  },
  onRetract(key, id) {
    const conv = state.convs.get(key);
    const msg = conv && conv.messages.find((m) => m.id === id);
    if (msg) { msg.retracted = true; msg.body = ""; renderConversation(); }
  },
  onRoomPresence(room, presence) {
    const conv = conversation(room, "room");
    conv.occupants = Object.fromEntries(Object.entries(presence).map(([nick, v]) => [nick, v.metas[0]]));
    renderAll();
  },
  onRoomClosed(room, reason) {
    const conv = state.convs.get(room);
    if (conv) conv.messages.push({ id: null, from: "", body: `You left the room${reason ? ` (${reason})` : ""}.`, mine: false, stamp: null, notice: true });
    forgetRoom(room);
    renderAll();
  },
};

function notify(conv, msg) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  const n = new Notification(conv.kind === "room" ? `${msg.from} in ${conv.title}` : conv.title,
    { body: msg.body.slice(0, 140), tag: conv.key, icon: "icon.svg" });
  n.onclick = () => { window.focus(); actions.open(conv.key); n.close(); };
}

function savedRooms() {
  try { return JSON.parse(localStorage.getItem(`xmppd.rooms.${state.me}`) || "[]"); } catch { return []; }
}
function rememberRoom(jid, nick) {
  const rooms = savedRooms().filter((r) => r.jid !== jid);
  localStorage.setItem(`xmppd.rooms.${state.me}`, JSON.stringify([...rooms, { jid, nick }]));
}
function forgetRoom(jid) {
  localStorage.setItem(`xmppd.rooms.${state.me}`, JSON.stringify(savedRooms().filter((r) => r.jid !== jid)));
}

async function joinRoom(jid, nick, open = true) {
  const reply = await conn.joinRoom(jid, nick);
  if (reply.status !== "ok") return (reply.response && reply.response.reason) || "the room refused";
  const conv = conversation(jid, "room");
  conv.nick = conn.rooms.get(jid).nick;
  rememberRoom(jid, conv.nick);
  if (open) actions.open(jid);
  renderAll();
  return null;
}

function dialog(title, body) {
  const box = h("dialog", { class: "dialog", "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, title), body);
  box.addEventListener("close", () => box.remove());
  document.body.append(box);
  box.showModal();
  return box;
}

const actions = {
  can: (feature) => conn && conn.has(feature),
  open(key, kind) {
    const conv = conversation(key, kind || (conn.rooms.has(key) ? "room" : "chat"));
    state.active = key;
    state.sidebar = false;
    conv.unread = 0;
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
    const replace = conv.editing;
    input.value = ""; // before the await: the echo re-renders the composer meanwhile
    const reply = conv.kind === "room" ? await conn.sendRoom(key, body, replace) : await conn.send(key, body, replace);
    if (reply.status !== "ok") {
      document.getElementById("composer-input").value = body;
      announce(`Not sent: ${(reply.response && reply.response.reason) || reply.status}`);
      return;
    }
    conv.editing = null;
    if (conv.kind === "chat" && !replace) {
      conv.messages.push({ id: (reply.response && reply.response.id) || null, from: state.me, body, mine: true, stamp: null });
    } else if (conv.kind === "chat") {
      const old = conv.messages.find((m) => m.id === replace);
      if (old) { old.body = body; old.edited = true; }
    }
    conn.typing(key, "active");
    renderConversation();
    document.getElementById("composer-input").focus();
  },
  composerKey(event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); event.target.form.requestSubmit(); }
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
    const reply = conv.kind === "room" ? await conn.moderate(key, "retract", { id: msg.id }) : await conn.retract(key, msg.id);
    if (reply.status === "ok") app.onRetract(key, msg.id);
    else announce("The message could not be deleted.");
  },
  async kick(room, nick) {
    const reply = await conn.moderate(room, "kick", { nick });
    announce(reply.status === "ok" ? `${nick} was removed.` : `${nick} could not be removed.`);
  },
  async leave(room) {
    await conn.leaveRoom(room);
    forgetRoom(room);
    state.convs.delete(room);
    state.active = null;
    renderAll();
    announce("You left the room.");
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
    conn.setStatus(state.status.show === "available" ? "" : state.status.show, state.status.text);
    form.closest("dialog").close();
    renderStatusLine();
  },
  inviteDialog(room) {
    const box = dialog("Invite to the group chat", h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault();
      const reply = await conn.invite(room, e.target.jid.value.trim());
      if (reply.status === "ok") box.close();
      else e.target.querySelector(".form-error").textContent = "This server cannot send invitations yet.";
    } }, h("label", { for: "invite-jid" }, "Colleague's address"),
    h("input", { id: "invite-jid", name: "jid", type: "email", required: true, autocomplete: "off" }),
    h("p", { class: "form-error", role: "alert" }),
    h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Invite"),
      h("button", { class: "secondary", type: "button", onclick: actions.closeDialog }, "Cancel"))));
  },
};

async function loadHistory(conv) {
  if (conv.kind !== "chat" || !conn.has("history")) { conv.done = true; return; }
  conv.loading = true;
  renderConversation();
  const oldest = conv.messages.find((m) => m.id);
  const older = await conn.history(conv.key, oldest ? oldest.id : null);
  conv.loading = false;
  if (!older || !older.length) conv.done = true;
  else conv.messages = [...older.filter((m) => !conv.messages.some((x) => x.id && x.id === m.id)), ...conv.messages];
  renderConversation(true);
}

function newChatDialog() {
  const box = dialog("Start a chat", h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    const jid = e.target.jid.value.trim().toLowerCase();
    box.close();
    actions.open(jid, "chat");
  } }, h("label", { for: "chat-jid" }, "Address"),
  h("input", { id: "chat-jid", name: "jid", type: "email", required: true, placeholder: "name@example.org" }),
  h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Start chat"),
    h("button", { class: "secondary", type: "button", onclick: actions.closeDialog }, "Cancel"))));
}

function roomDialog() {
  const host = state.me.split("@")[1];
  const box = dialog("Join or create a group chat", h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    const f = e.target;
    let jid = f.room.value.trim().toLowerCase();
    if (!jid.includes("@")) jid = `${jid.replace(/\s+/g, "-")}@conference.${host}`;
    const error = await joinRoom(jid, f.nick.value.trim() || state.me.split("@")[0]);
    if (error) f.querySelector(".form-error").textContent = `Could not join: ${error}.`;
    else box.close();
  } }, h("label", { for: "room-name" }, "Room name or address"),
  h("input", { id: "room-name", name: "room", required: true, placeholder: `team@conference.${host}` }),
  h("label", { for: "room-nick" }, "Your name in the room"),
  h("input", { id: "room-nick", name: "nick", value: state.me.split("@")[0] }),
  h("p", { class: "form-error", role: "alert" }),
  h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Join"),
    h("button", { class: "secondary", type: "button", onclick: actions.closeDialog }, "Cancel"))));
}

function statusDialog() { dialog("Your status", statusMenu(state, actions)); }

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
        h("button", { class: "icon-button", onclick: statusDialog, "aria-label": "Set your status" }, "✎"),
        h("button", { class: "icon-button", onclick: logout, "aria-label": "Sign out" }, "⎋")),
      h("div", { class: "search" }, h("label", { for: "search", class: "visually-hidden" }, "Search conversations and people"),
        h("input", { id: "search", type: "search", placeholder: "Search", autocomplete: "off",
          oninput: (e) => { state.filter = e.target.value; renderSidebar(); } })),
      h("div", { class: "row actions" },
        h("button", { class: "secondary", onclick: newChatDialog }, "New chat"),
        h("button", { class: "secondary", onclick: roomDialog }, "Group chat"),
        h("button", { class: "icon-button", id: "notify-button", onclick: enableNotifications,
          "aria-label": "Turn on notifications" }, "!")),
      h("div", { class: "lists", id: "lists" })),
    h("main", { class: "main", id: "main" }));
  root.setAttribute("aria-busy", "false");
}

function renderStatusLine() {
  const line = document.getElementById("status-line");
  if (!line) return;
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
  if (list) list.scrollTop = keepTop ? list.scrollHeight - fromBottom : atBottom ? list.scrollHeight : list.scrollHeight - fromBottom;
  const again = document.getElementById("composer-input");
  if (again && draft) again.value = draft;
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function renderAll() {
  root.classList.toggle("sidebar-open", state.sidebar);
  renderSidebar();
  renderConversation();
  renderStatusLine();
  const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) ${BASE_TITLE}` : BASE_TITLE;
}

async function start(session) {
  state = freshState(session.jid);
  conn = new Connection(session, app);
  window.xmppdClient = { state: () => state, connection: () => conn };
  shell();
  renderAll();
  await conn.start();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state && state.active) actions.open(state.active);
});

const arrived = tokenFromHash();
if (arrived) saveSession(arrived, false);
const session = arrived || savedSession();
if (session && session.jid) start(session); else showLogin();
