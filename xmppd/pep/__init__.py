"""Personal eventing (XEP-0163 on XEP-0060) for account JIDs.

`service` is the PEP service (access, publishing, notifications), `config` node
configuration and its forms, `store` the durable nodes and items,
`bookmarks` the XEP-0402 <-> XEP-0048 conversion; the module is `xmppd/modules/pep.py`.
"""
