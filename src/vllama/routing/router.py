"""Picking a backend for a request, and failing over before the first byte.

A route hands the router an *attempt*: a coroutine that, for one backend and
the backend's own model name, sends the request and waits for the first thing
worth committing to (a status and the first chunk). The router tries backends
in balance order (``balance.order``); an attempt that fails before that point
(connection refused, no first byte in time, a 5xx status) counts against the
backend's breaker and the next backend is tried; a 404 saying the model is not
there (``fails_over``) moves on too, without blaming the backend, and only the
last backend's 404 reaches the client. Once an attempt returns, the
router is done: whatever goes wrong later is the stream's, reported in-band,
never retried, so no generation is ever duplicated after bytes were sent.

The caller gets the attempt's result and a ``Lease`` on the backend's
outstanding-request counter, which it releases when the answer is over (a
stream releases it when it ends or the client leaves).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from vllama.auth.principal import principal_of
from vllama.engine.handle import EngineHandle
from vllama.errors import (
    EngineUnavailable,
    ModelNotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    VllamaError,
)
from vllama.models.catalog import Catalog, ServedModel
from vllama.models.names import normalize
from vllama.routing.admission import Admission, ServerBusy
from vllama.routing.backend import Backend
from vllama.routing.balance import affinity_key, order
from vllama.routing.breaker import Breaker
from vllama.routing.config import ENGINE_BACKEND, BackendConfig, ModelRouting

log = logging.getLogger("vllama.routing")

T = TypeVar("T")
Attempt = Callable[[Backend, str, "Lease"], Awaitable[T]]

#: The header (and metric label) naming the backend that served an answer.
BACKEND_HEADER = "x-vllama-backend"
#: The header that pins a conversation to a backend under session affinity.
SESSION_HEADER = b"x-session-id"


class Failover(Exception):
    """Raised by an attempt: this backend failed before the first byte.

    ``answer`` is what the client gets if no backend is left to try (e.g. the
    engine's own 5xx, relayed); without it, ``error`` is raised.
    """

    def __init__(self, error: VllamaError, answer: object | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.answer = answer


def retryable(err: VllamaError) -> bool:
    """Failures that say nothing about the request, only about the backend."""
    if isinstance(err, UpstreamUnreachable | UpstreamTimeout):
        return True
    return isinstance(err, UpstreamError) and err.status >= 500


def model_missing(status: int, message: str) -> bool:
    """A 404 saying the backend lacks the model (vLLM: "The model `x` does not
    exist", Ollama: "model 'x' not found"): another backend may have it."""
    text = message.lower()
    return status == 404 and "model" in text and ("not found" in text or "does not exist" in text)


def fails_over(status: int, message: str) -> bool:
    """An error status, before the first byte, that sends the request on to the
    next backend: a 5xx, or the model missing there. Other 4xx are the client's."""
    return status >= 500 or model_missing(status, message)


def _passed_over(err: VllamaError) -> bool:
    """An error raised by an attempt that another backend may not give."""
    return retryable(err) or (
        isinstance(err, UpstreamError) and model_missing(err.status, err.message)
    )


class Lease:
    """One request's hold on a backend's outstanding counter; release is idempotent."""

    __slots__ = ("_router", "backend", "released")

    def __init__(self, router: Router, backend: Backend) -> None:
        self._router = router
        self.backend = backend
        self.released = False
        backend.outstanding += 1

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.backend.outstanding -= 1
        self._router.freed()


class Router:
    def __init__(
        self,
        backends: list[Backend],
        policies: dict[str, ModelRouting] | None = None,
    ) -> None:
        self.backends = backends
        self._policies = {
            (name if name == "*" else normalize(name)): policy
            for name, policy in (policies or {}).items()
        }
        self._default = self._policies.get("*", ModelRouting())
        self._queues: dict[str, Admission] = {}
        self._seq = 0

    @classmethod
    def build(
        cls,
        engine: EngineHandle,
        configs: Iterable[BackendConfig],
        policies: dict[str, ModelRouting],
        *,
        breaker_failures: int,
        breaker_cooldown: float,
    ) -> Router:
        """The engine first (configured by a ``managed`` entry if there is one), then the rest."""
        configs = list(configs)
        managed = next((c for c in configs if c.kind == "managed"), None)
        if managed is None:
            managed = BackendConfig(name=ENGINE_BACKEND, kind="managed")
        backends = [Backend(managed, Breaker(breaker_failures, breaker_cooldown), engine=engine)]
        backends += [
            Backend(c, Breaker(breaker_failures, breaker_cooldown))
            for c in configs
            if c.kind != "managed"
        ]
        return cls(backends, policies)

    @property
    def engine_backend(self) -> Backend:
        return self.backends[0]

    @property
    def queues(self) -> dict[str, Admission]:
        return self._queues

    def policy(self, model: ServedModel) -> ModelRouting:
        return self._policies.get(normalize(model.name), self._default)

    def key_for(
        self, model: ServedModel, scope: Mapping[str, Any], body: dict[str, Any] | None
    ) -> bytes | None:
        """The affinity key of a request (None: balance freely); free when the
        model's policy has no affinity."""
        policy = self.policy(model)
        if policy.affinity == "none":
            return None
        session = None
        if policy.affinity == "session":
            for name, value in scope.get("headers", ()):
                if name == SESSION_HEADER:
                    session = value.decode("latin-1")
                    break
            else:  # no header: the caller's API key is the session
                principal = principal_of(scope)
                if principal is not None and principal.id != "anonymous":
                    session = "key:" + principal.id
        return affinity_key(policy, session, body)

    def adopt(self, catalog: Catalog, listing: dict[str, Any] | None = None) -> None:
        """Make the models only other backends serve known to the catalogue, and
        tell the engine backend which names are not its own.

        ``listing`` is the engine's ``/v1/models`` answer once it has one; before
        that, the catalogue's models are taken as the engine's.
        """
        extra: dict[str, str] = {}
        for backend in self.backends[1:]:
            for name in backend.config.models:
                extra.setdefault(normalize(name), name)
        if not extra:
            return
        engine = self.engine_backend.engine
        if listing is not None:
            data = [m for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]
            own = {normalize(str(m["id"])) for m in data}
            self.engine_backend.elsewhere = frozenset(extra.keys() - own)
        elif engine is None or engine.state != "attached":  # managed: the catalogue says
            own = {normalize(m.name) for m in catalog.all()}
            own |= {normalize(m.served_name) for m in catalog.all()}
            self.engine_backend.elsewhere = frozenset(extra.keys() - own)
        # (attached and not yet listed: assume it serves everything asked of it)
        missing = [
            ServedModel(name=name, served_name=name)
            for name in extra.values()
            if catalog.find(name) is None
        ]
        if missing:
            catalog.replace([*catalog.all(), *missing])

    def freed(self) -> None:
        """A lease ended: a waiting request may find room now."""
        for queue in self._queues.values():
            if queue.waiters:
                queue.wake()

    def _queue(self, model: ServedModel, policy: ModelRouting) -> Admission:
        key = normalize(model.name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = Admission(policy.max_queue, policy.queue_timeout)
        return queue

    async def route(
        self,
        model: ServedModel,
        attempt: Attempt[T],
        *,
        key: bytes | None = None,
        native_ok: bool = True,
    ) -> tuple[T, Lease]:
        """Run ``attempt`` on backends in order until one commits; see the module doc."""
        serving: dict[str, str] = {}
        candidates: list[Backend] = []
        for backend in self.backends:
            name = backend.target(model)
            if name is not None and (native_ok or not backend.native_ollama):
                serving[backend.name] = name
                candidates.append(backend)
        if not candidates:
            raise ModelNotFound(model.name)
        room = await self._room(model, candidates)
        last: Failover | None = None
        for backend in order(room, key):
            if backend.saturated:  # filled while an earlier attempt was failing
                continue
            self._seq += 1
            backend.last_pick = self._seq
            lease = Lease(self, backend)
            backend.breaker.begin()
            try:
                result = await attempt(backend, serving[backend.name], lease)
            except Failover as exc:
                last = self._failed(backend, lease, exc)
                continue
            except VllamaError as err:
                if _passed_over(err):
                    last = self._failed(backend, lease, Failover(err))
                    continue
                backend.breaker.success()  # it answered, if only to refuse
                lease.release()
                raise
            except BaseException:
                backend.breaker.abandon()
                lease.release()
                raise
            backend.breaker.success()
            backend.served += 1
            return result, lease
        if last is None:
            raise ServerBusy()
        if last.answer is None:
            raise last.error
        lease = Lease(self, self.backends[0])
        lease.release()
        return cast(T, last.answer), lease

    def _failed(self, backend: Backend, lease: Lease, exc: Failover) -> Failover:
        """Pass ``backend`` over; only a fault of its own (not a missing model,
        which it answered properly) counts against its breaker."""
        lease.release()
        if not retryable(exc.error):
            backend.breaker.success()
            log.info("backend %s passed over: %s", backend.name, exc.error)
            return exc
        backend.failures += 1
        backend.breaker.failure()
        log.warning("backend %s failed before the first byte: %s", backend.name, exc.error)
        return exc

    async def _room(self, model: ServedModel, candidates: list[Backend]) -> list[Backend]:
        """Backends that can take the request now, waiting in the model's queue
        while all of them are at their max concurrency."""
        again = False
        while True:
            ready = [b for b in candidates if b.available]
            room = [b for b in ready if not b.saturated]
            if room:
                return room
            if ready:
                await self._queue(model, self.policy(model)).wait(again=again)
                again = True
                continue
            # None healthy: rather than refuse, try those whose engine is up
            # (an open breaker or a failed check may be out of date).
            room = [b for b in candidates if b.engine_ready and not b.saturated]
            if room:
                return room
            raise self._unavailable(model, candidates)

    def _unavailable(self, model: ServedModel, candidates: list[Backend]) -> EngineUnavailable:
        engine = self.engine_backend.engine
        if engine is not None and candidates == [self.engine_backend]:
            return EngineUnavailable(
                f"engine is {engine.state}, try again shortly", retry_after=engine.retry_after()
            )
        return EngineUnavailable(f"no backend available for model '{model.name}'", retry_after=1)
