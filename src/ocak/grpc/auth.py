"""API keys at the gRPC edge: the same keys, checks and limits as HTTP.

The hook is the app's key checker, ``Services.auth`` (``ocak.server.auth``'s
``Authenticator``, issue 6); a call's key is the bearer token of its
``authorization: Bearer <key>`` metadata. Every call is authenticated first,
``ListModels`` included (``AuthenticationError``: UNAUTHENTICATED when keys are
on and the key is missing or wrong). A model call, once its parameters are
valid, then passes the serving layer's admission, as on HTTP: the key may use
the model (``PermissionDenied``: PERMISSION_DENIED), the server's input caps
(INVALID_ARGUMENT), and the key's limits (``RateLimited``: RESOURCE_EXHAUSTED
with ``retry-after``). The key's name and id go on the call's record, so the
usage row and the key's token charge come out as on HTTP.

With no keys configured (and on loopback) the checker lets every call through.
Health checking and reflection are never behind keys, as ``/health`` is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ocak.protocol.record import RequestRecord
from ocak.server.services import Services
from ocak.store.keys import KeyInfo


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The key in ``authorization: Bearer <key>``; None when there is none."""
    for name, value in metadata or ():
        if name.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def authenticate(state: Services, token: str | None, record: RequestRecord) -> KeyInfo | None:
    """The caller's key (None when keys are off); raises AuthenticationError."""
    key = state.auth.authenticate(token)
    if key is not None:
        record.key_name, record.key_id = key.name, key.id
    return key
