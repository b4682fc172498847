"""JSON channels (Phoenix V2 wire format) for web apps that do not speak XMPP."""
