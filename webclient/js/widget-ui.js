// The widget's page side: presence dots beside addresses, docked chat popups and the status
// control, each inside a shadow root so that neither the host page's CSS nor ours leaks.
import { bare } from "./widget.js";

const CSS = `
:host { all: initial; font: 13px/1.4 system-ui, sans-serif; color: #1d2330; }
.dot { display: inline-block; width: .7em; height: .7em; border-radius: 50%; margin: 0 .3em;
  vertical-align: middle; cursor: pointer; border: 1px solid #0003; background: #b8bcc6; padding: 0; }
.dot.available { background: #2fa84f; } .dot.away { background: #f0a020; } .dot.dnd { background: #d33c3c; }
.dock { position: fixed; right: 12px; bottom: 0; display: flex; gap: 8px; align-items: flex-end; z-index: 2147483000; }
.chat { width: 280px; background: #fff; border: 1px solid #c5cad3; border-bottom: 0;
  border-radius: 8px 8px 0 0; box-shadow: 0 2px 12px #0003; display: flex; flex-direction: column; }
.head { display: flex; align-items: center; gap: 4px; padding: 6px 8px; background: #2e4a7d; color: #fff;
  border-radius: 8px 8px 0 0; cursor: pointer; }
.head .name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.head button { background: none; border: 0; color: #fff; font-size: 15px; cursor: pointer; padding: 0 4px; }
.badge { background: #d33c3c; color: #fff; border-radius: 9px; padding: 0 6px; font-size: 11px; }
.badge:empty { display: none; }
.log { height: 240px; overflow-y: auto; padding: 6px 8px; display: flex; flex-direction: column; gap: 4px; }
.msg { max-width: 85%; padding: 4px 8px; border-radius: 8px; background: #eef0f4; white-space: pre-wrap;
  overflow-wrap: anywhere; align-self: flex-start; }
.msg.mine { background: #d8e6ff; align-self: flex-end; }
.typing { min-height: 1.2em; padding: 0 8px; color: #5b6270; font-style: italic; font-size: 12px; }
form { display: flex; border-top: 1px solid #e1e4ea; } input { flex: 1; border: 0; padding: 8px; font: inherit; }
.chat.min .log, .chat.min .typing, .chat.min form { display: none; }
.status { display: inline-flex; gap: 4px; align-items: center; }
.status select, .status input { font: inherit; padding: 2px 4px; }
.status.floating { position: fixed; left: 12px; bottom: 12px; background: #fff; padding: 4px 8px;
  border: 1px solid #c5cad3; border-radius: 6px; z-index: 2147483000; }
`;
const LABELS = { available: "Available", away: "Away", dnd: "Do not disturb", offline: "Invisible" };

function el(tag, attrs = {}, ...children) {
  return elIn(document, tag, attrs, ...children);
}

