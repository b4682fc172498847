// Sharing files: the attach button beside Send and drag and drop onto the conversation; the
// upload (a slot from the server, then a PUT with visible progress, cancellable); shared files
// shown in messages: images as previews (click for the full image), others as a download link
// with name and size. Only files on this server's upload service are previewed: they are what
// the page's CSP lets it load, and showing a stranger's image would tell them we looked.
import { announce, h } from "./dom.js";
import { hooks } from "./hooks.js";

const PREVIEW = /^image\/(png|jpeg|gif|webp|avif|bmp)$/;
const MIME = /^[\w!#$&^.+-]{1,64}\/[\w!#$&^.+-]{1,64}$/;
const uploads = new Map(); // conversation key -> {name, loaded, total, xhr, error}
let current = null; // {conv, conn} of the conversation on screen

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let n = bytes / 1024;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[unit]}`;
}

function webUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// ---- the composer: attach button, progress, errors ---------------------------------------

function composerTools(conv, conn) {
  if (!conn || !conn.upload) return null; // the server keeps no files (or speaks the old protocol)
  current = { conv, conn };
  const entry = uploads.get(conv.key);
  const input = h("input", { type: "file", id: "file-input", hidden: true, multiple: true,
    onchange: (e) => { shareAll(conv, conn, [...e.target.files]); e.target.value = ""; } });
  return h("div", { class: "file-tools", id: "file-tools" },
    input,
    h("button", { type: "button", class: "icon-button attach", id: "attach-button",
      "aria-label": "Attach a file", title: "Attach a file (or drop it on the conversation)",
      onclick: () => input.click() }, h("img", { src: "attach.svg", alt: "", width: 22, height: 22 })),
    entry ? statusView(conv, entry) : null);
}

function statusView(conv, entry) {
  if (entry.error) {
    return h("div", { class: "upload-status" },
      h("p", { class: "form-error", role: "alert", id: "upload-error" }, entry.error),
      h("button", { type: "button", class: "link", id: "upload-dismiss",
        onclick: () => { uploads.delete(conv.key); refresh(); focusAttach(); } }, "Dismiss"));
  }
  const percent = entry.total ? Math.floor((100 * entry.loaded) / entry.total) : 0;
  return h("div", { class: "upload-status" },
    h("label", { for: "upload-progress", id: "upload-label" }, `Uploading ${entry.name}`),
    h("progress", { id: "upload-progress", max: entry.total || 1, value: entry.loaded }, `${percent}%`),
    h("span", { class: "upload-percent", id: "upload-percent", "aria-hidden": "true" }, `${percent}%`),
    h("button", { type: "button", class: "secondary", id: "upload-cancel",
      onclick: () => cancel(conv.key) }, "Cancel upload"));
}

/** Redraw the composer's file tools in place (the app re-renders them too, from `uploads`). */
function refresh() {
  const old = document.getElementById("file-tools");
  if (!old || !current) return;
  const focused = document.activeElement && old.contains(document.activeElement) ? document.activeElement.id : null;
  const fresh = composerTools(current.conv, current.conn);
  if (fresh) old.replaceWith(fresh); else old.remove();
  const again = focused && document.getElementById(focused);
  if (again) again.focus(); else if (focused) focusAttach();
}

function focusAttach() {
  const button = document.getElementById("attach-button");
  if (button) button.focus();
}

function progressed(key, loaded) {
  const entry = uploads.get(key);
  if (!entry) return;
  entry.loaded = loaded;
  const bar = document.getElementById("upload-progress");
  if (!bar || !current || current.conv.key !== key) return;
  bar.value = loaded;
  const percent = `${Math.floor((100 * loaded) / (entry.total || 1))}%`;
  bar.textContent = percent;
  document.getElementById("upload-percent").textContent = percent;
}

// ---- uploading ----------------------------------------------------------------------------

async function shareAll(conv, conn, files) {
  for (const file of files) {
    if (!(await share(conv, conn, file))) break;
  }
}

function refusal(name, response) {
  const r = response || {};
  if (r.reason === "not-acceptable" && r.max_file_size) {
    return `“${name}” is too big to share: files can be up to ${formatSize(r.max_file_size)}.`;
  }
  if (r.reason === "resource-constraint") {
    const when = r.retry ? ` Try again after ${new Date(r.retry * 1000).toLocaleString()}.` : "";
    return `“${name}” was not shared: you have used up your file storage (${r.text || "quota reached"}).${when}`;
  }
  if (r.reason === "service-unavailable") return "File sharing is not available on this server right now.";
  return `“${name}” was not shared: ${r.text || r.reason || "the server refused it"}.`;
}

function fail(key, text) {
  const entry = uploads.get(key) || {};
  uploads.set(key, { ...entry, xhr: null, error: text });
  refresh();
  announce(text);
  return false;
}

/** Upload one file to a slot and share its URL; resolves true when it was shared. */
async function share(conv, conn, file) {
  const key = conv.key;
  const pending = uploads.get(key);
  if (pending && !pending.error) {
    announce("Wait for the current upload to finish, or cancel it.");
    return false;
  }
  if (!file.size) return fail(key, `“${file.name}” is empty.`);
  const entry = { name: file.name, loaded: 0, total: file.size, xhr: null, error: "" };
  uploads.set(key, entry);
  refresh();
  announce(`Uploading ${file.name}`);
  const type = MIME.test(file.type) ? file.type : "";
  const reply = await conn.uploadSlot(file.name, file.size, type);
  if (uploads.get(key) !== entry) return false; // cancelled meanwhile
  if (reply.status !== "ok") return fail(key, refusal(file.name, reply.response));
  const slot = reply.response;
  const status = await put(entry, slot, file, key);
  if (status === "cancelled") return false;
  if (status !== "ok") return fail(key, status);
  const shared = await conn.shareFile(key, slot.get);
  if (shared.status !== "ok") return fail(key, `“${file.name}” was uploaded but not sent (${(shared.response && shared.response.reason) || shared.status}).`);
  uploads.delete(key);
  refresh();
  announce(`Shared ${file.name}`);
  return true;
}

function put(entry, slot, file, key) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    entry.xhr = xhr;
    xhr.open("PUT", slot.put);
    for (const [name, value] of Object.entries(slot.headers || {})) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => progressed(key, e.loaded);
    xhr.onload = () => {
      if (xhr.status === 200 || xhr.status === 201) resolve("ok");
      else resolve(`“${file.name}” could not be uploaded (${xhr.status}${xhr.responseText ? `: ${xhr.responseText}` : ""}).`);
    };
    xhr.onerror = () => resolve(`“${file.name}” could not be uploaded: the connection to the server broke.`);
    xhr.onabort = () => resolve("cancelled");
    xhr.send(file);
  });
}

function cancel(key) {
  const entry = uploads.get(key);
  uploads.delete(key);
  if (entry && entry.xhr) entry.xhr.abort();
  refresh();
  focusAttach();
  announce("Upload cancelled");
}

// ---- drag and drop onto the conversation --------------------------------------------------

function dropZone(event) {
  const zone = event.target instanceof Element && event.target.closest(".conversation");
  const files = event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  return zone && files && current && current.conn.upload ? zone : null;
}

document.addEventListener("dragover", (event) => {
  const zone = dropZone(event);
  if (!zone) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  zone.classList.add("drop-target");
});
document.addEventListener("dragleave", (event) => {
  const zone = event.target instanceof Element && event.target.closest(".conversation");
  if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("drop-target");
});
document.addEventListener("drop", (event) => {
  const zone = dropZone(event);
  if (!zone) return;
  event.preventDefault();
  zone.classList.remove("drop-target");
  shareAll(current.conv, current.conn, [...event.dataTransfer.files]);
});

// ---- shared files in messages -------------------------------------------------------------

function fileView(msg, conv, conn) {
  const file = msg.file;
  const url = webUrl(file.url);
  if (!url) return null;
  const name = file.name || "file";
  const ours = conn && conn.upload && url.startsWith(conn.upload.url);
  if (ours && PREVIEW.test(file.type || "")) {
    return h("button", { type: "button", class: "file-preview", "aria-label": `Open image ${name}`,
      onclick: () => lightbox(url, name) },
    h("img", { src: url, alt: name, loading: "lazy" }));
  }
  const details = [file.type ? file.type.split("/")[1].toUpperCase() : null,
    Number.isInteger(file.size) ? formatSize(file.size) : null].filter(Boolean).join(" · ");
  return h("a", { class: "file-link", href: url, target: "_blank", rel: "noopener noreferrer",
    download: ours ? name : false },
  h("img", { class: "file-icon", src: "file.svg", alt: "", width: 28, height: 28 }),
  h("span", { class: "item-text" }, h("span", { class: "item-name" }, name),
    details ? h("span", { class: "item-sub" }, details) : null));
}

/** The full image in a modal dialog (Escape or Close returns to the conversation). */
function lightbox(url, name) {
  const opener = document.activeElement;
  const box = h("dialog", { class: "dialog lightbox", "aria-label": name },
    h("img", { src: url, alt: name }),
    h("div", { class: "row" },
      h("a", { class: "secondary button-link", href: url, download: name }, `Download ${name}`),
      h("button", { type: "button", class: "primary", onclick: () => box.close() }, "Close")));
  box.addEventListener("close", () => {
    box.remove();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(box);
  box.showModal();
}

hooks.composer.push(composerTools);
hooks.attachment.push(fileView);
