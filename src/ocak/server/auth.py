"""API keys at the edge: who is calling, may they use this model, are they within limits.

``Authenticator`` is the one hook for every edge (HTTP here, gRPC beside it):
``check(token, model)`` authenticates a bearer token (401), checks that the key
may use the model (403) and counts the request against its limits (429), and
returns the key (``None`` when the server runs without keys). ``charge`` is a
record sink: it adds a finished request's tokens to its key's windows.

Keys live in the store; the authenticator keeps them in memory and reloads them
when another process (``ocak keys create`` or ``revoke``) commits a change, seen
through SQLite's ``data_version``: a running server picks up a new or revoked
key on its next request. A token is checked against every active key with
``hmac.compare_digest`` and no early exit, so the time taken does not depend on
how much of a hash matched.

Keys are required when any active key exists, and always when the server listens
beyond loopback (``required``): revoking the last key of an exposed server
locks it rather than opening it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import threading
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.config import ConfigError, Settings
from ocak.errors import AuthenticationError, OcakError, PermissionDenied
from ocak.protocol.record import RequestRecord
from ocak.server.errors import error_response
from ocak.server.limits import Limiter, budget_window_start
from ocak.store.db import Store
from ocak.store.keys import KeyInfo, StoredKey, hash_key, stored_keys
from ocak.store.usage import tokens_used

log = logging.getLogger("ocak.auth")

# Always reachable without a key: probes and the API's own documentation (the console's
# files are added where the app is put together: server/stack.py).
OPEN_PATHS = frozenset(
    {"/health", "/health/live", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

MISSING = (
    "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY). Keys are made with `ocak keys create`."
)
INCORRECT = "Incorrect API key provided."


class Authenticator:
    """Checks bearer tokens against the store's keys and applies per-key limits."""

    def __init__(
        self,
        db: Store | None = None,
        *,
        required: bool = False,
        limiter: Limiter | None = None,
    ) -> None:
        self.db = db
        self.required = required
        self.limiter = limiter or Limiter()
        self._keys: list[StoredKey] = []
        self._internal: list[StoredKey] = []  # this process's own, never stored
        self._by_id: dict[int, KeyInfo] = {}
        self._version: int | None = None
        self._lock = threading.Lock()
        self.refresh()

    # -- keys -------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Reload keys (and budget counters) if another process changed the store."""
        if self.db is None:
            return
        version = self.db.data_version()
        if version == self._version and not force:
            return
        with self._lock:
            if version == self._version and not force:
                return
            keys = stored_keys(self.db)
            for key in keys:
                info = key.info
                if info.budget_tokens is not None:
                    start = budget_window_start(info, self.limiter.wall())
                    used = tokens_used(self.db, info.id, since=start)
                    self.limiter.set_budget_used(info, used, start)
            self._keys = keys
            self._by_id = {k.info.id: k.info for k in keys}
            self.limiter.forget(set(self._by_id))
            self._version = version
        log.debug("loaded %d active API keys", len(keys))

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key right now."""
        self.refresh()
        return self.required or bool(self._keys)

    def active_keys(self) -> int:
        self.refresh()
        return len(self._keys)

    def key(self, key_id: int) -> KeyInfo | None:
        return self._by_id.get(key_id)

    def internal_key(self, name: str, models: tuple[str, ...]) -> str:
        """A key for the server's own calls through its API (the eval a fine-tuning job
        runs), held in this process only: never stored, allowed ``models`` and nothing
        else, no administrator scope. Its usage rows carry ``name`` and key id 0."""
        token = f"ocak-internal-{secrets.token_urlsafe(32)}"
        info = KeyInfo(id=0, name=name, prefix="internal", models=models)
        with self._lock:
            self._internal.append(StoredKey(info, hash_key(token)))
        return token

    def drop_internal(self, name: str) -> None:
        with self._lock:
            self._internal = [k for k in self._internal if k.info.name != name]

    # -- checks -----------------------------------------------------------------

    def authenticate(self, token: str | None) -> KeyInfo | None:
        """The key a bearer token belongs to; ``None`` when keys are off. 401 otherwise."""
        if not self.enabled:
            return None
        if not token:
            raise AuthenticationError(MISSING)
        digest = hash_key(token)
        found: KeyInfo | None = None
        for stored in [*self._keys, *self._internal]:  # no early exit: constant time
            if hmac.compare_digest(stored.hash, digest):
                found = stored.info
        if found is None:
            raise AuthenticationError(INCORRECT)
        return found

    def permit(self, key: KeyInfo | None, model: str) -> None:
        """403 when the key is restricted to other models."""
        if key is not None and not key.allows(model):
            raise PermissionDenied(
                f"The API key '{key.name}' may not use the model '{model}'.", param="model"
            )

    def limit(self, key: KeyInfo | None) -> None:
        """Count one request against the key's rate limits and budget (429 when over)."""
        if key is not None:
            self.limiter.admit(key)

    def check(self, token: str | None, model: str | None = None) -> KeyInfo | None:
        """The whole check for one call: 401, then (given a model) 403 and 429.

        For edges other than HTTP (gRPC): raises ``AuthenticationError``,
        ``PermissionDenied`` or ``RateLimited`` (``retry_after`` set).
        """
        key = self.authenticate(token)
        if model is not None:
            self.permit(key, model)
            self.limit(key)
        return key

    def charge(self, record: RequestRecord) -> None:
        """Record sink: add a finished request's tokens to its key's limits."""
        if record.key_id is None:
            return
        key = self._by_id.get(record.key_id)
        if key is not None:
            self.limiter.charge(key, record.prompt_tokens + record.completion_tokens)


