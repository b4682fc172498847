// The presence and chat widget for any web page (docs/widget.md). The host page loads this
// one script from xmppd and configures it before or on the tag:
//   <script>window.xmppdWidget = { tokenUrl: "/chat-token", mailto: true };</script>
//   <script src="https://chat.example.org/widget.js" async></script>
// It loads its modules (js/widget.js, which reuses the web client's phx.js) from the same place.
(() => {
  const script = document.currentScript;
  const base = new URL(".", script ? script.src : location.href);
  const config = Object.assign({}, script ? script.dataset : {}, window.xmppdWidget || {});
  config.server = config.server || base.origin;
  import(new URL("js/widget.js", base).href)
    .then((module) => module.start(config))
    .catch((err) => console.error("xmppd widget:", err));
})();
