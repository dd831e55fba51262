"""The auth middleware on the WebSocket handshake (no WebSocket route exists yet,
so a bare one stands in), and its refusals' shape, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from vllama.auth.principal import principal_of
from vllama.auth.service import AuthService
from vllama.server.middleware.auth import AuthMiddleware
from vllama.settings import SettingsError, load_settings


async def echo_identity(websocket: WebSocket) -> None:
    await websocket.accept()
    principal = principal_of(websocket.scope)
    await websocket.send_text(principal.id if principal else "-")
    await websocket.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[AuthService]:
    settings = load_settings(environ={"VLLAMA_HOME": str(tmp_path), "VLLAMA_AUTH": "on"})
    auth = AuthService(settings)
    await auth.start()
    yield auth
    await auth.stop()


async def test_websocket_handshake_needs_a_key(service: AuthService) -> None:
    record, secret = await service.create("ws")
    app = Starlette(
        routes=[WebSocketRoute("/api/ws", echo_identity)],
        middleware=[Middleware(AuthMiddleware, auth=service, settings=service.settings)],
    )
    with TestClient(app) as client:
        for headers in ({}, {"authorization": "Bearer vll-wrong"}):
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                client.websocket_connect("/api/ws", headers=headers),
            ):
                pass
            assert refused.value.code == 1008
        for headers in ({"authorization": f"Bearer {secret}"}, {"x-api-key": secret}):
            with client.websocket_connect("/api/ws", headers=headers) as ws:
                assert ws.receive_text() == record.id


def test_trusted_front_by_secret_or_address(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "VLLAMA_HOME": str(tmp_path),
            "VLLAMA_TRUSTED_FRONT_HEADER": "X-User",
            "VLLAMA_TRUSTED_FRONT_SECRET": "s" * 32,
            "VLLAMA_TRUSTED_FRONT_ADDRESSES": "10.0.0.0/8 ::1",
        }
    )
    assert settings.trusted_front_header == "x-user"
    auth = AuthService(settings)
    assert auth.front_trusted(None, "s" * 32)
    assert not auth.front_trusted("10.1.2.3", "wrong")  # a wrong secret is never excused
    assert auth.front_trusted("10.1.2.3", None)
    assert auth.front_trusted("::1", None)
    assert not auth.front_trusted("192.168.1.1", None)
    assert not auth.front_trusted(None, None)
    assert auth.front("alice").id == "front:alice"


def test_a_front_header_needs_a_way_to_trust_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="trusted_front_secret or trusted_front_addresses"):
        load_settings(environ={"VLLAMA_TRUSTED_FRONT_HEADER": "x-user"})
    with pytest.raises(SettingsError, match="admin_key"):
        load_settings(environ={"VLLAMA_ADMIN_KEY": "short"})


def test_cors_origins_from_ollama_origins_unless_vllama_says() -> None:
    settings = load_settings(environ={"OLLAMA_ORIGINS": "https://a.example, https://*.b.example"})
    assert settings.cors_origins == ["https://a.example", "https://*.b.example"]
    both = {"OLLAMA_ORIGINS": "https://a.example", "VLLAMA_CORS_ORIGINS": "https://c.example"}
    assert load_settings(environ=both).cors_origins == ["https://c.example"]
