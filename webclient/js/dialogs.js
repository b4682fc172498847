// Modal dialogs (native <dialog>: focus is trapped inside, Escape closes, focus returns).
import { announce, h } from "./dom.js";
import { statusMenu } from "./views.js";

function dialog(title, body) {
  const opener = document.activeElement;
  const box = h("dialog", { class: "dialog", "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, title), body);
  box.addEventListener("close", () => {
    box.remove();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(box);
  box.showModal();
  return box;
}

const buttons = (label, close) => h("div", { class: "row" },
  h("button", { class: "primary", type: "submit" }, label),
  h("button", { class: "secondary", type: "button", onclick: close }, "Cancel"));

export function openDialogs({ conn, actions, state }) {
  const host = state.me.split("@")[1];
  const nickDefault = state.me.split("@")[0];
  return {
    status() { dialog("Your status", statusMenu(state, actions)); },

    newChat() {
      const box = dialog("Start a chat", h("form", { class: "stack", onsubmit: (e) => {
        e.preventDefault();
        const jid = e.target.jid.value.trim().toLowerCase();
        if (e.target.add && e.target.add.checked) conn.subscribe(jid);
        box.close();
        actions.open(jid, "chat");
      } }, h("label", { for: "chat-jid" }, "Address"),
      h("input", { id: "chat-jid", name: "jid", type: "email", required: true, placeholder: `name@${host}` }),
      conn.full ? h("label", { class: "check" }, h("input", { type: "checkbox", name: "add", checked: true }),
        " Add to my contacts and ask to see their status") : null,
      buttons("Start chat", () => box.close())));
    },

    room() {
      const error = h("p", { class: "form-error", role: "alert" });
      const directory = h("ul", { class: "list directory", "aria-label": "Public group chats" });
      const box = dialog(conn.full ? "New group chat" : "Join a group chat", h("form", { class: "stack",
        onsubmit: async (e) => {
          e.preventDefault();
          const f = e.target;
          const name = f.room.value.trim();
          const nick = f.nick.value.trim() || nickDefault;
          let jid = name.toLowerCase();
          if (!jid.includes("@") && conn.full) {
            const made = await conn.createRoom(name, nick, f.members.checked);
            if (made.status !== "ok") { error.textContent = `Could not create it: ${made.response.reason}.`; return; }
            jid = made.response.jid;
          } else if (!jid.includes("@")) {
            jid = `${jid.replace(/\s+/g, "-")}@conference.${host}`;
          }
          const refused = await actions.joinRoom(jid, nick);
          if (refused) error.textContent = `Could not join: ${refused}.`;
          else box.close();
        } },
      h("label", { for: "room-name" }, conn.full ? "Name, or the address of a room to join" : "Room name or address"),
      h("input", { id: "room-name", name: "room", required: true, placeholder: conn.full ? "Design team" : `team@conference.${host}` }),
      h("label", { for: "room-nick" }, "Your name in the room"),
      h("input", { id: "room-nick", name: "nick", value: nickDefault }),
      conn.full ? h("label", { class: "check" }, h("input", { type: "checkbox", name: "members" }),
        " Members only (people join by invitation)") : null,
      error, buttons(conn.full ? "Create or join" : "Join", () => box.close()), directory));
      if (conn.full) {
        conn.listRooms().then((reply) => {
          const rooms = reply.status === "ok" ? reply.response.rooms || [] : [];
          directory.replaceChildren(...rooms.map((r) => h("li", {}, h("button", { type: "button", class: "item",
            onclick: async () => {
              const refused = await actions.joinRoom(r.jid, box.querySelector("#room-nick").value || nickDefault);
              if (refused) error.textContent = `Could not join: ${refused}.`; else box.close();
            } }, h("span", { class: "item-text" }, h("span", { class: "item-name" }, r.name || r.jid),
            h("span", { class: "item-sub" }, `${r.occupants || 0} here · ${r.jid}`))))));
        });
      }
    },

    invite(room) {
      const error = h("p", { class: "form-error", role: "alert" });
      const box = dialog("Invite to the group chat", h("form", { class: "stack", onsubmit: async (e) => {
        e.preventDefault();
        const reply = await conn.invite(room, e.target.jid.value.trim().toLowerCase());
        if (reply.status === "ok") { box.close(); announce("Invitation sent."); }
        else error.textContent = `Not sent: ${reply.response.reason || "refused"}.`;
      } }, h("label", { for: "invite-jid" }, "Colleague's address"),
      h("input", { id: "invite-jid", name: "jid", type: "email", required: true, autocomplete: "off",
        list: "invite-contacts" }),
      h("datalist", { id: "invite-contacts" }, [...state.contacts.keys()].map((jid) => h("option", { value: jid }))),
      error, buttons("Invite", () => box.close())));
    },

    invitation(p) {
      const box = dialog("Invitation", h("form", { class: "stack", onsubmit: async (e) => {
        e.preventDefault();
        const refused = await actions.joinRoom(p.room, nickDefault);
        if (refused) announce(`Could not join: ${refused}.`);
        box.close();
      } }, h("p", {}, `${p.from} invites you to ${p.room}.`), p.reason ? h("p", {}, p.reason) : null,
      buttons("Join", () => box.close())));
    },
  };
}
