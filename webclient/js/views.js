// Rendering: pure functions of the app state building DOM with dom.js (no markup strings).
import { avatar, h, time } from "./dom.js";
import { attachment, extras } from "./hooks.js";

export const SHOWS = [
  ["available", "Available"], ["chat", "Free to chat"], ["away", "Away"], ["dnd", "Do not disturb"],
  ["xa", "Away for long"],
];

export function showLabel(show) {
  const hit = SHOWS.find(([value]) => value === show);
  return hit ? hit[1] : "Offline";
}

export function loginView({ onSubmit, error, busy }) {
  const errorBox = h("p", { class: "form-error", role: "alert", id: "login-error" }, error || "");
  return h("main", { class: "login", "aria-labelledby": "login-title" },
    h("form", { class: "card login-card", onsubmit: onSubmit, "aria-describedby": "login-error" },
      h("div", { class: "brand" }, h("img", { src: "icon.svg", alt: "", width: 40, height: 40 }),
        h("h1", { id: "login-title" }, "Sign in to chat")),
      h("label", { for: "login-user" }, "Address or user name"),
      h("input", { id: "login-user", name: "user", autocomplete: "username", required: true,
        autocapitalize: "none", spellcheck: "false" }),
      h("label", { for: "login-password" }, "Password"),
      h("input", { id: "login-password", name: "password", type: "password", required: true,
        autocomplete: "current-password" }),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "remember" }),
        " Keep me signed in on this device"),
      h("button", { class: "primary", type: "submit", disabled: busy }, busy ? "Signing in…" : "Sign in"),
      errorBox));
}

function presenceDot(show) {
  return h("span", { class: `dot ${show || "offline"}`, "aria-hidden": "true" });
}

function badge(count) {
  return count ? h("span", { class: "badge" }, count > 99 ? "99+" : count,
    h("span", { class: "visually-hidden" }, " unread")) : null;
}

/** One row in the sidebar: a button opening the conversation. */
function item({ key, name, sub, show, unread, active, onclick }) {
  // The name is the visible text (WCAG 2.5.3); presence and unread are added for screen readers.
  return h("li", {},
    h("button", { class: `item${active ? " active" : ""}`, "data-key": key, onclick,
      "aria-current": active ? "true" : false },
      h("span", { class: "avatar-wrap" }, avatar(name, key), show !== undefined ? presenceDot(show) : null),
      h("span", { class: "item-text" }, h("span", { class: "item-name" }, name),
        show !== undefined ? h("span", { class: "visually-hidden" }, `, ${showLabel(show)}`) : null,
        sub ? h("span", { class: "item-sub" }, sub) : null),
      badge(unread)));
}

export function sidebarLists(state, actions) {
  const q = state.filter.trim().toLowerCase();
  const match = (...texts) => !q || texts.some((t) => t && t.toLowerCase().includes(q));
  const rooms = [...state.convs.values()].filter((c) => c.kind === "room" && match(c.title, c.key));
  const contacts = [...state.contacts.values()].filter((c) => match(c.name, c.jid));
  const chats = [...state.convs.values()]
    .filter((c) => c.kind === "chat" && !state.contacts.has(c.key) && match(c.title, c.key));
  const roomItems = rooms.map((c) => item({ key: c.key, name: c.title,
    sub: `${Object.keys(c.occupants).length} here`, unread: c.unread, active: state.active === c.key,
    onclick: () => actions.open(c.key) }));
  const people = [...contacts.map((c) => ({ key: c.jid, name: c.name || c.jid })),
    ...chats.map((c) => ({ key: c.key, name: c.title }))].map(({ key, name }) => {
    const p = state.presenceOf(key);
    const conv = state.convs.get(key);
    return item({ key, name, show: p.show, sub: p.status || key,
      unread: conv ? conv.unread : 0, active: state.active === key, onclick: () => actions.open(key, "chat") });
  });
  const requests = [...state.requests].map(([jid, status]) => h("li", { class: "request" },
    h("span", { class: "item-text" }, h("span", { class: "item-name" }, jid),
      h("span", { class: "item-sub" }, status || "wants to see your status")),
    h("button", { class: "tool", onclick: () => actions.answer(jid, true), "aria-label": `Accept ${jid}` }, "Accept"),
    h("button", { class: "tool danger", onclick: () => actions.answer(jid, false), "aria-label": `Decline ${jid}` }, "Decline")));
  return [
    requests.length ? h("h2", { class: "list-title", id: "requests-title" }, "Requests") : null,
    requests.length ? h("ul", { class: "list", "aria-labelledby": "requests-title" }, requests) : null,
    h("h2", { class: "list-title", id: "rooms-title" }, "Group chats"),
    roomItems.length ? h("ul", { class: "list", "aria-labelledby": "rooms-title" }, roomItems)
      : h("p", { class: "empty" }, q ? "No group chat matches." : "No group chats yet."),
    h("h2", { class: "list-title", id: "people-title" }, "People"),
    people.length ? h("ul", { class: "list", "aria-labelledby": "people-title" }, people)
      : h("p", { class: "empty" }, q ? "Nobody matches." : "No contacts yet. Start a chat with an address."),
  ];
}

