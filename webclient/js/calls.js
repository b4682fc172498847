// 1:1 audio and video calls over WebRTC (docs/webclient.md "Calls"). Setup is XEP-0353 through
// the user channel (call_propose, call_ring, call_accept, call_reject, call_retract,
// call_finish; docs/channels.md "Calls"); SDP and ICE candidates go to the peer's session as
// call_signal; media flows through the TURN server the server names (ice_servers).
// One call at a time: a second incoming call is answered "busy".
import { announce, avatar, h } from "./dom.js";
import { hooks } from "./hooks.js";

const CONNECT_MS = 30000; // accepted but no media path for this long: give up
const NOTICE_MS = 4000; // how long an end state ("Declined", "Busy") stays on screen
const ENDINGS = {
  busy: "Busy", decline: "Declined", timeout: "No answer", cancel: "Call cancelled",
  success: "Call ended", "connectivity-error": "The call could not connect",
  "failed-application": "They answered in an app that cannot take web calls",
};

let conn = null;
let me = null; // this session's full JID (the user join reply)
let call = null; // the one call: see newCall()
let incoming = null; // the incoming-call <dialog>

// ---- wiring -------------------------------------------------------------------------------

hooks.connected.push((connection) => {
  if (call) end(null);
  ensureStyles();
  conn = connection;
  const u = conn.user;
  u.on("joined", (reply) => { if (reply.status === "ok") me = reply.response.jid; });
  u.on("call_propose", onPropose);
  u.on("call_ring", (p) => { if (mine(p) && call.role === "caller") status("Ringing…"); });
  u.on("call_accept", onAccept);
  u.on("call_reject", (p) => { if (mine(p)) elsewhereOr(p, "Declined on another device", ENDINGS[p.reason] || "Declined"); });
  u.on("call_retract", (p) => { if (mine(p) && !p.carbon) missed(call.peer, "Missed call"); });
  u.on("call_finish", (p) => { if (mine(p) && !p.carbon) end(ENDINGS[p.reason] || "Call ended"); });
  u.on("call_error", (p) => { if (mine(p)) end(p.reason === "not-acceptable" ? "You blocked this contact" : `${name(p.from)} cannot be called now`); });
  u.on("call_signal", onSignal);
  conn.socket.on("close", () => { if (conn && conn.closed && call) end(null); }); // signed out
});

hooks.header.push((conv, connection) => {
  if (conv.kind !== "chat" || !connection || !connection.full) return null;
  return h("div", { class: "call-buttons" },
    callButton(conv, "audio", "Audio call", "☎"), callButton(conv, "video", "Video call", "▶"));
});

function callButton(conv, media, label, icon) {
  return h("button", { class: "secondary call-button", type: "button", "data-media": media,
    "aria-label": `${label} with ${conv.title}`, onclick: () => startCall(conv.key, conv.title, media) },
  h("span", { "aria-hidden": "true" }, icon), ` ${label}`);
}

const name = (jid) => String(jid).split("@")[0];
const mine = (p) => call && p.call_id === call.id;
const push = (event, payload) => conn.user.push(event, payload);

// The tests (and the curious) read the call from here: its phase, and the media path.
window.xmppdCalls = {
  ringSeconds: 45, // unanswered for this long: "No answer" (the callee rings 5 s longer)
  state: () => (call ? { phase: call.phase, media: call.media, role: call.role,
    connection: call.pc ? call.pc.connectionState : null,
    policy: call.pc ? call.pc.getConfiguration().iceTransportPolicy : null } : { phase: "idle" }),
  /** The candidate types of the pair carrying the media ("relay": through TURN). */
  async path() {
    if (!call || !call.pc) return null;
    const stats = await call.pc.getStats();
    for (const s of stats.values()) {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        return { local: stats.get(s.localCandidateId).candidateType, remote: stats.get(s.remoteCandidateId).candidateType };
      }
    }
    return null;
  },
};

function newCall(fields) {
  return { id: null, peer: null, peerFull: null, title: "", media: "audio", role: "caller",
    phase: "calling", pc: null, local: null, ice: null, queued: [], remoteSet: false,
    started: 0, timers: [], muted: false, cameraOff: false, view: null, ...fields };
}

// ---- placing a call -----------------------------------------------------------------------

