// DOM helpers: elements are built with text nodes only (no innerHTML), so nothing a peer
// sends can become markup.

/** h("button", {class: "x", onclick: fn, "aria-label": "..."}, child, "text", ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const HUES = 8;

function hash(text) {
  let n = 0;
  for (const ch of text) n = (n * 31 + ch.codePointAt(0)) >>> 0;
  return n;
}

export function initials(name) {
  const words = name.replace(/@.*/, "").split(/[\s._-]+/).filter(Boolean);
  const letters = words.slice(0, 2).map((w) => [...w][0].toUpperCase());
  return letters.join("") || "?";
}

/** A circle with the name's initials; the colour follows the address. */
export function avatar(name, key = name, size = "") {
  return h("span", { class: `avatar hue-${hash(key) % HUES} ${size}`, "aria-hidden": "true" },
    initials(name));
}

export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function time(stamp) {
  const date = stamp ? new Date(stamp) : new Date();
  const now = new Date();
  const opts = date.toDateString() === now.toDateString()
    ? { hour: "2-digit", minute: "2-digit" }
    : { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  return date.toLocaleString([], opts);
}

/** Replace `parent`'s children, keeping focus on the element with the same data-key. */
export function replaceChildren(parent, children) {
  const active = document.activeElement;
  const key = active && parent.contains(active) ? active.dataset.key : undefined;
  parent.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
  if (key !== undefined) {
    const again = parent.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}
