"""The managed engines and the models loaded in them: keep_alive and LRU eviction.

Ollama unloads a model ``keep_alive`` after its last request and keeps at most
``OLLAMA_MAX_LOADED_MODELS`` loaded. Here a loaded model is a running vLLM
engine (a ``Supervisor``) serving it, plus its LoRA adapters, so:

- a *slot* is one managed engine, its router backend and the models it serves.
  Slot 0 is the engine ``vllama serve`` starts (router backend ``engine``);
  ``model_switch = add`` makes more (``engine-2``, ...), each with its own
  process, port, internal key and log file.
- unloading a model stops its engine; the slot stays, with its models, so the
  next request for them starts it again (``server/switch.py``).
- an engine is idle when its backend has no request in flight. The reaper
  (one task, owned by the app's lifespan) stops an idle engine once every model
  it serves has expired; a busy engine never expires, whatever keep_alive says.

Expiry follows Ollama: the last request's ``keep_alive`` (or the default) counts
from the later of that request and the moment the engine was last busy, or
ready. All loads and unloads hold ``lock``, so the count of loaded engines and
the choice of what to evict never race.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from vllama.engine.state import EngineState
from vllama.engine.supervisor import Supervisor
from vllama.models.catalog import Catalog, ServedModel
from vllama.models.names import normalize
from vllama.protocol.ollama import parse_keep_alive
from vllama.routing.backend import Backend
from vllama.routing.breaker import Breaker
from vllama.routing.config import BackendConfig
from vllama.routing.router import Router

log = logging.getLogger("vllama.switch")

#: What Ollama shows for "kept forever": Go's zero-ish far future.
FOREVER_SECONDS = 292 * 365 * 24 * 3600
#: An engine is never unloaded sooner than this after it was last used or became
#: ready: a request between ``load_model`` and its backend lease is not yet "in
#: flight", and must not see its engine stopped under it.
GRACE = 1.0
#: How often the reaper looks (keep_alive 0 unloads within this of the last answer).
REAP_INTERVAL = 0.25
#: States in which an engine holds (or is about to hold) its model in memory.
_UP = frozenset({EngineState.STARTING, EngineState.READY, EngineState.RESTARTING})


@dataclass
class KeepAlive:
    """Each model's last ``keep_alive`` and when it was given (wall clock).

    ``None`` seconds means forever. A model never touched has the default,
    counted from when its engine became ready."""

    default_seconds: float | None
    _last: dict[str, tuple[float | None, float]] = field(default_factory=dict)

    def requested(self, value: object) -> float | None:
        """A request's ``keep_alive`` in seconds; absent or null is the default,
        parsed once at start rather than on every request."""
        return self.default_seconds if value is None else parse_keep_alive(value, "")

    def touch(self, name: str, seconds: float | None, *, now: float | None = None) -> None:
        self._last[normalize(name)] = (seconds, time.time() if now is None else now)

    def last(self, name: str) -> tuple[float | None, float] | None:
        return self._last.get(normalize(name))

    def expires_at(self, name: str, *, since: float | None = None) -> float:
        """When ``name`` expires: from its last touch, or from ``since`` (else now)."""
        found = self.last(name)
        seconds, touched = found if found is not None else (self.default_seconds, 0.0)
        start = max(touched, since if since is not None else 0.0)
        if found is None and since is None:
            start = time.time()
        return start + (FOREVER_SECONDS if seconds is None else seconds)


@dataclass(eq=False)
class Slot:
    """One managed engine, its backend, and the models it serves (base first)."""

    engine: Supervisor
    backend: Backend
    models: list[ServedModel]
    #: Wall clock of the last time the engine had a request in flight (or was used).
    active_at: float = 0.0
    #: Started by a request (server/switch.py) that has not seen it ready yet.
    loading: bool = False

    @property
    def loaded(self) -> bool:
        return self.engine.state in _UP

    @property
    def busy(self) -> bool:
        return self.backend.outstanding > 0

    @property
    def idle(self) -> bool:
        """Ready, and nobody uses it nor waits for it (a starting engine has
        waiters): the only state in which an engine may be stopped to unload."""
        return self.engine.state is EngineState.READY and not self.busy and not self.loading

    def serves(self, model: ServedModel) -> bool:
        wanted = normalize(model.served_name)
        return any(normalize(m.served_name) == wanted for m in self.models)

    def since(self) -> float:
        """What expiry counts from, besides each model's last request."""
        return max(self.active_at, self.engine.ready_since or 0.0)

    def expires_at(self, keep: KeepAlive) -> float:
        """When the engine may be stopped: when its last model expires."""
        since = self.since()
        return max(keep.expires_at(m.name, since=since) for m in self.models)


