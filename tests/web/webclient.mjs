// The web client (webclient/, served at /) in headless Debian Chromium, driven by
// tests/web/test_webclient.py. Usage: node webclient.mjs SCENARIO JSON_ARGS
// Prints one JSON line with the scenario's findings and exits 0; any failure exits 1.
// Screenshots go to args.artifacts.
import { readFileSync } from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const shot = (page, name) => page.screenshot({ path: path.join(args.artifacts, `${name}.png`) });

async function open(browser, viewport = { width: 1200, height: 800 }) {
  const context = await browser.newContext({ viewport, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

/** axe-core on the page: violations of impact serious or critical, by rule id. */
async function audit(page) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
  }));
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
}

/** Tab through the page; which visible controls were never focused (by a description). */
async function unreachable(page, presses = 80) {
  await page.evaluate(() => {
    window.__focused = new Set();
    document.addEventListener("focusin", (e) => window.__focused.add(e.target), true);
    document.activeElement && document.activeElement.blur();
  });
  for (let i = 0; i < presses; i++) await page.keyboard.press("Tab");
  return page.evaluate(() => {
    const controls = [...document.querySelectorAll("button, input, select, textarea, a[href], [tabindex='0']")]
      .filter((el) => !el.disabled && el.offsetParent !== null);
    return controls.filter((el) => !window.__focused.has(el))
      .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} ${el.getAttribute("aria-label") || el.textContent}`);
  });
}

/** Sign in with the host-app token and join the room through the dialog, by keyboard only. */
async function joinByKeyboard(page, base, token, room, nick) {
  await page.goto(`${base}/#token=${token}`);
  try {
    await page.waitForFunction(() => window.xmppdClient && window.xmppdClient.state().connected,
      null, { timeout: 15000 });
  } catch (err) {
    throw new Error(`not connected: ${page.errors.join(" | ")}`);
  }
  const button = page.getByRole("button", { name: "Group chat" });
  await button.focus();
  await page.keyboard.press("Enter");
  await page.keyboard.type(room);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Control+A");
  await page.keyboard.type(nick);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: room.split("@")[0] }).waitFor();
}

async function send(page, text) {
  const input = page.getByRole("textbox", { name: /^Message / });
  await input.focus();
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}

async function signIn(page, base, user, password) {
  if (!page.url().startsWith(base)) await page.goto(`${base}/`);
  await page.getByLabel("Address or user name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Password").press("Enter");
}

/** Operate a control by keyboard: focus it, press Enter. */
async function press(page, locator) {
  await locator.focus();
  await page.keyboard.press("Enter");
}

async function dialogForm(page, button, fields, submit) {
  await page.getByRole("button", { name: button, exact: true }).click();
  const dialog = page.getByRole("dialog");
  for (const [label, value] of Object.entries(fields)) await dialog.getByLabel(label).fill(value);
  await dialog.getByRole("button", { name: submit }).click();
  await dialog.waitFor({ state: "detached" });
}

