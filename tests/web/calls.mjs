// Web calls (webclient/js/calls.js) between two headless Chromium contexts with fake camera and
// microphone, driven by tests/web/test_webclient_calls.py. Usage: node calls.mjs SCENARIO JSON_ARGS
// Prints one JSON line of findings and exits 0; any failure exits 1.
import { readFileSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const shot = (page, name) => page.screenshot({ path: path.join(args.artifacts, `${name}.png`) });
const callState = (page) => page.evaluate(() => window.xmppdCalls.state());

async function open(browser, viewport = { width: 1200, height: 800 }) {
  const context = await browser.newContext({ viewport, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

async function audit(page) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
  }));
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
}

async function signIn(page, user, password) {
  await page.goto(`${args.base}/`);
  await page.getByLabel("Address or user name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Password").press("Enter");
  await page.getByRole("button", { name: "New chat" }).waitFor();
  await page.waitForFunction(() => window.xmppdClient.connection().full);
}

/** Open the 1:1 conversation with `jid` through the New chat dialog. */
async function openChat(page, jid) {
  await page.getByRole("button", { name: "New chat", exact: true }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Address").fill(jid);
  await dialog.getByRole("button", { name: "Start chat" }).click();
  await dialog.waitFor({ state: "detached" });
}

const until = (page, fn, arg, timeout = 30000) => page.waitForFunction(fn, arg, { timeout });
const idle = (page) => until(page, () => window.xmppdCalls.state().phase === "idle");

const scenarios = {
  // Alice video-calls Bob (phone width), Bob accepts; both peer connections reach "connected"
  // through the TURN relay only; mute and camera by keyboard; Alice hangs up.
  async video(browser) {
    const out = {};
    const alice = await open(browser);
    const bob = await open(browser, { width: 390, height: 780 });
    await signIn(alice, "alice", args.passwords.alice);
    const bobTab = await open(browser); // Bob's second tab rings too
    await signIn(bob, "bob", args.passwords.bob);
    await signIn(bobTab, "bob", args.passwords.bob);
    await openChat(alice, "bob@localhost");
    await alice.getByRole("button", { name: "Video call with bob" }).click();
    const ring = bob.getByRole("dialog", { name: "Incoming video call" });
    await ring.waitFor();
    await bobTab.getByRole("dialog", { name: "Incoming video call" }).waitFor();
    out.ring_text = await ring.locator("[aria-live]").textContent();
    out.ring_live = await ring.locator("[aria-live]").getAttribute("aria-live");
    out.ring_focus = await bob.evaluate(() => document.activeElement.getAttribute("aria-label"));
    out.alice_status = await alice.locator(".call-status").textContent();
    out.ring_serious = await audit(bob);
    await shot(bob, "call-incoming");
    await bob.keyboard.press("Enter"); // the focused Accept button
    await bobTab.getByRole("dialog", { name: "Incoming video call" }).waitFor({ state: "detached" });
    await until(bobTab, () => document.querySelector("#announcer").textContent.startsWith("Answered"));
    out.other_tab = await bobTab.locator("#announcer").textContent();
    out.other_tab_state = await callState(bobTab);
    const connected = () => window.xmppdCalls.state().connection === "connected"
      && window.xmppdCalls.state().phase === "active";
    await until(alice, connected);
    await until(bob, connected);
    out.alice = await callState(alice);
    out.bob = await callState(bob);
    await until(alice, () => window.xmppdCalls.path().then((p) => p !== null), null);
    out.alice_path = await alice.evaluate(() => window.xmppdCalls.path());
    out.bob_path = await bob.evaluate(() => window.xmppdCalls.path());
    // Media arrives: the remote video has frames on both sides.
    for (const page of [alice, bob]) {
      await until(page, () => document.querySelector("#call-remote").videoWidth > 0);
    }
    await until(alice, () => document.querySelector(".call-time").textContent >= "00:01"); // the clock ticks
    out.duration = await alice.locator(".call-time").textContent();
    await shot(alice, "call");
    await shot(bob, "call-phone");
    out.call_serious = await audit(alice);
    out.phone_overflow = await bob.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    // Keyboard: mute the microphone and turn the camera off, then back.
    await alice.getByRole("button", { name: "Mute" }).focus();
    await alice.keyboard.press("Enter");
    out.muted = await alice.getByRole("button", { name: "Unmute" }).getAttribute("aria-pressed");
    await alice.keyboard.press("Tab");
    await alice.keyboard.press("Space");
    out.camera_off = await alice.getByRole("button", { name: "Camera on" }).getAttribute("aria-pressed");
    out.tracks = await alice.evaluate(() => [...document.querySelector("#call-local").srcObject.getTracks()]
      .map((t) => `${t.kind}:${t.enabled}`).sort());
    await alice.getByRole("button", { name: "Hang up" }).click();
    out.alice_end = await alice.locator(".call-status").textContent();
    await until(bob, () => document.querySelector(".call-status") && document.querySelector(".call-status").textContent === "Call ended");
    out.bob_end = await bob.locator(".call-status").textContent();
    await idle(alice);
    await idle(bob);
    await bob.waitForTimeout(4500);
    out.views_left = await bob.evaluate(() => document.querySelectorAll(".call-view").length);
    out.errors = [...alice.errors, ...bob.errors, ...bobTab.errors];
    return out;
  },

  // Alice audio-calls Bob; Carol's call while Bob is ringing gets "Busy"; Bob declines Alice's
  // ("Declined"); then Bob does not answer Carol ("No answer", his dialog closes, missed call).
  async decline(browser) {
    const out = {};
    const [alice, bob, carol] = [await open(browser), await open(browser), await open(browser)];
    await signIn(alice, "alice", args.passwords.alice);
    await signIn(bob, "bob", args.passwords.bob);
    await signIn(carol, "carol", args.passwords.carol);
    await openChat(alice, "bob@localhost");
    await openChat(carol, "bob@localhost");
    await alice.getByRole("button", { name: "Audio call with bob" }).click();
    await bob.getByRole("dialog", { name: "Incoming audio call" }).waitFor();
    await carol.getByRole("button", { name: "Video call with bob" }).click();
    await until(carol, () => document.querySelector(".call-status").textContent === "Busy");
    out.carol_busy = await carol.locator(".call-status").textContent();
    await bob.getByRole("button", { name: "Decline audio call from alice" }).click();
    await until(alice, () => document.querySelector(".call-status").textContent === "Declined");
    out.alice_status = await alice.locator(".call-status").textContent();
    out.alice = await callState(alice);
    out.bob = await callState(bob);
    out.dialogs = await bob.evaluate(() => document.querySelectorAll("dialog").length);
    // No answer: Carol rings for 3 s only.
    await idle(carol);
    await carol.evaluate(() => { window.xmppdCalls.ringSeconds = 3; });
    await carol.locator(".call-view").waitFor({ state: "detached" }); // the "Busy" notice goes
    await carol.getByRole("button", { name: "Video call with bob" }).click();
    await bob.getByRole("dialog", { name: "Incoming video call" }).waitFor();
    await until(carol, () => document.querySelector(".call-status").textContent === "No answer");
    out.carol_no_answer = await carol.locator(".call-status").textContent();
    await bob.getByRole("dialog", { name: "Incoming video call" }).waitFor({ state: "detached" });
    await until(bob, () => document.querySelector("#announcer").textContent.startsWith("Missed"));
    out.bob_missed = await bob.locator("#announcer").textContent();
    out.bob_after = await callState(bob);
    out.errors = [...alice.errors, ...bob.errors, ...carol.errors];
    return out;
  },
};

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
  });
  try {
    say(await scenarios[scenario](browser));
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`error: ${err && (err.stack || err)}\n`);
  process.exit(1);
});
