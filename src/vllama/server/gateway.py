"""The services every route needs, built once by the composition root.

Routes reach them through ``request.app.state.gateway``; nothing lives at
module level, so two apps (or two tests) never share state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from vllama.auth.service import AuthService
from vllama.engine.handle import EngineHandle
from vllama.errors import EngineUnavailable
from vllama.metrics import Metrics
from vllama.models.catalog import Catalog
from vllama.models.manager import ModelManager
from vllama.routing.metrics import RouterCollector
from vllama.routing.router import Router
from vllama.settings import Settings
from vllama.upstream.client import Upstream

#: What Ollama shows for "kept forever": Go's zero-ish far future.
FOREVER_SECONDS = 292 * 365 * 24 * 3600


@dataclass
class KeepAlive:
    """When each model would expire under Ollama's keep_alive rules.

    The engine is shared and long-lived, so expiry is reported (``/api/ps``),
    not acted on.
    """

    default_seconds: float | None
    _expires: dict[str, float] = field(default_factory=dict)

    def touch(self, name: str, seconds: float | None, *, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        self._expires[name] = moment + (FOREVER_SECONDS if seconds is None else seconds)

    def expires_at(self, name: str) -> float:
        found = self._expires.get(name)
        if found is not None:
            return found
        seconds = self.default_seconds
        return time.time() + (FOREVER_SECONDS if seconds is None else seconds)


@dataclass
class Gateway:
    settings: Settings
    engine: EngineHandle
    upstream: Upstream
    catalog: Catalog
    keep_alive: KeepAlive
    device: str = "cpu"
    started_at: float = field(default_factory=time.time)
    models: ModelManager | None = None  #: model management (pull, create, ...); None: off
    metrics: Metrics = field(init=False)
    auth: AuthService = field(init=False)
    router: Router = field(init=False)  #: the backends: the engine first, then the config's

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine)
        self.auth = AuthService(self.settings)
        settings = self.settings
        self.router = Router.build(
            self.engine,
            settings.backends,
            settings.model_routing,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown=settings.breaker_cooldown,
        )
        self.router.adopt(self.catalog)
        self.metrics.registry.register(RouterCollector(self.router))

    def engine_url(self, path: str) -> str:
        return self.engine.base_url + path

    def require_ready(self) -> None:
        """Model routes call this first: 503 + Retry-After while the engine is not ready."""
        if not self.engine.is_ready:
            raise EngineUnavailable(
                f"engine is {self.engine.state}, try again shortly",
                retry_after=self.engine.retry_after(),
            )


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