/** A real PNG (RGB, no interlace): a sunset-ish gradient, so the preview is worth a look. */
function png(width, height) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      const sun = Math.max(0, 1 - Math.hypot(x - width * 0.65, y - height * 0.55) / (height * 0.35));
      const sky = y / height;
      raw[row + 1 + x * 3] = Math.min(255, 40 + 200 * sky + 60 * sun);
      raw[row + 2 + x * 3] = Math.min(255, 60 + 90 * sky + 150 * sun);
      raw[row + 3 + x * 3] = Math.min(255, 140 - 90 * sky + 40 * sun);
    }
  }
  const chunk = (type, data) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([head, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header), chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

/** Pick files through the attach button's file chooser, as a user does. */
async function attach(page, files) {
  const [chooser] = await Promise.all([page.waitForEvent("filechooser"),
    page.getByRole("button", { name: "Attach a file" }).click()]);
  await chooser.setFiles(files);
}

const scenarios = {
  // A host-app token naming rooms: they are joined at sign-in, with the token's name as nick.
  async token_rooms(browser) {
    const page = await open(browser);
    await page.goto(`${args.base}/#token=${args.token}`);
    await page.getByRole("button", { name: new RegExp(`^${args.room.split("@")[0]}`) }).click();
    await page.getByRole("button", { name: "People" }).click();
    await page.locator("#occupants .item-name").first().waitFor();
    return { occupants: await page.locator("#occupants .item-name").allTextContents(), errors: page.errors };
  },

  async load(browser) {
    const page = await open(browser);
    const response = await page.goto(`${args.base}/`);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    const out = {
      status: response.status(), csp: response.headers()["content-security-policy"] || "",
      title: await page.title(), serious: await audit(page), unreachable: await unreachable(page, 12),
    };
    await shot(page, "login");
    // A wrong password: the form says so, nothing is stored.
    await page.getByLabel("Address or user name").fill("nobody");
    await page.getByLabel("Password").fill("wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    out.login_error = await page.getByRole("alert").first().textContent({ timeout: 5000 });
    await page.waitForFunction(() => document.querySelector("[role=alert]").textContent.length > 0);
    out.login_error = await page.getByRole("alert").first().textContent();
    out.stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    out.errors = page.errors.filter((e) => !e.includes("Failed to load resource"));
    return out;
  },

  async chat(browser) {
    const { base, room, tokens } = args;
    const ann = await open(browser);
    const bob = await open(browser);
    await joinByKeyboard(ann, base, tokens.ann, room, "Ann");
    await joinByKeyboard(bob, base, tokens.bob, room, "Bob");
    await ann.getByText(`${args.here} here`).first().waitFor();
    await send(ann, "Hello Bob, from the web client");
    await bob.getByText("Hello Bob, from the web client").waitFor();
    await send(bob, "Hi Ann!");
    await ann.getByText("Hi Ann!").waitFor();
    if (args.xmpp_line) await ann.getByText(args.xmpp_line).waitFor();
    const out = { fragment_gone: !ann.url().includes("token="), title: await ann.title() };
    if (args.xmpp_line) {
      // The XMPP owner made Ann an admin: as a moderator she removes its line, by keyboard.
      const remove = ann.getByRole("button", { name: `Delete message: ${args.xmpp_line}` });
      await remove.focus();
      await ann.keyboard.press("Enter");
      await bob.getByText("Removed by Ann.").waitFor();
      out.moderated = await ann.getByText("Removed by Ann.").count();
    }
    // People panel, then the audit and keyboard pass over the full app view.
    await ann.getByRole("button", { name: "People" }).click();
    out.occupants = await ann.locator("#occupants .item-name").allTextContents();
    await shot(ann, "room");
    out.serious = await audit(ann);
    out.unreachable = await unreachable(ann);
    // A reload keeps the session (the token is in sessionStorage) and rejoins the room.
    await bob.reload();
    await bob.waitForFunction(() => window.xmppdClient && window.xmppdClient.state().connected);
    await bob.getByRole("button", { name: new RegExp(`^${room.split("@")[0]}`) }).first().waitFor();
    out.reloaded = await bob.evaluate(() => window.xmppdClient.state().me);
    // Unread badge and title count while Bob looks elsewhere.
    await bob.evaluate(() => { window.xmppdClient.state().active = null; });
    await send(ann, "are you there?");
    await bob.waitForFunction(() => document.title.startsWith("(1)"));
    out.bob_title = await bob.title();
    const roomButton = bob.getByRole("button", { name: new RegExp(`^${room.split("@")[0]}`) }).first();
    out.bob_badge = await roomButton.locator(".badge").textContent();
    await shot(bob, "unread");
    // Opening the room reads it: the badge and the title count go, on the server too.
    await roomButton.focus();
    await bob.keyboard.press("Enter");
    await bob.waitForFunction(() => !document.title.startsWith("("));
    out.bob_badge_after = await roomButton.locator(".badge").count();
    out.server_unread = await bob.evaluate(async () =>
      (await window.xmppdClient.connection().user.push("unread", {})).response.unread);
    // Phone width: the sidebar collapses to a list; opening a room shows it with a back button.
    const phone = await open(browser, { width: 390, height: 780 });
    await joinByKeyboard(phone, base, tokens.ann, room, "AnnPhone");
    out.phone_composer = await phone.getByRole("textbox", { name: /^Message / }).isVisible();
    out.phone_overflow_room = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await shot(phone, "phone-room");
    await phone.getByRole("button", { name: "Back to conversations" }).click();
    await phone.getByRole("button", { name: new RegExp(`^${room.split("@")[0]}`) }).first().waitFor();
    out.phone_overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await shot(phone, "phone-list");
    out.phone_serious = await audit(phone);
    // Sign out: the stored token is gone and the sign-in form is back.
    await ann.getByRole("button", { name: "Sign out" }).click();
    await ann.getByRole("button", { name: "Sign in" }).waitFor();
    out.after_logout = await ann.evaluate(() => [sessionStorage.getItem("xmppd.session"), localStorage.getItem("xmppd.session")]);
    out.errors = [...ann.errors, ...bob.errors, ...phone.errors];
    return out;
  },

  // The whole chat protocol (docs/channels.md): password login, contacts and presence, status,
  // 1:1 chat with unread, read markers, typing, corrections, retractions, history; rooms
  // created, invitations, moderation; sign-out revokes the token.
  async full(browser) {
    const { base } = args;
    const out = {};
    const alice = await open(browser);
    const bob = await open(browser);
    await signIn(alice, base, "alice", "not-the-password");
    out.wrong_password = await alice.getByRole("alert").filter({ hasText: /./ }).textContent();
    await signIn(alice, base, "alice", args.passwords.alice);
    await signIn(bob, base, "bob", args.passwords.bob);
    for (const page of [alice, bob]) await page.getByRole("button", { name: "New chat" }).waitFor();
    out.stored = await alice.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
    // Contacts: Alice adds Bob, Bob accepts, Alice sees him online, then his status.
    await dialogForm(alice, "New chat", { Address: "bob@localhost" }, "Start chat");
    await bob.getByRole("button", { name: "Accept alice@localhost" }).click();
    await alice.getByRole("button", { name: /^bob\b.*Available/ }).waitFor();
    await bob.getByRole("button", { name: "Set your status" }).click();
    await bob.getByLabel("Availability").selectOption("away");
    await bob.getByLabel("Status message").fill("In a meeting");
    await bob.getByRole("button", { name: "Set status" }).click();
    await alice.getByRole("button", { name: /^bob\b.*Away/ }).waitFor();
    await alice.locator(".conv-header").getByText("Away · In a meeting").waitFor();
    // 1:1: unread on Bob's side until he opens the chat; Alice sees it read.
    await send(alice, "Hi Bob, lunch?");
    await bob.waitForFunction(() => document.title.startsWith("(1)"));
    out.bob_title = await bob.title();
    await shot(bob, "contacts-unread");
    await bob.getByRole("button", { name: /^alice/ }).click();
    await bob.getByText("Hi Bob, lunch?").waitFor();
    await alice.locator(".msg.own .read").getByText("Read").waitFor();
    // Typing, then the answer.
    await bob.getByRole("textbox", { name: /^Message / }).pressSequentially("Sure");
    await alice.getByText("bob is typing…").waitFor();
    await bob.keyboard.press("Enter");
    await alice.getByText("Sure").waitFor();
    // Alice corrects her message, then deletes another one.
    await alice.getByRole("button", { name: "Edit message: Hi Bob, lunch?" }).click();
    await alice.keyboard.press("Control+A");
    await alice.keyboard.type("Hi Bob, lunch at noon?");
    await alice.keyboard.press("Enter");
    await bob.getByText("Hi Bob, lunch at noon?").waitFor();
    out.edited = await bob.locator(".msg", { hasText: "lunch at noon" }).locator(".edited").count();
    await send(alice, "wrong window");
    await bob.getByText("wrong window").waitFor();
    await alice.getByRole("button", { name: "Delete message: wrong window" }).click();
    await bob.getByText("This message was deleted.").waitFor();
    await shot(alice, "chat");
    out.serious = await audit(alice);
    out.unreachable = await unreachable(alice);
    // History: after a reload Bob reads the conversation from the archive.
    await bob.reload();
    await bob.getByRole("button", { name: /^alice/ }).click();
    await bob.getByText("Hi Bob, lunch at noon?").waitFor();
    // Rooms, by keyboard only: Alice creates a members-only one and invites Bob, who joins
    // from the invitation (in a members-only room the invitation makes him a member).
    await press(alice, alice.getByRole("button", { name: "Group chat", exact: true }));
    await alice.keyboard.type("Planning"); // the dialog focuses its first field
    await alice.keyboard.press("Tab");
    await alice.keyboard.press("Tab");
    await alice.keyboard.press("Space"); // Members only
    out.members_only = await alice.getByRole("dialog").getByRole("checkbox").isChecked();
    await alice.keyboard.press("Shift+Tab");
    await alice.keyboard.press("Enter");
    await alice.getByRole("heading", { name: /^Planning|^planning/ }).waitFor();
    await press(alice, alice.getByRole("button", { name: "Invite" }));
    await alice.keyboard.type("bob@localhost");
    await alice.keyboard.press("Enter");
    await bob.getByRole("dialog").getByRole("button", { name: "Join" }).waitFor();
    await bob.keyboard.press("Enter"); // Join has the focus
    await bob.getByRole("heading", { name: /^Planning|^planning/ }).waitFor();
    await send(alice, "Agenda at 10:00");
    await bob.getByText("Agenda at 10:00").waitFor();
    await alice.getByRole("button", { name: "Edit message: Agenda at 10:00" }).click();
    await alice.keyboard.press("Control+A");
    await alice.keyboard.type("Agenda at 11:00");
    await alice.keyboard.press("Enter");
    await bob.getByText("Agenda at 11:00").waitFor();
    out.room_edited = await bob.getByText("Agenda at 10:00").count();
    await send(bob, "an off-topic line");
    await alice.getByText("an off-topic line").waitFor();
    await alice.getByRole("button", { name: "Delete message: an off-topic line" }).click();
    await bob.getByText("Removed by alice.").waitFor(); // a moderator's retraction says who
    await alice.getByText("Removed by alice.").waitFor();
    await press(alice, alice.getByRole("button", { name: "People" }));
    await alice.locator("#occupants .occupant").nth(1).waitFor();
    out.roles = await alice.locator("#occupants .occupant").evaluateAll((rows) =>
      rows.map((r) => `${r.querySelector(".item-name").textContent}:${r.querySelector(".item-sub").textContent}`));
    await shot(alice, "room-moderator");
    out.room_serious = await audit(alice);
    out.room_unreachable = await unreachable(alice);
    await press(alice, alice.getByRole("button", { name: "Remove bob from the room" }));
    await bob.getByText("You were removed from the room.").waitFor();
    // Alice leaves: the room goes from her list.
    await press(alice, alice.getByRole("button", { name: "Leave" }));
    await alice.getByText("No group chats yet.").waitFor();
    // Sign-out revokes the token: it opens no socket any more.
    const token = await alice.evaluate(() => JSON.parse(sessionStorage.getItem("xmppd.session")).token);
    await alice.getByRole("button", { name: "Sign out" }).click();
    await alice.getByRole("button", { name: "Sign in" }).waitFor();
    await alice.waitForTimeout(500);
    out.revoked = await alice.evaluate((t) => new Promise((resolve) => {
      const ws = new WebSocket(`${location.origin.replace("http", "ws")}/socket/websocket?vsn=2.0.0&token=${t}`);
      ws.onopen = () => { ws.close(); resolve(false); };
      ws.onerror = () => resolve(true);
    }), token);
    // The refused password (401) and the revoked token probe are logged by Chromium itself.
    out.errors = [...alice.errors, ...bob.errors].filter((e) => !e.includes("/socket/websocket") && !e.includes("status of 401"));
    return out;
  },
};

// Files: an upload shows its progress and can be cancelled; an image shared by file chooser is
// previewed on the other side (and the file fetched back), a PDF dropped on the conversation
// arrives as a download link, a file over the limit is refused in words.
scenarios.files = async (browser) => {
  const { base, passwords } = args;
  const out = {};
  const fay = await open(browser);
  const gus = await open(browser);
  await signIn(fay, base, "fay", passwords.fay);
  await signIn(gus, base, "gus", passwords.gus);
  for (const page of [fay, gus]) await page.getByRole("button", { name: "New chat" }).waitFor();
  await dialogForm(fay, "New chat", { Address: "gus@localhost" }, "Start chat");
  await send(fay, "Photos from the trip");
  await gus.getByRole("button", { name: "Accept fay@localhost" }).click();
  await gus.getByRole("button", { name: /^fay/ }).click();
  await gus.getByText("Photos from the trip").waitFor();
  // A slow upload (throttled to 64 KB/s): the progress bar moves, then the user cancels it.
  const cdp = await fay.context().newCDPSession(fay);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions",
    { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 64 * 1024 });
  await attach(fay, { name: "holiday.mov", mimeType: "video/quicktime", buffer: Buffer.alloc(1200000, 7) });
  const bar = fay.getByRole("progressbar", { name: "Uploading holiday.mov" });
  await bar.waitFor();
  await fay.waitForFunction(() => Number(document.getElementById("upload-progress").value) > 0, null, { timeout: 20000 });
  out.progress = await fay.evaluate(() => {
    const el = document.getElementById("upload-progress");
    return { value: Number(el.value), max: Number(el.max), label: document.getElementById("upload-label").textContent };
  });
  out.progress_serious = await audit(fay);
  await shot(fay, "upload-progress");
  await fay.getByRole("button", { name: "Cancel upload" }).click();
  await bar.waitFor({ state: "detached" });
  out.focus_after_cancel = await fay.evaluate(() => document.activeElement.getAttribute("aria-label"));
  await cdp.send("Network.emulateNetworkConditions",
    { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  // An image through the file chooser: the bar shows while it goes, then the preview.
  await fay.evaluate(() => {
    window.__sawProgress = false;
    new MutationObserver(() => { if (document.getElementById("upload-progress")) window.__sawProgress = true; })
      .observe(document.body, { childList: true, subtree: true });
  });
  const image = png(480, 320);
  await attach(fay, { name: "sunset.png", mimeType: "image/png", buffer: image });
  await fay.locator(".msg.own img[alt='sunset.png']").waitFor();
  out.saw_progress = await fay.evaluate(() => window.__sawProgress);
  const preview = gus.getByRole("button", { name: "Open image sunset.png" });
  await preview.waitFor();
  await gus.waitForFunction(() => {
    const img = document.querySelector(".msg img[alt='sunset.png']");
    return img && img.complete && img.naturalWidth > 0;
  });
  out.preview = await gus.evaluate(async () => {
    const img = document.querySelector(".msg img[alt='sunset.png']");
    const fetched = await fetch(img.src);
    return { width: img.naturalWidth, bytes: (await fetched.arrayBuffer()).byteLength,
      type: fetched.headers.get("content-type"), url: img.src };
  });
  out.image_bytes = image.length;
  await preview.click();
  const box = gus.getByRole("dialog", { name: "sunset.png" });
  await box.waitFor();
  out.full_width = await box.locator("img").evaluate((img) => img.naturalWidth);
  await gus.keyboard.press("Escape");
  await box.waitFor({ state: "detached" });
  out.focus_after_lightbox = await gus.evaluate(() => document.activeElement.getAttribute("aria-label"));
  // Gus drops a PDF on the conversation: Fay gets a link with its name and size.
  const pdf = Buffer.concat([Buffer.from("%PDF-1.4\n"), Buffer.alloc(30000, 32)]);
  const transfer = await gus.evaluateHandle((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], "minutes.pdf", { type: "application/pdf" }));
    return dt;
  }, [...pdf]);
  await gus.dispatchEvent(".messages", "dragover", { dataTransfer: transfer });
  out.drop_highlight = await gus.locator(".conversation.drop-target").count();
  await gus.dispatchEvent(".messages", "drop", { dataTransfer: transfer });
  const link = fay.getByRole("link", { name: /minutes\.pdf/ });
  await link.waitFor();
  out.link = { text: await link.textContent(), href: await link.getAttribute("href") };
  await send(gus, "Lovely! And here are the minutes.");
  await gus.getByText("Lovely! And here are the minutes.").waitFor();
  await gus.getByRole("link", { name: /minutes\.pdf/ }).waitFor();
  await gus.evaluate(() => document.activeElement.blur());
  await shot(gus, "files");
  out.serious = await audit(gus);
  out.unreachable = await unreachable(gus);
  // Over the server's limit: refused in words, nothing sent.
  await attach(fay, { name: "huge.zip", mimeType: "application/zip", buffer: Buffer.alloc(1600000, 1) });
  const alert = fay.locator("#upload-error");
  await alert.waitFor();
  out.too_big = await alert.textContent();
  out.error_serious = await audit(fay);
  await fay.getByRole("button", { name: "Dismiss" }).click();
  await alert.waitFor({ state: "detached" });
  out.cancelled_arrived = await gus.getByText("holiday.mov").count();
  // From the archive: after a reload the preview and the link come back with the history.
  await gus.reload();
  await gus.getByRole("button", { name: /^fay/ }).click();
  await gus.getByRole("button", { name: "Open image sunset.png" }).waitFor();
  out.history_link = await gus.getByRole("link", { name: /minutes\.pdf/ }).textContent();
  // In a group chat: Fay drops an image, Gus (who joined from the invitation) sees it.
  await dialogForm(fay, "Group chat", { "Name, or the address of a room to join": "Trip" }, "Create or join");
  await fay.getByRole("heading", { name: /^Trip|^trip/ }).waitFor();
  await fay.getByRole("button", { name: "Invite" }).click();
  await fay.getByRole("dialog").getByLabel("Colleague's address").fill("gus@localhost");
  await fay.getByRole("dialog").getByRole("button", { name: "Invite" }).click();
  await gus.getByRole("dialog").getByRole("button", { name: "Join" }).click();
  await gus.getByRole("heading", { name: /^Trip|^trip/ }).waitFor();
  const roomImage = await fay.evaluateHandle((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], "beach.png", { type: "image/png" }));
    return dt;
  }, [...png(300, 200)]);
  await fay.dispatchEvent(".messages", "dragover", { dataTransfer: roomImage });
  await fay.dispatchEvent(".messages", "drop", { dataTransfer: roomImage });
  await gus.getByRole("button", { name: "Open image beach.png" }).waitFor();
  out.room_preview = await gus.locator(".msg", { hasText: "" }).filter({ has: gus.locator("img[alt='beach.png']") })
    .locator(".who").textContent();
  out.errors = [...fay.errors, ...gus.errors];
  return out;
};

async function main() {
  // Playwright gives every launch a fresh profile (--user-data-dir) of its own and refuses the
  // flag in args.
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
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