async function startCall(peer, title, media) {
  if (call) { announce("You are already in a call."); return; }
  call = newCall({ peer, title, media, id: crypto.randomUUID() });
  const current = call;
  showCallView();
  status(`Calling ${title}…`);
  const ready = await prepare();
  if (!ready || call !== current) return;
  const reply = await push("call_propose", { to: peer, media, call_id: current.id });
  if (call !== current) return;
  if (reply.status !== "ok") {
    const reason = reply.response && reply.response.reason;
    end(reason === "not-acceptable" ? "You blocked this contact" : `The call could not be placed (${reason || reply.status})`);
    return;
  }
  later(window.xmppdCalls.ringSeconds * 1000, () => {
    if (call === current && current.phase === "calling") {
      push("call_retract", { to: peer, call_id: current.id, reason: "timeout" });
      end("No answer");
    }
  });
}

/** Camera/microphone and the ICE servers; false (and the call ended) when either fails. */
async function prepare() {
  const current = call;
  try {
    current.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: current.media === "video" });
  } catch (err) {
    end(current.media === "video" ? "Camera or microphone not available" : "Microphone not available");
    return false;
  }
  if (call !== current) { stopTracks(current.local); return false; }
  localVideo().srcObject = current.local;
  const reply = await push("ice_servers", {});
  if (reply.status !== "ok") { end("Calls are not available on this server"); return false; }
  current.ice = reply.response;
  return call === current;
}

function onAccept(p) {
  if (!mine(p)) return;
  if (p.carbon || p.from !== call.peer) {
    elsewhereOr(p, "Answered on another device", null);
    return;
  }
  const from = `${p.from}/${p.resource}`;
  if (call.role !== "caller") return;
  if (call.phase !== "calling") { // a second client of theirs accepted too: it is not needed
    if (from !== call.peerFull) push("call_finish", { to: from, call_id: call.id, reason: "cancel" });
    return;
  }
  if (!p.webrtc) {
    push("call_finish", { to: from, call_id: call.id, reason: "failed-application" });
    end(ENDINGS["failed-application"]);
    return;
  }
  call.peerFull = from;
  connecting();
  offer(call);
}

async function offer(current) {
  const pc = current.pc;
  const description = await pc.createOffer();
  await pc.setLocalDescription(description);
  signal(current, { sdp: { type: description.type, sdp: description.sdp } });
}

// ---- receiving a call ---------------------------------------------------------------------

function onPropose(p) {
  if (p.carbon || p.from === bareOf(me)) return; // placed from one of my other devices
  if (p.delayed) { announce(`Missed ${p.media} call from ${name(p.from)}`); return; }
  const from = `${p.from}/${p.resource}`;
  if (call) { // one call at a time
    if (call.id !== p.call_id) push("call_reject", { to: from, call_id: p.call_id, reason: "busy" });
    return;
  }
  call = newCall({ id: p.call_id, peer: p.from, peerFull: from, title: name(p.from), media: p.media,
    role: "callee", phase: "ringing", webrtc: p.webrtc });
  const current = call;
  push("call_ring", { to: from, call_id: p.call_id });
  showIncoming(current);
  later(window.xmppdCalls.ringSeconds * 1000 + 5000, () => { if (call === current && current.phase === "ringing") missed(current.peer, "Missed call"); });
}

function showIncoming(current) {
  const kind = current.media === "video" ? "video call" : "audio call";
  const who = current.title;
  const accept = current.webrtc
    ? h("button", { class: "primary accept", type: "button", "aria-label": `Accept ${kind} from ${who}`,
      onclick: () => acceptCall(current) }, "Accept")
    : h("p", { class: "call-note" }, `${who} is calling from an XMPP app. Answer there: web calls talk only to the web client.`);
  incoming = h("dialog", { class: "dialog incoming-call", "aria-labelledby": "incoming-title",
    "aria-describedby": "incoming-text" },
  h("div", { class: "incoming-who" }, avatar(who, current.peer),
    h("div", {}, h("h2", { id: "incoming-title" }, `Incoming ${kind}`),
      h("p", { id: "incoming-text", "aria-live": "assertive" }, `${who} is calling you.`))),
  h("div", { class: "row" }, accept,
    h("button", { class: "secondary danger", type: "button", "aria-label": `Decline ${kind} from ${who}`,
      onclick: () => declineCall(current) }, "Decline")));
  incoming.addEventListener("cancel", (e) => { e.preventDefault(); declineCall(current); }); // Escape declines
  document.body.append(incoming);
  incoming.showModal();
  incoming.stopRinging = ringTone();
  announce(`Incoming ${kind} from ${who}`);
}

function closeIncoming() {
  if (incoming) { incoming.stopRinging(); incoming.close(); incoming.remove(); }
  incoming = null;
}

/** A soft two-tone ring (made with Web Audio: no sound file); returns its stop function.
 * Browsers keep it silent until the user has interacted with the page (autoplay rules). */