function messageView(conv, msg, actions, canModerate) {
  const own = msg.mine;
  const tools = [];
  const ref = conv.kind === "room" ? msg.id : msg.msgId; // what corrections and retractions name
  const attached = msg.file && !msg.retracted ? attachment(msg, conv, actions.connection()) : null;
  if (ref && own && !msg.retracted && !msg.file && actions.can("corrections")) {
    tools.push(h("button", { class: "tool", onclick: () => actions.edit(conv.key, msg),
      "aria-label": `Edit message: ${msg.body.slice(0, 40)}` }, "Edit"));
  }
  if (ref && !msg.retracted && actions.can("retractions") && (own || (conv.kind === "room" && canModerate))) {
    tools.push(h("button", { class: "tool", onclick: () => actions.retract(conv.key, msg),
      "aria-label": `Delete message: ${(msg.file ? msg.file.name : msg.body).slice(0, 40)}` }, "Delete"));
  }
  const who = conv.kind === "room" ? msg.from : own ? "You" : conv.title;
  if (msg.notice) return h("li", { class: "notice" }, msg.body);
  return h("li", { class: `msg${own ? " own" : ""}${msg.retracted ? " retracted" : ""}` },
    own ? null : avatar(who, conv.kind === "room" ? `${conv.key}/${msg.from}` : conv.key, "small"),
    h("div", { class: "bubble" },
      h("div", { class: "meta" }, h("span", { class: "who" }, who),
        h("time", { datetime: msg.stamp || "" }, time(msg.stamp)),
        msg.edited ? h("span", { class: "edited" }, "edited") : null,
        own && (msg.read || msg.delivered) ? h("span", { class: "read" }, msg.read ? "Read" : "Delivered") : null),
      attached && msg.body === msg.file.url ? null
        : h("p", { class: "body" }, !msg.retracted ? msg.body
          : msg.moderatedBy ? `Removed by ${msg.moderatedBy}.` : "This message was deleted."),
      attached,
      tools.length ? h("div", { class: "tools" }, tools) : null));
}

