// A small Phoenix V2 JSON client: frames are [join_ref, ref, topic, event, payload] over one
// WebSocket (docs/channels.md). Channels rejoin after a reconnect; heartbeats every 30 s.
// Written for this client so that the page needs no npm package at run time. With
// `fallback: true` (the widget) a WebSocket that never opens twice in a row gives way to
// long-poll (longpoll.js) for the rest of the page's life.
import { LongPoll } from "./longpoll.js";

const HEARTBEAT_MS = 30000;
const REPLY_TIMEOUT_MS = 10000;
const BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];

export class Socket {
  /** @param {string} url ws(s)://host/socket  @param {() => object} params query params */
  constructor(url, params, { fallback = false } = {}) {
    this.url = url;
    this.fallback = fallback;
    this.longpoll = false;
    this.failures = 0; // WebSockets in a row that closed without opening
    this.params = params;
    this.ref = 0;
    this.channels = new Map();
    this.pending = new Map(); // ref -> {resolve, timer}
    this.listeners = { open: [], close: [], error: [] };
    this.attempts = 0;
    this.closing = false;
    this.ws = null;
  }

  on(kind, fn) { this.listeners[kind].push(fn); }
  emit(kind, arg) { for (const fn of this.listeners[kind]) fn(arg); }
  makeRef() { this.ref += 1; return String(this.ref); }
  get connected() { return this.ws !== null && this.ws.readyState === 1; } // OPEN, both kinds

  connect() {
    this.closing = false;
    const query = new URLSearchParams({ ...this.params(), vsn: "2.0.0" });
    const ws = this.longpoll
      ? new LongPoll(`${this.url.replace(/^ws/, "http")}/longpoll?${query}`)
      : new WebSocket(`${this.url}/websocket?${query}`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempts = 0;
      this.failures = 0;
      // An unanswered heartbeat means a dead link the browser has not noticed: reconnect.
      this.heartbeat = setInterval(async () => {
        const reply = await this.request("phoenix", "heartbeat", {});
        if (reply.status === "timeout" && this.ws === ws) ws.close(4000, "heartbeat timeout");
      }, HEARTBEAT_MS);
      this.emit("open");
      for (const channel of this.channels.values()) if (channel.wanted) channel.rejoin();
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onerror = () => this.emit("error");
    ws.onclose = (event) => {
      clearInterval(this.heartbeat);
      if (this.ws === ws) this.ws = null;
      if (!opened && this.fallback && ++this.failures >= 2) this.longpoll = true;
      for (const channel of this.channels.values()) channel.joined = false;
      for (const [ref, wait] of this.pending) {
        clearTimeout(wait.timer);
        wait.resolve({ status: "error", response: { reason: "disconnected" } });
        this.pending.delete(ref);
      }
      this.emit("close", event);
      if (this.closing || event.code === 4001 || event.code === 4003) return;
      const delay = BACKOFF_MS[Math.min(this.attempts, BACKOFF_MS.length - 1)];
      this.attempts += 1;
      this.retry = setTimeout(() => this.connect(), delay);
    };
  }

  disconnect() {
    this.closing = true;
    clearTimeout(this.retry);
    if (this.ws) this.ws.close(1000, "bye");
  }

  receive(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    if (!Array.isArray(frame) || frame.length !== 5) return;
    const [joinRef, ref, topic, event, payload] = frame;
    if (event === "phx_reply" && ref !== null && this.pending.has(ref)) {
      const wait = this.pending.get(ref);
      this.pending.delete(ref);
      clearTimeout(wait.timer);
      wait.resolve(payload);
      return;
    }
    const channel = this.channels.get(topic);
    if (!channel || (joinRef !== null && joinRef !== channel.joinRef)) return;
    channel.dispatch(event, payload);
  }

  /** Send one frame; resolves with the reply payload {status, response}. */
  request(topic, event, payload, joinRef = null, ref = this.makeRef()) {
    return new Promise((resolve) => {
      if (!this.connected) {
        resolve({ status: "error", response: { reason: "disconnected" } });
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        resolve({ status: "timeout", response: {} });
      }, REPLY_TIMEOUT_MS);
      this.pending.set(ref, { resolve, timer });
      this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]));
    });
  }

  channel(topic, params = {}) {
    const old = this.channels.get(topic);
    if (old) return old;
    const channel = new Channel(this, topic, params);
    this.channels.set(topic, channel);
    return channel;
  }
}

export class Channel {
  constructor(socket, topic, params) {
    this.socket = socket;
    this.topic = topic;
    this.params = params;
    this.handlers = new Map();
    this.joinRef = null;
    this.joined = false;
    this.wanted = false;
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(fn);
  }

  dispatch(event, payload) {
    if (event === "phx_close" || event === "phx_error") this.joined = false;
    if (event === "phx_close") this.wanted = false;
    for (const fn of this.handlers.get(event) || []) fn(payload);
  }

  once(event, fn) {
    const wrapper = (payload) => {
      this.handlers.set(event, this.handlers.get(event).filter((f) => f !== wrapper));
      fn(payload);
    };
    this.on(event, wrapper);
  }

  /** Resolves with the join reply {status, response}; waits for the socket to open. */
  async join() {
    this.wanted = true;
    if (!this.socket.connected) return new Promise((resolve) => this.once("joined", resolve));
    return this.rejoin();
  }

  async rejoin() {
    const ref = this.socket.makeRef();
    this.joinRef = ref;
    const params = typeof this.params === "function" ? this.params() : this.params;
    const reply = await this.socket.request(this.topic, "phx_join", params, ref, ref);
    this.joined = reply.status === "ok";
    if (!this.joined && reply.status === "error") this.wanted = false;
    this.dispatch("joined", reply);
    return reply;
  }

  push(event, payload) {
    if (!this.joined) return Promise.resolve({ status: "error", response: { reason: "not joined" } });
    return this.socket.request(this.topic, event, payload, this.joinRef);
  }

  async leave() {
    this.wanted = false;
    const reply = await this.push("phx_leave", {});
    this.joined = false;
    this.socket.channels.delete(this.topic);
    return reply;
  }
}

/** Phoenix.Presence's state merge: {key: {metas: [...]}} with joins/leaves diffs. */
export function syncState(state, incoming) {
  const next = {};
  for (const [key, value] of Object.entries(incoming)) next[key] = { metas: [...value.metas] };
  return next;
}

export function syncDiff(state, { joins = {}, leaves = {} }) {
  const next = { ...state };
  for (const [key, value] of Object.entries(joins)) {
    const current = next[key] ? next[key].metas : [];
    const refs = new Set(value.metas.map((m) => m.phx_ref));
    next[key] = { metas: [...current.filter((m) => !refs.has(m.phx_ref)), ...value.metas] };
  }
  for (const [key, value] of Object.entries(leaves)) {
    if (!next[key]) continue;
    const refs = new Set(value.metas.map((m) => m.phx_ref));
    const metas = next[key].metas.filter((m) => !refs.has(m.phx_ref));
    if (metas.length) next[key] = { metas };
    else delete next[key];
  }
  return next;
}