function ringTone() {
  let ctx;
  try { ctx = new AudioContext(); } catch { return () => {}; }
  const gain = ctx.createGain();
  gain.gain.value = 0;
  gain.connect(ctx.destination);
  for (const hz of [440, 480]) {
    const tone = ctx.createOscillator();
    tone.frequency.value = hz;
    tone.connect(gain);
    tone.start();
  }
  let on = false;
  const beat = () => { on = !on; gain.gain.setTargetAtTime(on ? 0.06 : 0, ctx.currentTime, 0.03); };
  beat();
  const timer = setInterval(beat, 1500);
  return () => { clearInterval(timer); ctx.close(); };
}

async function acceptCall(current) {
  closeIncoming();
  current.phase = "connecting";
  showCallView();
  status("Connecting…");
  if (!(await prepare())) {
    push("call_reject", { to: current.peerFull, call_id: current.id, reason: "decline" });
    return;
  }
  connecting();
  push("call_accept", { to: current.peerFull, call_id: current.id });
}

function declineCall(current) {
  if (call !== current) return;
  push("call_reject", { to: current.peerFull, call_id: current.id, reason: "decline" });
  closeIncoming();
  call = null;
  announce("Call declined.");
}

/** The call was answered or declined by another device of mine, or ended before I took it. */
function elsewhereOr(p, elsewhere, otherwise) {
  if (p.carbon || p.from === bareOf(me)) {
    if (call.phase === "ringing") { closeIncoming(); call = null; announce(`${elsewhere}.`); }
    return;
  }
  if (otherwise) end(otherwise);
}

function missed(peer, text) {
  if (call && call.phase === "ringing") {
    closeIncoming();
    call = null;
    announce(`${text} from ${name(peer)}.`);
  } else {
    end(text === "Missed call" ? "Call cancelled" : text);
  }
}

// ---- the media path -----------------------------------------------------------------------

function connecting() {
  const current = call;
  current.phase = "connecting";
  status("Connecting…");
  const pc = new RTCPeerConnection({
    iceServers: current.ice.ice_servers || [],
    iceTransportPolicy: current.ice.relay_only ? "relay" : "all",
  });
  current.pc = pc;
  for (const track of current.local.getTracks()) pc.addTrack(track, current.local);
  pc.onicecandidate = (e) => {
    const c = e.candidate && e.candidate.candidate ? e.candidate.toJSON() : null;
    signal(current, { candidate: c });
  };
  pc.ontrack = (e) => { remoteVideo().srcObject = e.streams[0]; };
  pc.onconnectionstatechange = () => {
    if (call !== current) return;
    if (pc.connectionState === "connected" && current.phase !== "active") {
      current.phase = "active";
      current.started = Date.now();
      render();
      status("Connected");
      tick();
    } else if (pc.connectionState === "failed") {
      push("call_finish", { to: current.peerFull, call_id: current.id, reason: "connectivity-error" });
      end("The connection was lost");
    }
  };
  later(CONNECT_MS, () => {
    if (call === current && current.phase === "connecting") {
      push("call_finish", { to: current.peerFull, call_id: current.id, reason: "connectivity-error" });
      end(ENDINGS["connectivity-error"]);
    }
  });
  render();
}

function signal(current, body) {
  if (call === current && current.peerFull) push("call_signal", { to: current.peerFull, call_id: current.id, ...body });
}

async function onSignal(p) {
  if (!mine(p) || !call.pc || `${p.from}/${p.resource}` !== call.peerFull) return;
  const current = call;
  const pc = current.pc;
  try {
    if (p.sdp) {
      await pc.setRemoteDescription(p.sdp);
      current.remoteSet = true;
      for (const c of current.queued.splice(0)) await pc.addIceCandidate(c);
      if (p.sdp.type === "offer") {
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        signal(current, { sdp: { type: answer.type, sdp: answer.sdp } });
      }
    } else if ("candidate" in p) {
      const c = p.candidate || undefined; // null: the end of the peer's candidates
      if (current.remoteSet) await pc.addIceCandidate(c); else current.queued.push(c);
    }
  } catch (err) {
    console.warn("call signal", err);
  }
}

// ---- hanging up ---------------------------------------------------------------------------

function hangUp() {
  if (!call) return;
  if (call.role === "caller" && call.phase === "calling") {
    push("call_retract", { to: call.peer, call_id: call.id });
    end("Call cancelled");
  } else {
    if (call.peerFull) push("call_finish", { to: call.peerFull, call_id: call.id, reason: "success" });
    end("Call ended");
  }
}

