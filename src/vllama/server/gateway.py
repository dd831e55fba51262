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
from vllama.engine.supervisor import Supervisor
from vllama.errors import EngineUnavailable
from vllama.metrics import Metrics
from vllama.models.catalog import Catalog, ServedModel
from vllama.models.manager import ModelManager
from vllama.routing.metrics import RouterCollector
from vllama.routing.router import Router
from vllama.server.fleet import Fleet, KeepAlive
from vllama.settings import Settings
from vllama.upstream.client import Upstream


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
    #: The managed engines and what each serves (keep_alive, LRU); None when attached.
    fleet: Fleet | None = field(init=False, default=None)

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
        if isinstance(self.engine, Supervisor):  # before adopt: the engine's own models
            self.fleet = Fleet(self.engine, self.router, self.catalog, self.keep_alive)
        self.router.adopt(self.catalog)
        self.metrics.registry.register(RouterCollector(self.router))

    def engine_url(self, path: str) -> str:
        return self.engine.base_url + path

    def require_ready(self, model: ServedModel | None = None) -> None:
        """503 + Retry-After while the engine (the one serving ``model``) is not ready."""
        engine = self.engine
        slot = self.fleet.slot_of(model) if self.fleet is not None and model else None
        if slot is not None:
            engine = slot.engine
        if not engine.is_ready:
            raise EngineUnavailable(
                f"engine is {engine.state}, try again shortly", retry_after=engine.retry_after()
            )


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
