// One headless Debian Chromium page driven by JSON commands on stdin, one per line, for the
// widget and Roundcube tests (tests/web/test_widget.py). Each command prints one JSON line
// {tag, ok: result} or {tag, error}. Playwright's CSS selectors pierce open shadow roots.
// Usage: node browser_driver.mjs ARTIFACTS_DIR
import path from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";

const artifacts = process.argv[2];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium" });
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
const page = await context.newPage();
const errors = [];
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
page.on("pageerror", (e) => errors.push(String(e)));
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// `frame`: run in the named frame (e.g. Roundcube's message preview) instead of the page.
const scope = (c) => (c.frame ? page.frameLocator(`iframe[name='${c.frame}']`) : page);
const where = (c) => (c.frame ? page.frame({ name: c.frame }) : page);

const ops = {
  goto: (c) => page.goto(c.url).then((r) => r && r.status()),
  wait: (c) => where(c).waitForFunction(c.expr, c.arg ?? null, { timeout: c.ms || 15000 }).then((h) => h.jsonValue()),
  visible: (c) => scope(c).locator(c.selector).first().waitFor({ timeout: c.ms || 15000 }).then(() => true),
  click: (c) => scope(c).locator(c.selector).first().click({ timeout: 15000 }),
  fill: (c) => scope(c).locator(c.selector).first().fill(c.text, { timeout: 15000 }),
  type: (c) => scope(c).locator(c.selector).first().pressSequentially(c.text, { delay: 30 }),
  press: (c) => scope(c).locator(c.selector).first().press(c.key),
  select: (c) => scope(c).locator(c.selector).first().selectOption(c.value),
  eval: (c) => where(c).evaluate(c.expr),
  text: (c) => scope(c).locator(c.selector).first().innerText({ timeout: 15000 }),
  shot: (c) => page.screenshot({ path: path.join(artifacts, `${c.name}.png`) }).then(() => true),
  errors: () => errors,
  quit: async () => { await browser.close(); process.exit(0); },
};

for await (const line of readline.createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  try {
    say({ tag: command.tag, ok: (await ops[command.op](command)) ?? null });
  } catch (err) {
    say({ tag: command.tag, error: String(err).slice(0, 2000), errors });
  }
}
await browser.close();
