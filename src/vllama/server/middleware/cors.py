"""CORS the way Ollama does it: local origins always, more from ``OLLAMA_ORIGINS``.

Starlette's ``CORSMiddleware`` (pure ASGI; it only adds headers and answers
preflights, so streams are untouched) with the origin list built here.
Entries may be globs (``https://*.example.com``); ``*`` allows any origin.
"""

from __future__ import annotations

import re

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from vllama.settings import Settings

#: Ollama's defaults (envconfig.AllowedOrigins): local hosts on any port, and apps.
LOCAL_ORIGINS = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)


def _glob(pattern: str) -> str:
    return ".*".join(re.escape(part) for part in pattern.split("*"))


class OriginCORS(CORSMiddleware):
    """Starlette's CORS, entered only by requests that carry an ``Origin``.

    Starlette wraps ``send`` and rewrites the headers of every response, to add
    ``Vary: Origin`` even where no browser is involved. API clients (the SDKs,
    curl, other servers) send no ``Origin``, and for them that wrapping was a
    measurable share of the relay's cost; their answers never carry CORS
    headers, so they pass straight through.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(name == b"origin" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def cors_middleware(app: ASGIApp, settings: Settings) -> OriginCORS:
    origins = [*settings.cors_origins, *LOCAL_ORIGINS]
    if "*" in origins:
        exact, regex = ["*"], None
    else:
        exact = [o for o in origins if "*" not in o]
        regex = "|".join(_glob(o) for o in origins if "*" in o) or None
    return OriginCORS(
        app,
        allow_origins=exact,
        allow_origin_regex=regex,
        allow_methods=["*"],
        allow_headers=["*"],
        max_age=600,
    )
