// The widget's connection: a host-app token, the user topic of the JSON channels
// (docs/channels.md) over phx.js, presence of the people named on the page, 1:1 chat.
// The page side (dots, popups, the status control) is widget-ui.js.
import { Socket, syncDiff, syncState } from "./phx.js";
import { WidgetUI } from "./widget-ui.js";

const REFRESH_MARGIN_S = 60; // refresh the token this long before it expires

/** Start the widget with the host page's configuration (widget.js reads it). */
export async function start(config) {
  const widget = new Widget(config);
  window.xmppdWidget = widget.api();
  await widget.connect();
  return widget;
}

class Widget {
  constructor(config) {
    this.config = config;
    this.presence = {}; // bare JID -> {metas}
    this.unread = {};
    this.own = { show: "available", status: "" };
    this.ui = new WidgetUI(this, config);
    this.token = null;
    this.jid = null;
    this.refreshed = 0; // tokens renewed in place
  }

  api() {
    return {
      scan: (root) => this.ui.scan(root),
      open: (address) => this.ui.open(this.jidOf(address)),
      setStatus: (show, status) => this.setStatus(show, status),
      state: () => ({ jid: this.jid, connected: this.socket ? this.socket.connected : false,
        joined: !!(this.user && this.user.joined), longpoll: !!(this.socket && this.socket.longpoll),
        presence: this.presence, unread: this.unread, own: this.own, refreshed: this.refreshed }),
    };
  }

  /** An email address as a JID: the host's function, a domain rule, or the address itself. */
  jidOf(address) {
    const addr = String(address).replace(/^mailto:/i, "").split("?")[0].trim().toLowerCase();
    if (typeof this.config.addressToJid === "function") return this.config.addressToJid(addr) || null;
    const [local, domain] = addr.split("@");
    if (!local || !domain) return null;
    const domains = this.config.domains || {};
    return `${local}@${domains[domain] || domain}`;
  }

  /** {token, jid} from the host page: a function, or a URL answering JSON or the bare token. */
  async fetchToken() {
    let answer;
    if (typeof this.config.token === "function") answer = await this.config.token();
    else {
      const response = await fetch(this.config.tokenUrl, { credentials: "include", cache: "no-store" });
      if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
      const text = (await response.text()).trim();
      answer = text.startsWith("{") ? JSON.parse(text) : text;
    }
    if (typeof answer === "string") answer = { token: answer };
    const claims = claimsOf(answer.token) || {};
    this.token = answer.token;
    this.exp = typeof claims.exp === "number" ? claims.exp : null;
    this.jid = (answer.jid || this.config.jid || jidFromClaims(claims) || "").toLowerCase();
    if (!this.jid) throw new Error("no JID: give jid with the token");
  }

  async connect() {
    await this.fetchToken();
    const server = new URL(this.config.server);
    const scheme = server.protocol === "https:" ? "wss" : "ws";
    this.socket = new Socket(`${scheme}://${server.host}/socket`, () => ({ token: this.token }), { fallback: true });
    if (this.config.transport === "longpoll") this.socket.longpoll = true;
    this.socket.on("open", () => { this.renewals = 0; this.ui.connection(true); });
    this.socket.on("close", (event) => {
      this.ui.connection(false);
      // Expired or revoked: phx.js stops; a fresh token from the host page starts it again,
      // sooner the first time, slower when the server keeps refusing (refusals count as
      // failed logins there).
      if (event.code !== 4001 && event.code !== 4003) return;
      const delay = Math.min(60000, 1000 * 4 ** (this.renewals || 0));
      this.renewals = (this.renewals || 0) + 1;
      setTimeout(() => this.renew(), delay);
    });
    this.socket.connect();
    this.joinUser(true);
    this.ui.scan();
  }

  async renew() {
    try {
      await this.fetchToken();
      this.socket.connect();
    } catch (err) {
      console.error("xmppd widget:", err);
      setTimeout(() => this.renew(), 30000);
    }
  }

