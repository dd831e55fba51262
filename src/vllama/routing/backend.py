"""A backend at run time: where it is, what it serves, how busy it is.

The counters are plain ints touched only on the event loop, between awaits,
so the hot path takes no lock. The implicit backend (``engine``) wraps the
``EngineHandle``: its URL and key follow the supervisor across restarts, and it
is available exactly when the engine is ready.
"""

from __future__ import annotations

from vllama.engine.handle import EngineHandle
from vllama.models.catalog import ServedModel
from vllama.models.names import normalize
from vllama.routing.breaker import Breaker
from vllama.routing.config import BackendConfig, BackendKind


class Backend:
    def __init__(
        self,
        config: BackendConfig,
        breaker: Breaker,
        *,
        engine: EngineHandle | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.kind: BackendKind = config.kind
        self.role = config.role
        self.weight = config.weight
        self.max_concurrency = config.max_concurrency
        self.breaker = breaker
        self.engine = engine
        self.mapping = {normalize(k): v for k, v in config.models.items()}
        self.outstanding = 0
        self.served = 0  #: requests it answered (committed to)
        self.failures = 0  #: failures before the first byte
        self.healthy = True  #: the last active health check's verdict
        self.checked = False  #: an active check has given a verdict
        self.last_pick = 0  #: a sequence number: ties go to the least recently picked
        #: Implicit backend only: names it does not serve (only other backends list them).
        self.elsewhere: frozenset[str] = frozenset()

    @property
    def base_url(self) -> str:
        if self.engine is not None:
            return self.engine.base_url
        assert self.config.url is not None
        return self.config.url

    @property
    def api_key(self) -> str | None:
        if self.engine is not None:
            return self.engine.api_key
        key = self.config.api_key
        return key.get_secret_value() if key is not None else None

    @property
    def native_ollama(self) -> bool:
        return self.kind == "ollama"

    @property
    def engine_ready(self) -> bool:
        return self.engine is None or self.engine.is_ready

    @property
    def available(self) -> bool:
        """May get traffic: engine ready, last health check passed, breaker lets it."""
        return self.engine_ready and self.healthy and self.breaker.ready()

    @property
    def actively_checked(self) -> bool:
        """Probed by the health checker: all but a managed engine (its supervisor
        polls it) and those whose ``health_path`` is ``""``."""
        attached = self.engine is None or self.engine.state == "attached"
        return attached and bool(self.config.health_route)

    @property
    def up(self) -> bool:
        """Available, and known to be: where there are active checks, one has
        passed (routing is optimistic before the first check; readiness is not)."""
        return self.available and (self.checked or not self.actively_checked)

    @property
    def on_demand(self) -> bool:
        """A managed engine stopped on purpose (its models unloaded after their
        keep_alive): the next request for them starts it again."""
        return self.engine is not None and self.engine.state == "stopped"

    @property
    def saturated(self) -> bool:
        return self.max_concurrency is not None and self.outstanding >= self.max_concurrency

    def target(self, model: ServedModel) -> str | None:
        """The backend's own name for ``model``; None when it does not serve it."""
        if self.mapping:
            for name in (model.name, model.served_name):
                found = self.mapping.get(normalize(name))
                if found is not None:
                    return found
            return None
        if self.engine is not None and normalize(model.name) in self.elsewhere:
            return None
        return model.served_name
