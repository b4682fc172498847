// xmppd chat for Roundcube (xmppd_chat.php): loads xmppd's widget.js in the main window and
// marks the addresses of the message view and the contact view (frames of the same origin),
// which the main window's widget watches.
window.rcmail && rcmail.addEventListener("init", function () {
  var env = rcmail.env.xmppd_chat;
  if (!env) return;

  // Addresses of the message headers (Elastic: `span.adr` "Name <address>", or links with
  // the address as title or mailto: href when linked) and of the contact card, one mark each.
  function markAddresses(doc) {
    var nodes = doc.querySelectorAll("span.adr, .rcmContactAddress, a[href^='mailto:']");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (node.dataset.chatAddress || (node.parentElement && node.parentElement.closest("[data-chat-address]"))) continue;
      var address = addressOf(node);
      if (address) node.dataset.chatAddress = address.toLowerCase();
    }
  }

  function addressOf(node) {
    var href = (node.getAttribute("href") || "").replace(/^mailto:/i, "").split("?")[0];
    var candidates = [node.getAttribute("title") || "", href, node.textContent || ""];
    for (var i = 0; i < candidates.length; i++) {
      var text = candidates[i];
      var m = text.match(/<([^<>\s]+@[^<>\s]+)>/) || text.match(/^\s*([^<>\s]+@[^<>\s]+)\s*$/);
      if (m) return m[1];
    }
    return null;
  }

  if (window.top !== window) {  // a message or contact frame: the top window's widget does it
    var tries = 0;
    var wait = setInterval(function () {
      var widget = window.top.xmppdWidget;
      if (widget && widget.scan) {
        clearInterval(wait);
        markAddresses(document);
        widget.scan(document);
      } else if (++tries > 100) clearInterval(wait);
    }, 100);
    return;
  }

  // The status control: under the user's name in Elastic's sidebar header, else in the task menu.
  var slot = document.createElement("div");
  slot.id = "xmppd-chat-status";
  slot.style.padding = "0 .5em .4em";
  var header = document.querySelector("#layout-sidebar > .header");
  if (header) header.parentNode.insertBefore(slot, header.nextSibling);
  else (document.querySelector("#taskmenu") || document.body).appendChild(slot);

  window.xmppdWidget = {
    server: env.server,
    jid: env.jid,
    statusTarget: "#xmppd-chat-status",
    token: function () {
      var url = rcmail.url("plugin.xmppd_chat.token", { _remote: 1 });
      return fetch(url, { credentials: "same-origin", headers: { "X-Roundcube-Request": rcmail.env.request_token } })
        .then(function (r) {
          if (!r.ok) throw new Error("token: HTTP " + r.status);
          return r.json();
        });
    },
  };
  markAddresses(document);
  var script = document.createElement("script");
  script.src = env.server + "/widget.js";
  script.async = true;
  document.head.appendChild(script);
});
