"""Request ids, the access log and request metrics, as pure ASGI middleware.

Pure ASGI (no BaseHTTPMiddleware) so that streams pass through untouched:
this only looks at the ``http.response.start`` message and never at the body.
The id is the client's ``X-Request-Id`` when it sent a sane one, else a new
one; it is returned to the client, forwarded to the engine and logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllama.metrics import Metrics

log = logging.getLogger("vllama.access")

_MAX_ID = 128


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _MAX_ID and text.isprintable():
                return text
    return None


class RequestIdMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None = None, access_log: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # A random per-process prefix and a counter: unique across replicas
        # and restarts without a urandom syscall on every request.
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or f"{self._prefix}{next(self._counter):012x}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(scope["path"], status, elapsed)
            if self.access_log and log.isEnabledFor(logging.INFO):
                _access_line(request_id, scope, status, elapsed)


def _access_line(request_id: str, scope: Scope, status: int, elapsed: float) -> None:
    """One access-log record, made directly: ``log.info`` would also walk the
    stack to find the caller's file and line, which an access line never shows
    and which cost more than the rest of the record."""
    record = logging.LogRecord(
        log.name,
        logging.INFO,
        __file__,
        0,
        '%s "%s %s" %d %.1fms',
        (request_id, scope["method"], scope["path"], status, elapsed * 1000),
        None,
    )
    record.request_id = request_id
    record.status = status
    log.handle(record)
