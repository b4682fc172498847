// Converse.js in headless Debian Chromium (playwright-core), driven by tests/web/test_converse.py.
// Usage: node converse.mjs HOST_META_URL JID PASSWORD PEER SCREENSHOT [BOSH_URL]
// With BOSH_URL, Converse is told that BOSH endpoint instead of discovering the WebSocket.
//
// The page is served from https://app.test (files from node_modules/converse.js/dist) and
// Converse gets no endpoint: it discovers it through XEP-0156 at https://<domain>/.well-known/
// host-meta, which this script forwards to the test server's own host-meta (HOST_META_URL),
// since the test server cannot listen on port 443. It prints JSON lines: {"connected": jid},
// then {"sent": body} after sending to PEER, then {"reply": body}; it takes the screenshot and
// exits 0. Lines on stdin: none. Any failure exits 1.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [hostMetaUrl, jid, password, peer, screenshot, boshUrl] = process.argv.slice(2);
const endpoint = boshUrl
  ? `discover_connection_methods: false, bosh_service_url: "${boshUrl}",`
  : "discover_connection_methods: true,";
const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "node_modules", "converse.js", "dist");
const domain = jid.split("@")[1];
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const PAGE = `<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/converse.min.css"><script type="module" src="/converse.min.js"></script>
</head><body><script type="module">
converse.plugins.add("xmppd-test", {
  initialize() {
    const { api } = this._converse;
    window.xmppdTest = { api, replies: [] };
    api.listen.on("connected", () => { window.xmppdTest.connected = api.user.jid(); });
    api.listen.on("message", (data) => {
      const body = data.attrs && data.attrs.body;
      if (body && data.attrs.from && data.attrs.from.startsWith("${peer}")) {
        window.xmppdTest.replies.push(body);
      }
    });
  },
});
converse.initialize({
  authentication: "login",
  auto_login: true,
  jid: "${jid}",
  password: "${password}",
  ${endpoint}
  auto_reconnect: false,
  view_mode: "fullscreen",
  whitelisted_plugins: ["xmppd-test"],
  loglevel: "info",
  play_sounds: false,
  show_controlbox_by_default: true,
});
</script></body></html>`;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The page's made-up public origin may reach the loopback server: no Local Network Access
    // prompt can be answered in a headless test.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights",
    ],
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") process.stderr.write(`console: ${m.text()}\n`);
    });
    page.on("pageerror", (e) => process.stderr.write(`page error: ${e}\n`));
    await page.route("https://app.test/**", async (route) => {
      const name = new URL(route.request().url()).pathname;
      if (name === "/" || name === "/index.html") {
        return route.fulfill({ contentType: "text/html", body: PAGE });
      }
      const file = path.join(dist, path.normalize(name).replace(/^(\.\.[/\\])+/, ""));
      try {
        const type = name.endsWith(".css") ? "text/css" : name.endsWith(".js") ? "text/javascript"
          : name.endsWith(".json") ? "application/json"
          : name.endsWith(".wasm") ? "application/wasm" : "application/octet-stream";
        return route.fulfill({ contentType: type, body: await readFile(file) });
      } catch {
        return route.fulfill({ status: 404, body: "" });
      }
    });
    // XEP-0156: the domain's host-meta is the test server's, fetched for real over HTTPS.
    await page.route(`https://${domain}/.well-known/host-meta`, async (route) => {
      const response = await route.fetch({ url: hostMetaUrl });
      say({ host_meta: response.status() });
      await route.fulfill({ response });
    });
    await page.goto("https://app.test/index.html");
    await page.waitForFunction(() => window.xmppdTest && window.xmppdTest.connected, null, {
      timeout: 30000,
    });
    const me = await page.evaluate(() => window.xmppdTest.connected);
    const [websocket, bosh] = await page.evaluate(() => {
      const { api } = window.xmppdTest;
      return [api.connection.isType("websocket"), api.connection.isType("bosh")];
    });
    const service = await page.evaluate(() => window.xmppdTest.api.settings.get("websocket_url"));
    say({ connected: me, websocket_url: service, transport: bosh ? "bosh" : websocket ? "websocket" : "?" });
    await page.evaluate(async (to) => {
      const chat = await window.xmppdTest.api.chats.open(to, {}, true);
      await chat.sendMessage({ body: "hello from converse" });
    }, peer);
    say({ sent: "hello from converse" });
    await page.waitForFunction(() => window.xmppdTest.replies.length > 0, null, {
      timeout: 30000,
    });
    const reply = await page.evaluate(() => window.xmppdTest.replies[0]);
    await page.waitForTimeout(500); // let the chat view render the reply for the screenshot
    await page.screenshot({ path: screenshot, fullPage: true });
    say({ reply });
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`error: ${err && (err.stack || err)}\n`);
    process.exit(1);
  },
);