# -- exposure -------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def keys_required(settings: Settings) -> bool:
    """Keys are always needed beyond loopback, unless the operator said otherwise."""
    return not is_loopback(settings.host) and not settings.allow_no_keys


def check_exposure(settings: Settings, auth: Authenticator) -> None:
    """Refuse to listen beyond loopback with no keys (unless ``allow_no_keys``)."""
    if keys_required(settings) and not auth.active_keys():
        raise ConfigError(
            f"refusing to listen on {settings.host} with no API keys: anyone who can reach "
            "that address could use this server. Create a key (`ocak keys create --name "
            "NAME`), listen on 127.0.0.1, or pass --allow-no-keys (OCAK_ALLOW_NO_KEYS=1) "
            "to serve without keys anyway."
        )


# -- HTTP -----------------------------------------------------------------------


def _close(reason: str) -> Message:
    """Refuse a WebSocket before it is accepted (the client sees HTTP 403)."""
    return {"type": "websocket.close", "code": 1008, "reason": reason[:120]}


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries: an ``Authorization: Bearer`` header (every API's clients),
    else an ``x-api-key`` header (how Anthropic's SDK sends it)."""
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
        if name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return api_key


def get_key(request: Request) -> KeyInfo | None:
    """The key that authenticated this request (``None`` when keys are off).

    ``key.locality == "local"`` means the request must not leave the machine.
    """
    key: KeyInfo | None = getattr(request.state, "key", None)
    return key


ADMIN_NEEDED = (
    "This route changes the machine or its configuration: it needs an administrator key "
    "(`ocak keys create --name NAME --admin`)."
)
LOOPBACK_ONLY = (
    "Without API keys, routes that change the machine answer only to clients on this "
    "machine (loopback). Create an administrator key to use them from elsewhere."
)


def require_admin(request: Request) -> KeyInfo | None:
    """FastAPI dependency of administrator routes: 403 unless the caller may change the machine.

    With keys: an administrator key. Without keys (loopback servers, or
    ``allow_no_keys``): clients on loopback only, after the web guard's checks.
    """
    auth: Authenticator = request.app.state.ocak.auth
    key = get_key(request)
    if auth.enabled:
        if key is None or not key.admin:
            raise PermissionDenied(ADMIN_NEEDED, code="admin_required")
        return key
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise PermissionDenied(LOOPBACK_ONLY, code="admin_required")
    return None


class AuthMiddleware:
    """401 for any path but the open ones without a valid key; the key goes on the request."""

    def __init__(self, app: ASGIApp, auth: Authenticator, open_paths: frozenset[str]) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["key"] = None
        if scope["path"] not in self.open_paths:
            try:
                key = self.auth.authenticate(bearer_token(scope["headers"]))
            except OcakError as exc:
                record: RequestRecord | None = state.get("record")
                if record is not None:
                    record.fail(exc.status, exc.code)
                response = error_response(exc, scope["path"])
                response.headers["WWW-Authenticate"] = 'Bearer realm="ocak"'
                await response(scope, receive, send)
                return
            state["key"] = key
            record = state.get("record")
            if key is not None and record is not None:
                record.key_name, record.key_id = key.name, key.id
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket carries its key in the same ``Authorization`` header; without a valid
        one it is refused before it is accepted."""
        state = scope.setdefault("state", {})
        state["key"] = None
        if scope["path"] not in self.open_paths:
            try:
                state["key"] = self.auth.authenticate(bearer_token(scope["headers"]))
            except OcakError as exc:
                await receive()  # the websocket.connect message
                await send(_close(exc.message))
                return
        await self.app(scope, receive, send)