  /** Refresh the token in place before it expires (docs/channels.md, "Token lifetime"). */
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.exp) return;
    const wait = Math.max(5, this.exp - Date.now() / 1000 - REFRESH_MARGIN_S);
    this.refreshTimer = setTimeout(async () => {
      try {
        await this.fetchToken();
        const reply = await this.socket.request("phoenix", "refresh_token", { token: this.token });
        if (reply.status === "ok") this.refreshed += 1;
      } catch (err) {
        console.error("xmppd widget: token refresh:", err);
      }
      this.scheduleRefresh();
    }, wait * 1000);
  }

  joinUser(available) {
    const u = this.socket.channel(`user:${this.jid}`, () => {
      if (!available) return { available: false };
      const payload = { show: showOf(this.own.show) };
      if (this.own.status) payload.status = this.own.status;
      return payload;
    });
    this.user = u;
    u.on("joined", (reply) => {
      if (reply.status !== "ok") return;
      this.unread = { ...(reply.response.unread || {}) };
      this.scheduleRefresh();
      this.ui.resolve();
      this.ui.refresh();
    });
    u.on("presence_state", (state) => { this.presence = syncState(this.presence, state); this.ui.refresh(); });
    u.on("presence_diff", (diff) => { this.presence = syncDiff(this.presence, diff); this.ui.refresh(); });
    u.on("new_msg", (msg) => { if (msg.body && !msg.retract) this.ui.message(msg.with || msg.from, msg); });
    u.on("chat_state", (p) => this.ui.typing(bare(p.from), p.state));
    u.on("unread", (p) => { this.unread[p.with] = p.count; this.ui.refresh(); });
    return u.join();
  }

  /** `show`: available, away, dnd or offline (invisible: not available, still reachable). */
  async setStatus(show, status = "") {
    const wasOffline = this.own.show === "offline";
    this.own = { show, status };
    if (show === "offline" || wasOffline) {
      if (this.user) await this.user.leave();
      this.presence = {};
      await this.joinUser(show !== "offline");
    } else {
      const payload = { show: showOf(show) };
      if (status) payload.status = status;
      await this.user.push("presence", payload);
    }
    this.ui.refresh();
  }

  /** A contact's state for its dot: available, away, dnd or offline. */
  stateOf(jid) {
    const metas = (this.presence[jid] || {}).metas || [];
    if (!metas.length) return "offline";
    const shows = metas.map((m) => m.show || "available");
    if (shows.includes("available") || shows.includes("chat")) return "available";
    if (shows.includes("dnd")) return "dnd";
    return "away";
  }

  statusText(jid) {
    const meta = ((this.presence[jid] || {}).metas || []).find((m) => m.status);
    return meta ? meta.status : "";
  }

  /** Addresses -> JIDs by the server (the directory's `mail`): {address: JID or null}. */
  async resolve(addresses) {
    if (!this.user || !this.user.joined || !addresses.length) return {};
    const asked = addresses.filter((a) => a.length >= 3 && a.length <= 254).slice(0, 100);
    if (!asked.length) return {};
    const reply = await this.user.push("resolve", { addresses: asked });
    return reply.status === "ok" ? reply.response.jids : {};
  }

  async history(jid) {
    const reply = await this.user.push("history", { with: jid, limit: 30 });
    return reply.status === "ok" ? reply.response.messages.filter((m) => m.body && !m.retract) : [];
  }

  send(jid, body) { return this.user.push("new_msg", { to: jid, body, type: "chat" }); }
  chatState(jid, state) { return this.user.push("chat_state", { to: jid, state }); }
  markRead(jid, id) { if (id && this.unread[jid]) this.user.push("displayed", { with: jid, id }); }
}

/** The protocol's `show`: null is plain online. */
function showOf(show) { return show === "away" || show === "dnd" ? show : null; }

export function bare(jid) { return String(jid).split("/")[0]; }

function claimsOf(token) {
  const parts = String(token).split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

function jidFromClaims(claims) {
  const sub = String(claims.sub || "");
  if (sub.includes("@")) return sub;
  const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
  return sub && aud ? `${sub}@${aud}` : null;
}
