// Extension points for features built beside the client (file upload, calls): a module adds a
// function here and its controls appear in every conversation. Each function gets the
// conversation ({key, kind, title}) and the Connection (session.js: `conn.user` is the user
// channel, `conn.user.on(event, fn)` hears its events) and returns an element or null.
export const hooks = {
  composer: [], // buttons beside Send (e.g. attach a file)
  header: [], // buttons in the conversation header (e.g. audio and video call)
  attachment: [], // (msg, conv, conn): what a message carries besides text (e.g. a shared file)
  connected: [], // fn(conn) when a Connection starts: listen to `conn.user` events (calls.js)
};

export function extras(kind, conv, conn) {
  return hooks[kind].map((make) => make(conv, conn)).filter(Boolean);
}

/** The first element an attachment hook makes for this message, or null. */
export function attachment(msg, conv, conn) {
  for (const make of hooks.attachment) {
    const el = make(msg, conv, conn);
    if (el) return el;
  }
  return null;
}
