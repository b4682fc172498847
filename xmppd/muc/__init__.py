"""Multi-User Chat (XEP-0045): a service on its own domain, rooms on pubsub topics.

`service.MucService` is the entry point (one per host that enables the `muc` module);
`room.Room` holds a room's state; see docs/muc.md.
"""