function elIn(doc, tag, attrs = {}, ...children) {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** A host element with its own shadow root and our styles (in `doc`: a frame's document). */
function shadowHost(tag, className, doc = document) {
  const host = doc.createElement(tag);
  host.className = className;
  const root = host.attachShadow({ mode: "open" });
  root.append(elIn(doc, "style", {}, CSS));
  return { host, root };
}

export class WidgetUI {
  constructor(widget, config) {
    this.widget = widget;
    this.config = config;
    this.dots = []; // {dot, jid}
    this.chats = new Map(); // JID -> {box, log, typing, badge, minimised}
    const { host, root } = shadowHost("div", "xmppd-widget");
    this.dock = el("div", { class: "dock" });
    root.append(this.dock);
    document.body.append(host);
    this.mountStatus(root);
    new MutationObserver(() => this.scanSoon()).observe(document.body, { childList: true, subtree: true });
  }

  scanSoon() {
    clearTimeout(this.scanTimer);
    this.scanTimer = setTimeout(() => this.scan(), 100);
  }

  /** Give every address on the page its dot (once); mailto links only when configured.
   * `root`: another document to mark, e.g. a same-origin frame's (its popups open here). */
  scan(root = document) {
    const selector = truthy(this.config.mailto) ? "[data-chat-address], a[href^='mailto:']" : "[data-chat-address]";
    const doc = root.ownerDocument || root;
    for (const target of root.querySelectorAll(selector)) {
      if (target.dataset.chatMarked) continue;
      const jid = this.widget.jidOf(target.dataset.chatAddress || target.getAttribute("href"));
      if (!jid) continue;
      target.dataset.chatMarked = "1";
      const { host, root: shadow } = shadowHost("span", "xmppd-presence", doc);
      const dot = elIn(doc, "button", { class: "dot", type: "button", "data-jid": jid });
      shadow.append(dot);
      target.after(host);
      const entry = { dot, jid, address: (target.dataset.chatAddress || target.getAttribute("href")).replace(/^mailto:/i, "").split("?")[0] };
      if (target.dataset.chatAddress && !target.matches("a[href]")) target.addEventListener("click", () => this.open(entry.jid));
      dot.onclick = (e) => { e.preventDefault(); e.stopPropagation(); this.open(entry.jid); };
      this.dots.push(entry);
    }
    this.dots = this.dots.filter((d) => d.dot.getRootNode().host.isConnected);
    this.resolve();
    this.refresh();
  }

  /** Ask the server (the directory) for the JIDs of addresses not asked about yet; its answer
   * replaces the local rule's guess. */
  async resolve() {
    const asking = this.dots.filter((d) => !d.resolved);
    const answer = await this.widget.resolve([...new Set(asking.map((d) => d.address))]);
    for (const d of asking) {
      if (!(d.address in answer)) continue;
      d.resolved = true;
      if (answer[d.address]) d.jid = d.dot.dataset.jid = answer[d.address];
    }
    this.refresh();
  }

  refresh() {
    for (const { dot, jid } of this.dots) {
      const state = this.widget.stateOf(jid);
      const text = this.widget.statusText(jid);
      dot.className = `dot ${state}`;
      dot.dataset.state = state;
      const label = `${jid}: ${LABELS[state] === "Invisible" ? "Offline" : LABELS[state]}${text ? ` (${text})` : ""}. Chat`;
      dot.title = label;
      dot.setAttribute("aria-label", label);
    }
    for (const [jid, chat] of this.chats) chat.badge.textContent = this.widget.unread[jid] || "";
    if (this.select) this.select.value = this.widget.own.show;
  }

  connection(up) { this.dock.dataset.connected = up ? "1" : "0"; }

  /** The status control: in the host's element (config.statusTarget) or floating. */
  mountStatus(dockRoot) {
    const target = this.config.statusTarget && document.querySelector(this.config.statusTarget);
    let root = dockRoot;
    if (target) {
      const shadow = shadowHost("span", "xmppd-status");
      target.append(shadow.host);
      root = shadow.root;
    } else if (!truthy(this.config.statusControl ?? true)) return;
    this.select = el("select", { "aria-label": "My chat status" },
      ...Object.entries(LABELS).map(([value, label]) => el("option", { value }, label)));
    this.text = el("input", { placeholder: "Status message", "aria-label": "Status message", size: "14" });
    const apply = () => this.widget.setStatus(this.select.value, this.text.value.trim());
    this.select.addEventListener("change", apply);
    this.text.addEventListener("change", apply);
    root.append(el("span", { class: target ? "status" : "status floating" }, this.select, this.text));
  }

  open(jid, minimised = false) {
    if (!jid) return;
    let chat = this.chats.get(jid);
    if (!chat) chat = this.createChat(jid);
    if (!minimised) this.minimise(chat, false);
    return chat;
  }

  createChat(jid) {
    const log = el("div", { class: "log", role: "log", "aria-live": "polite" });
    const typing = el("div", { class: "typing" });
    const badge = el("span", { class: "badge" });
    const input = el("input", { placeholder: "Message", "aria-label": `Message to ${jid}`, maxlength: "16000" });
    const chat = { jid, log, typing, badge, input, ids: new Set(), last: null, minimised: false };
    const toggle = el("button", { type: "button", "aria-label": "Minimise", onclick: (e) => {
      e.stopPropagation(); this.minimise(chat, !chat.minimised); } }, "\u2013");
    const close = el("button", { type: "button", "aria-label": "Close", onclick: (e) => {
      e.stopPropagation(); chat.box.remove(); this.chats.delete(jid); } }, "\u00d7");
    const head = el("div", { class: "head", onclick: () => this.minimise(chat, !chat.minimised) },
      el("span", { class: "name" }, jid), badge, toggle, close);
    const form = el("form", { onsubmit: (e) => { e.preventDefault(); this.send(chat); } }, input);
    input.addEventListener("input", () => this.composing(chat));
    chat.box = el("section", { class: "chat", "data-jid": jid, "aria-label": `Chat with ${jid}` }, head, log, typing, form);
    this.dock.append(chat.box);
    this.chats.set(jid, chat);
    this.widget.history(jid).then((messages) => { for (const m of messages) this.show(chat, m); this.read(chat); });
    this.refresh();
    return chat;
  }

  minimise(chat, yes) {
    chat.minimised = yes;
    chat.box.classList.toggle("min", yes);
    if (!yes) { this.read(chat); chat.input.focus(); }
  }

  show(chat, msg) {
    if (msg.id && chat.ids.has(msg.id)) return;
    if (msg.id) chat.ids.add(msg.id);
    const mine = bare(msg.from) === this.widget.jid;
    chat.log.append(el("div", { class: mine ? "msg mine" : "msg" }, msg.body));
    chat.log.scrollTop = chat.log.scrollHeight;
    if (!mine && msg.id) chat.last = msg.id;
  }

  /** A live or resumed 1:1 message: into its popup, opened minimised when none is open. */
  message(withJid, msg) {
    const jid = bare(withJid);
    const chat = this.chats.get(jid) || this.open(jid, true);
    this.show(chat, msg);
    chat.typing.textContent = "";
    if (!chat.minimised) this.read(chat);
  }

  read(chat) { if (!chat.minimised) this.widget.markRead(chat.jid, chat.last); }

  typing(jid, state) {
    const chat = this.chats.get(jid);
    if (chat) chat.typing.textContent = state === "composing" ? `${jid} is typing\u2026` : "";
  }

  composing(chat) {
    if (!chat.composing) this.widget.chatState(chat.jid, "composing");
    chat.composing = true;
    clearTimeout(chat.pause);
    chat.pause = setTimeout(() => { chat.composing = false; this.widget.chatState(chat.jid, "paused"); }, 3000);
  }

  async send(chat) {
    const body = chat.input.value.trim();
    if (!body) return;
    chat.input.value = "";
    clearTimeout(chat.pause);
    chat.composing = false;
    const reply = await this.widget.send(chat.jid, body);
    if (reply.status !== "ok") chat.log.append(el("div", { class: "msg" }, `Not sent: ${reply.response.reason || reply.status}`));
  }
}

function truthy(value) { return value === true || value === "true" || value === "1" || value === ""; }