class Fleet:
    """The slots of a managed gateway; see the module docstring."""

    def __init__(
        self, primary: Supervisor, router: Router, catalog: Catalog, keep_alive: KeepAlive
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.keep_alive = keep_alive
        #: Slot 0: the engine `vllama serve` starts, serving what the catalogue holds now
        #: (build the fleet before the router adopts other backends' names into it).
        self.slots = [Slot(primary, router.engine_backend, list(catalog.all()))]
        self.lock = asyncio.Lock()

    # -- lookups ---------------------------------------------------------------
    def slot_of(self, model: ServedModel) -> Slot | None:
        return next((s for s in self.slots if s.serves(model)), None)

    def loaded(self) -> list[Slot]:
        return [s for s in self.slots if s.loaded]

    def used(self, slot: Slot) -> None:
        slot.active_at = time.time()

    def loaded_models(self) -> list[ServedModel]:
        return [m for s in self.loaded() for m in s.models]

    def forget(self, name: str) -> None:
        """``name`` was deleted: no stopped engine may load it again (its adapters
        go too when it is their base)."""
        gone = normalize(name)
        for slot in self.slots:
            if slot.loaded or not any(normalize(m.name) == gone for m in slot.models):
                continue
            base = slot.models[0]
            slot.models = (
                []
                if normalize(base.name) == gone
                else [m for m in slot.models if normalize(m.name) != gone]
            )
        self.publish()

    # -- changing what is loaded (callers hold ``lock``) ---------------------------
    def add_slot(self, engine: Supervisor, breaker: Breaker) -> Slot:
        """A new engine, registered as a router backend serving nothing yet."""
        name = f"engine-{len(self.slots) + 1}"
        backend = Backend(BackendConfig(name=name, kind="managed"), breaker, engine=engine)
        slot = Slot(engine, backend, [])
        self.slots.append(slot)
        self.router.backends.append(backend)
        return slot

    def assign(self, slot: Slot, models: list[ServedModel]) -> None:
        """Make ``slot`` serve ``models`` (its engine is stopped or about to start)."""
        slot.models = models
        self.publish()

    def publish(self) -> None:
        """Tell the catalogue and the router which engine serves which name.

        The catalogue keeps every slot's models, loaded or not (so an unloaded
        one is loaded again on request), plus the names only configured backends
        serve; extra engines serve exactly their models (a backend mapping); the
        first engine serves what no other engine claims."""
        own = {s.backend for s in self.slots}
        configured = {
            normalize(name)
            for b in self.router.backends
            if b not in own
            for name in b.config.models
        }
        known = {m.served_name: m for m in self.catalog.all()}
        models: list[ServedModel] = []
        for slot in self.slots:
            for model in slot.models:
                current = known.get(model.served_name)
                length = current.max_model_len if current is not None else None
                models.append(model if length is None else _with_length(model, length))
        mine = {normalize(m.name) for m in models}
        models += [
            m
            for m in self.catalog.all()
            if normalize(m.name) in configured and normalize(m.name) not in mine
        ]
        self.catalog.replace(models)
        for slot in self.slots[1:]:
            mapping = {m.name: m.served_name for m in slot.models}
            slot.backend.config = slot.backend.config.model_copy(update={"models": mapping})
            slot.backend.mapping = {normalize(k): v for k, v in mapping.items()}
        others = {normalize(m.name) for s in self.slots[1:] for m in s.models}
        others |= {normalize(m.served_name) for s in self.slots[1:] for m in s.models}
        first = {normalize(m.served_name) for m in self.slots[0].models}
        first |= {normalize(m.name) for m in self.slots[0].models}
        self.router.engine_backend.elsewhere = frozenset((configured | others) - first)

    async def unload(self, slot: Slot, why: str) -> None:
        names = ", ".join(m.name for m in slot.models) or "nothing"
        log.info("unloading %s (%s): stopping %s", names, why, slot.backend.name)
        await slot.engine.stop()

    # -- keep_alive ----------------------------------------------------------------
    def expired(self, slot: Slot, now: float) -> bool:
        if not slot.models or not slot.idle:
            return False
        since = slot.since()
        return now >= max(slot.expires_at(self.keep_alive), since + GRACE)

    async def reap(self) -> None:
        """One pass: note busy engines, stop the idle ones whose models all expired."""
        now = time.time()
        for slot in self.slots:
            if slot.busy:
                slot.active_at = now
        for slot in self.slots:
            if not self.expired(slot, now):
                continue
            async with self.lock:
                if self.expired(slot, time.time()):  # a request may have come meanwhile
                    await self.unload(slot, "keep_alive expired")

    async def run(self) -> None:
        """The reaper: runs until cancelled (by the lifespan)."""
        while True:
            try:
                await self.reap()
            except Exception:  # a bug here must not end keep_alive for good
                log.exception("keep_alive pass failed")
            await asyncio.sleep(REAP_INTERVAL)

    async def close(self) -> None:
        """At shutdown: stop the extra engines (the lifespan stops the first)."""
        stops = [slot.engine.stop() for slot in self.slots[1:]]
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("stopping an engine failed: %r", result)


def _with_length(model: ServedModel, length: int) -> ServedModel:
    return replace(model, max_model_len=model.max_model_len or length)