export function conversationView(state, conv, actions) {
  if (!conv) {
    return h("section", { class: "welcome", "aria-labelledby": "welcome-title" },
      h("h2", { id: "welcome-title" }, "Welcome"),
      h("p", {}, "Pick a conversation on the left, start a chat, or join a group chat."),
      h("button", { class: "secondary only-phone", onclick: actions.toggleSidebar }, "Show conversations"));
  }
  const p = conv.kind === "chat" ? state.presenceOf(conv.key) : null;
  const me = conv.kind === "room" ? conv.occupants[conv.nick] : null;
  const canModerate = !!me && me.role === "moderator";
  const subtitle = conv.kind === "room"
    ? `${Object.keys(conv.occupants).length} here · ${conv.key}`
    : `${showLabel(p.show)}${p.status ? ` · ${p.status}` : ""}`;
  const header = h("header", { class: "conv-header" },
    h("button", { class: "icon-button only-phone", onclick: actions.toggleSidebar,
      "aria-label": "Back to conversations" }, "‹"),
    avatar(conv.title, conv.key),
    h("div", { class: "conv-title" }, h("h2", { id: "conv-title" }, conv.title),
      h("p", { class: "item-sub" }, subtitle)),
    h("div", { class: "conv-actions" }, extras("header", conv, actions.connection())),
    conv.kind === "room" ? h("div", { class: "conv-actions" },
      h("button", { class: "secondary", onclick: () => actions.togglePanel(),
        "aria-expanded": state.panel === "occupants" ? "true" : "false", "aria-controls": "occupants" },
      "People"),
      h("button", { class: "secondary", onclick: () => actions.inviteDialog(conv.key) }, "Invite"),
      h("button", { class: "secondary danger", onclick: () => actions.leave(conv.key) }, "Leave")) : null);
  const messages = conv.messages.map((m) => messageView(conv, m, actions, canModerate));
  const log = h("div", { class: "messages", id: "messages", role: "log", tabindex: "0",
    "aria-label": `Messages with ${conv.title}`, onscroll: (e) => actions.scrolled(conv.key, e.target) },
  h("ol", { class: "message-list" },
    conv.loading ? h("li", { class: "loading" }, "Loading earlier messages…") : null,
    messages.length ? messages : h("li", { class: "empty" }, "No messages yet. Say hello!")));
  const typing = h("p", { class: "typing", "aria-live": "polite" },
    conv.typing.size ? `${[...conv.typing].join(", ")} ${conv.typing.size > 1 ? "are" : "is"} typing…` : "");
  const composer = h("form", { class: "composer", onsubmit: (e) => actions.submit(e, conv.key) },
    conv.editing ? h("p", { class: "editing" }, "Editing a message ",
      h("button", { type: "button", class: "link", onclick: () => actions.cancelEdit(conv.key) }, "Cancel")) : null,
    h("label", { for: "composer-input", class: "visually-hidden" }, `Message ${conv.title}`),
    h("textarea", { id: "composer-input", name: "body", rows: 1, placeholder: `Message ${conv.title}`,
      onkeydown: actions.composerKey, oninput: () => actions.typed(conv.key) }),
    extras("composer", conv, actions.connection()),
    h("button", { class: "primary", type: "submit" }, conv.editing ? "Save" : "Send"));
  const panel = conv.kind === "room" && state.panel === "occupants"
    ? occupantsView(conv, canModerate, actions) : null;
  return h("section", { class: `conversation${panel ? " with-panel" : ""}`, "aria-labelledby": "conv-title" },
    header, h("div", { class: "conv-body" }, h("div", { class: "conv-main" }, log, typing, composer), panel));
}

function occupantsView(conv, canModerate, actions) {
  const rows = Object.entries(conv.occupants).sort(([a], [b]) => a.localeCompare(b)).map(([nick, meta]) =>
    h("li", { class: "occupant" }, avatar(nick, `${conv.key}/${nick}`, "small"),
      h("span", { class: "item-text" }, h("span", { class: "item-name" }, nick),
        h("span", { class: "item-sub" }, meta.role || "participant")),
      canModerate && nick !== conv.nick ? h("button", { class: "tool danger",
        onclick: () => actions.kick(conv.key, nick), "aria-label": `Remove ${nick} from the room` }, "Remove") : null));
  return h("aside", { class: "panel", id: "occupants", "aria-labelledby": "occupants-title" },
    h("h3", { id: "occupants-title" }, `In this room (${rows.length})`), h("ul", { class: "list" }, rows));
}

export function statusMenu(state, actions) {
  return h("form", { class: "status-form", onsubmit: actions.saveStatus },
    h("label", { for: "status-show" }, "Availability"),
    h("select", { id: "status-show", name: "show" },
      SHOWS.map(([value, label]) => h("option", { value, selected: state.status.show === value }, label))),
    h("label", { for: "status-text" }, "Status message"),
    h("input", { id: "status-text", name: "text", value: state.status.text, maxlength: 200,
      placeholder: "What are you up to?" }),
    h("div", { class: "row" }, h("button", { class: "primary", type: "submit" }, "Set status"),
      h("button", { class: "secondary", type: "button", value: "cancel", onclick: actions.closeDialog }, "Cancel")));
}
