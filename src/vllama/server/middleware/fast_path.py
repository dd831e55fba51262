"""Straight to the relay: the hottest routes skip the router.

Pure ASGI, placed inside the request-id middleware: a POST to one of the
OpenAI relay's paths goes to the relay directly, everything else (and any
other method on those paths, for its 405) to the router as usual. The relay
renders its own errors, so nothing is lost by skipping the exception layer.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class FastPath:
    def __init__(self, app: ASGIApp, *, endpoint: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.endpoint = endpoint
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)
