"""API keys, trusted fronts and per-key limits, as pure ASGI middleware.

It reads request headers only and wraps nothing around the response, so
streams pass through untouched; the concurrency slot a request takes is given
back when the inner app returns, i.e. when the response (stream included) has
ended. Refusals are rendered in the caller's dialect (401 with
``WWW-Authenticate``, 403, 429 with ``Retry-After``); they never quote the
credential. Where a key is accepted:

- ``Authorization: Bearer <key>`` (the openai SDK; ollama clients with
  ``OLLAMA_API_KEY``) or ``X-Api-Key: <key>``, on HTTP and on the WebSocket
  handshake;
- a trusted front's identity header, with ``X-Vllama-Front-Secret`` or from a
  trusted address.

``/``, ``/health`` and ``/ready`` are always open, ``/metrics`` when
configured; ``/admin/*`` needs the admin key, and so do the routes that change
the models on disk (pull, push, create, copy, delete, blobs) when keys are
required. When auth is not required, a
request without a valid key runs as ``anonymous`` (its usage still counted).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from vllama.auth.principal import STATE_KEY, Principal
from vllama.auth.service import AuthService
from vllama.errors import Forbidden, Unauthorized, VllamaError
from vllama.server.errors import dialect_of, error_response
from vllama.settings import Settings

FRONT_SECRET = b"x-vllama-front-secret"
ALWAYS_OPEN = frozenset({"/", "/health", "/ready"})
#: Routes that change the models on disk: admin only when keys are required.
MANAGE_PATHS = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, auth: AuthService, settings: Settings) -> None:
        self.app = app
        self.auth = auth
        self.required = auth.required
        self.open_paths = ALWAYS_OPEN | ({"/metrics"} if settings.metrics_open else set())
        header = settings.trusted_front_header
        self.front_header = header.encode("latin-1") if header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            principal = self._authenticate(scope)
            if self.required and principal is not self.auth.admin and _manages(scope["path"]):
                raise Forbidden("managing models needs the admin key", code="admin_required")
            limiter = principal.limiter
            if limiter is not None:
                limiter.admit()
        except VllamaError as err:
            await _refuse(err, scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = principal
        if limiter is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release()

    def _authenticate(self, scope: Scope) -> Principal:
        secret: str | None = None
        identity: str | None = None
        front_secret: str | None = None
        front_header = self.front_header
        for name, value in scope["headers"]:
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    secret = text[7:].strip() or None
            elif name == b"x-api-key":
                secret = secret or value.decode("latin-1").strip() or None
            elif front_header is not None:
                if name == front_header:
                    identity = value.decode("latin-1").strip()
                elif name == FRONT_SECRET:
                    front_secret = value.decode("latin-1")
        auth = self.auth
        if scope["path"].startswith("/admin"):
            if not auth.admin_enabled:
                raise Forbidden("the admin API is off: set VLLAMA_ADMIN_KEY to enable it")
            if secret is None or not auth.is_admin(secret):
                raise Unauthorized("admin key required", code="invalid_api_key")
            return auth.admin
        if identity is not None:
            client = scope.get("client")
            if not auth.front_trusted(client[0] if client else None, front_secret):
                raise Unauthorized("identity header from an untrusted front")
            return auth.front(identity)
        if secret is not None:
            try:
                return auth.verify(secret)
            except Unauthorized:
                if self.required:
                    raise
        elif self.required:
            raise Unauthorized("API key required", code="missing_api_key")
        return auth.anonymous


def _manages(path: str) -> bool:
    return path in MANAGE_PATHS or path.startswith("/api/blobs/")


async def _refuse(err: VllamaError, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # Before accept, a close is answered with HTTP 403 by the server.
        await send({"type": "websocket.close", "code": 1008, "reason": err.message[:120]})
        return
    response = error_response(err, dialect_of(scope["path"]))
    if err.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    await response(scope, receive, send)
