"""The one entry for every model request, whatever the transport.

HTTP routes, the gRPC servicer and the characters' API are edges: each turns its
transport into a request body and a ``CallContext`` (the usage record, the key,
whether the call must stay on this machine), and calls ``ModelServing``: admission
once (key permission, input caps, valid Unicode, limits), then the gateway's router
picks a target and the serving layer applies the alias's params the same way for
local and remote targets (only where the client set none) and fills the record.
"""
