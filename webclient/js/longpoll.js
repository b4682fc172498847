// Phoenix's long-poll transport behind the WebSocket interface phx.js uses (onopen, onmessage,
// onclose, send, close, readyState), for networks that block WebSockets (docs/channels.md,
// "Long-poll"): a GET opens a session token (status 410), then GETs wait for frames and POSTs
// carry ours, one per line.

const OPEN = 1;
const CLOSED = 3;

export class LongPoll {
  /** @param {string} url http(s)://host/socket/longpoll?vsn=...&token=<host-app token> */
  constructor(url) {
    this.url = url;
    this.session = null;
    this.readyState = 0;
    this.outbox = [];
    this.sending = false;
    this.abort = new AbortController();
    setTimeout(() => this.poll(), 0);
  }

  endpoint() {
    return this.session ? `${this.url}&token=${encodeURIComponent(this.session)}` : this.url;
  }

  async poll() {
    while (this.readyState !== CLOSED) {
      let answer;
      try {
        const response = await fetch(this.endpoint(), { cache: "no-store", credentials: "omit", signal: this.abort.signal });
        answer = await response.json();
      } catch {
        this.finish(1006, "network error");
        return;
      }
      if (answer.token) this.session = answer.token;
      if (answer.status === 410 && this.readyState === 0) {
        this.readyState = OPEN;
        this.onopen && this.onopen();
      } else if (answer.status === 200) {
        for (const frame of answer.messages || []) {  // frames as JSON text, as phoenix.js has them
          this.onmessage && this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
        }
      } else if (answer.status !== 204) {
        this.finish(answer.status === 403 ? 4001 : 1006, answer.reason || `status ${answer.status}`);
        return;
      }
    }
  }

  send(text) {
    this.outbox.push(text);
    if (!this.sending) this.flush();
  }

  async flush() {
    this.sending = true;
    while (this.outbox.length && this.readyState === OPEN) {
      const body = this.outbox.splice(0).join("\n");
      try {
        const response = await fetch(this.endpoint(), {
          method: "POST", body, credentials: "omit", headers: { "Content-Type": "application/x-ndjson" },
        });
        const answer = await response.json();
        if (answer.status !== 200) this.finish(1006, answer.reason || `status ${answer.status}`);
      } catch {
        this.finish(1006, "network error");
      }
    }
    this.sending = false;
  }

  close(code = 1000, reason = "") { this.finish(code, reason); }

  finish(code, reason) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.abort.abort();
    this.onclose && this.onclose({ code, reason });
  }
}