/** Stop everything; show `text` for a moment (null: close at once). */
function end(text) {
  const current = call;
  if (!current) return;
  call = null;
  closeIncoming();
  for (const t of current.timers) clearTimeout(t);
  if (current.pc) current.pc.close();
  stopTracks(current.local);
  if (!current.view) { if (text) announce(`${text}.`); return; }
  const view = current.view;
  view.classList.add("ended");
  for (const v of view.querySelectorAll("video")) v.srcObject = null;
  if (!text) { closeView(view); return; }
  view.querySelector(".call-controls").replaceChildren(
    h("button", { class: "secondary", type: "button", onclick: () => closeView(view) }, "Close"));
  view.querySelector(".call-controls button").focus();
  view.querySelector(".call-status").textContent = text;
  view.querySelector(".call-time").textContent = "";
  setTimeout(() => closeView(view), NOTICE_MS);
}

function closeView(view) {
  if (!view.isConnected) return;
  if (view.open) view.close();
  view.remove();
  // The header button that opened the call may have been drawn again meanwhile.
  const input = document.getElementById("composer-input");
  if (input && (!document.activeElement || document.activeElement === document.body)) input.focus();
}

function stopTracks(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

function later(ms, fn) { call.timers.push(setTimeout(fn, ms)); }

// ---- the in-call view ---------------------------------------------------------------------

function showCallView() {
  if (call.view) return;
  ensureStyles();
  const current = call;
  const kind = current.media === "video" ? "Video call" : "Audio call";
  current.view = h("dialog", { class: `call-view ${current.media}`, "aria-labelledby": "call-title" },
    h("div", { class: "call-stage" },
      h("video", { id: "call-remote", class: "call-remote", autoplay: true, playsinline: true,
        "aria-label": `${current.title}'s video` }),
      h("div", { class: "call-peer" }, avatar(current.title, current.peer, "large"),
        h("h2", { id: "call-title" }, `${kind} with ${current.title}`),
        h("p", { class: "call-status", role: "status" }, ""),
        h("time", { class: "call-time" }, "")),
      h("video", { id: "call-local", class: "call-local", autoplay: true, playsinline: true, muted: true,
        "aria-label": "Your camera" })),
    h("div", { class: "call-controls" }));
  current.view.querySelector("#call-local").muted = true; // never hear oneself
  current.view.addEventListener("cancel", (e) => e.preventDefault()); // Escape does not hang up
  document.body.append(current.view);
  current.view.showModal();
  render();
}

/** The controls for the current phase; keeps focus on the same control. */
function render() {
  if (!call || !call.view) return;
  const current = call;
  const view = current.view;
  view.classList.toggle("active", current.phase === "active");
  const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.dataset.control : null;
  const toggle = (control, on, label, onLabel, fn) => h("button", { class: "call-toggle", type: "button",
    "data-control": control, "aria-pressed": on ? "true" : "false", onclick: fn }, on ? onLabel : label);
  const controls = [
    toggle("mute", current.muted, "Mute", "Unmute", () => { current.muted = !current.muted; setTracks(current, "audio", !current.muted); render(); }),
    current.media === "video" ? toggle("camera", current.cameraOff, "Camera off", "Camera on", () => {
      current.cameraOff = !current.cameraOff; setTracks(current, "video", !current.cameraOff); render();
    }) : null,
    h("button", { class: "hang-up", type: "button", "data-control": "hangup", onclick: hangUp },
      current.role === "caller" && current.phase === "calling" ? "Cancel call" : "Hang up"),
  ];
  view.querySelector(".call-controls").replaceChildren(...controls.filter(Boolean));
  const again = view.querySelector(`[data-control="${focused || "hangup"}"]`);
  if (again) again.focus();
}

function setTracks(current, kind, enabled) {
  if (current.local) for (const t of current.local.getTracks()) if (t.kind === kind) t.enabled = enabled;
  announce(kind === "audio" ? (enabled ? "Microphone on." : "Microphone muted.") : (enabled ? "Camera on." : "Camera off."));
}

function status(text) {
  if (call && call.view) call.view.querySelector(".call-status").textContent = text;
}

function tick() {
  const current = call;
  if (!current || current.phase !== "active") return;
  const s = Math.floor((Date.now() - current.started) / 1000);
  const clock = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  const el = current.view.querySelector(".call-time");
  el.textContent = clock;
  el.setAttribute("datetime", `PT${s}S`);
  current.timers.push(setTimeout(tick, 1000));
}

const localVideo = () => call.view.querySelector("#call-local");
const remoteVideo = () => call.view.querySelector("#call-remote");
const bareOf = (jid) => String(jid || "").split("/")[0];

/** calls.css is this feature's own stylesheet (CSP: styles from the server only). */
function ensureStyles() {
  if (document.getElementById("calls-css")) return;
  document.head.append(h("link", { id: "calls-css", rel: "stylesheet", href: "calls.css" }));
}
