"""Event subscriptions and their delivery (docs/hooks.md): the model and matcher (model.py),
the durable store (store.py), the outbox and its worker (outbox.py), the providers that only
deliver (providers.py), and the service tying them to the server's events (service.py)."""
