"""What the config file says about backends and per-model routing.

Pure pydantic shapes, read by ``settings.py`` from the TOML file::

    [[backends]]
    name = "gpu-2"
    kind = "openai"            # managed | openai | ollama
    url = "http://10.0.0.12:8000"
    models = { "qwen2.5:7b" = "Qwen/Qwen2.5-7B-Instruct" }
    weight = 2
    role = "primary"           # primary | fallback
    max_concurrency = 64

    [model_routing."qwen2.5:7b"]
    affinity = "prefix"        # none | session | prefix
    max_queue = 128

The managed engine (or ``--engine-url``) is always the first primary backend,
named ``engine``; a ``kind = "managed"`` entry (no ``url``) only configures it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

BackendKind = Literal["managed", "openai", "ollama"]
Role = Literal["primary", "fallback"]
Affinity = Literal["none", "session", "prefix"]

#: The name of the implicit backend (the managed or attached engine).
ENGINE_BACKEND = "engine"
#: Each kind's health route, used when ``health_path`` is not given.
DEFAULT_HEALTH_PATH: dict[str, str] = {"managed": "/health", "openai": "/health", "ollama": "/"}


def engine_base_url(value: str | None) -> str | None:
    """An engine's base URL as given: http(s) only, without a trailing ``/`` or
    ``/v1`` (routes append their own ``/v1/...``); empty means none."""
    if value is None or value == "":
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/").removesuffix("/v1")


class BackendConfig(BaseModel):
    """One engine the gateway may send requests to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    kind: BackendKind = "openai"
    url: str | None = None
    api_key: SecretStr | None = None
    #: Gateway model name -> the backend's own name; a list means the same names;
    #: empty: every model, under the name the catalogue gives it.
    models: dict[str, str] = Field(default_factory=dict)
    weight: float = Field(default=1.0, gt=0)
    role: Role = "primary"
    max_concurrency: int | None = Field(default=None, ge=1)
    #: Route probed by the health checker; "" turns active checks off.
    health_path: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(name): str(name) for name in value}
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return engine_base_url(value)

    @model_validator(mode="after")
    def _where(self) -> BackendConfig:
        if self.kind == "managed" and self.url is not None:
            raise ValueError("a managed backend has no url (use --engine-url to attach)")
        if self.kind != "managed" and self.url is None:
            raise ValueError(f"backend {self.name!r} needs a url")
        return self

    @property
    def health_route(self) -> str:
        if self.health_path is not None:
            return self.health_path
        return DEFAULT_HEALTH_PATH[self.kind]


class ModelRouting(BaseModel):
    """How one model's requests are spread (``model_routing."*"`` is the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: session: the ``X-Session-Id`` header picks the backend; prefix: a hash of
    #: the leading messages does, so the engine's prefix cache gets hits.
    affinity: Affinity = "none"
    prefix_messages: int = Field(default=2, ge=1)
    #: Requests that may wait when every backend is at its max_concurrency.
    max_queue: int = Field(default=64, ge=0)
    queue_timeout: float = Field(default=30.0, gt=0)


def check_backends(backends: list[BackendConfig]) -> None:
    """Names unique (``engine`` only for the managed entry), one managed entry."""
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise ValueError("backend names must be unique")
    managed = [b for b in backends if b.kind == "managed"]
    if len(managed) > 1:
        raise ValueError("at most one managed backend")
    for backend in backends:
        if backend.kind != "managed" and backend.name == ENGINE_BACKEND:
            raise ValueError(f"{ENGINE_BACKEND!r} is the managed engine's name")
