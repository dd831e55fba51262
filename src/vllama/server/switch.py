"""Load and switch: a request for a model on disk that no engine serves loads it,
as Ollama loads a model on demand; ``keep_alive`` unloads it (``server/fleet.py``).
A LoRA adapter (``ADAPTER`` in a Modelfile) is served by vLLM's LoRA support: the
engine runs its base model with every adapter of that base (``--lora-modules``),
each answering under its own name.

Policy (``model_switch``):

- ``restart`` (the default): one engine, one model. A switch stops the engine
  (requests still running on the old model end with an error), points the
  supervisor at the new folder and starts it.
- ``add``: one more engine for the model (own process, port, key, router
  backend), up to ``max_loaded_models``; past that, the least recently used
  idle engine is stopped first. One with requests in flight is never stopped:
  if every engine is busy the request waits for one to finish.
- ``off``: 400 "on disk but not loaded".

An engine stopped by keep_alive keeps its models: a request for one starts it
again, whatever the policy. Loads are serialised (``Fleet.lock``); a request
whose model another request is already loading just waits. A request waits up
to ``model_load_wait`` seconds in all, then gets 503 with ``Retry-After`` while
the load goes on. Attach mode never loads: the engine is someone else's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

from vllama.engine.spec import EngineSpec, Kind, default_engine_python, vllm_spec
from vllama.engine.supervisor import EngineFailed, Supervisor
from vllama.errors import EngineUnavailable, ModelNotFound, VllamaError
from vllama.models.catalog import ModelNotLoaded, ServedModel
from vllama.models.store import LocalModel
from vllama.routing.breaker import Breaker
from vllama.server.fleet import GRACE, Fleet, Slot
from vllama.server.gateway import Gateway

log = logging.getLogger("vllama.switch")
#: The ranks vLLM accepts for --max-lora-rank.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Seconds between looks for an idle engine to unload when every one is busy.
BUSY_POLL = 0.2
#: Retry-After when every loaded engine is busy.
BUSY_RETRY_AFTER = 5


async def load_model(gw: Gateway, typed: str) -> ServedModel:
    """The served model for ``typed``, loading it (see the module docstring) when
    it is only on disk or its engine was unloaded."""
    fleet = gw.fleet
    deadline = time.monotonic() + gw.settings.model_load_wait
    slot: Slot | None = None
    try:
        model = gw.catalog.resolve(typed)
    except ModelNotLoaded:
        if fleet is None or gw.settings.model_switch == "off" or gw.models is None:
            raise
        local = gw.models.store.get(typed)
        if local is None:  # deleted meanwhile
            raise
        slot = await _place(gw, fleet, local, deadline)
        await _wait_ready(gw, slot, local.name, deadline)
        model = gw.catalog.resolve(typed)
    else:
        slot = fleet.slot_of(model) if fleet is not None else None
        if fleet is not None and slot is not None and not slot.loaded:
            slot = await _place(gw, fleet, slot, deadline)
        if slot is not None and slot.loading:
            await _wait_ready(gw, slot, model.name, deadline)
    if fleet is not None and slot is not None:
        fleet.used(slot)
    gw.keep_alive.touch(model.name, gw.keep_alive.default_seconds)
    return model


async def wait_loaded(gw: Gateway, model: ServedModel) -> None:
    """Ollama's load shortcut (nothing to generate): return once the engine serving
    ``model`` is ready, waiting up to ``model_load_wait`` (then 503)."""
    slot = gw.fleet.slot_of(model) if gw.fleet is not None else None
    if slot is None:
        gw.require_ready(model)
        return
    await _wait_ready(gw, slot, model.name, time.monotonic() + gw.settings.model_load_wait)


def find_model(gw: Gateway, typed: str) -> ServedModel:
    """The model ``typed`` names, loaded or only on disk, without loading it."""
    found = gw.catalog.find(typed)
    if found is None and gw.models is not None:
        local = gw.models.store.get(typed)
        if local is not None:
            found = ServedModel(name=local.name, served_name=local.name, local=local)
    if found is None:
        raise ModelNotFound(typed)
    return found


async def unload_model(gw: Gateway, model: ServedModel) -> None:
    """Ollama's unload (``keep_alive: 0`` with nothing to generate): stop the engine
    serving ``model`` now, or, while requests are in flight or waiting for it to
    start, once they are over (the reaper, since keep_alive is now 0)."""
    gw.keep_alive.touch(model.name, 0)
    fleet = gw.fleet
    slot = fleet.slot_of(model) if fleet is not None else None
    if fleet is None or slot is None or not slot.loaded:
        return
    async with fleet.lock:
        if slot.idle:
            await fleet.unload(slot, "keep_alive 0")


# -- choosing where a model goes ------------------------------------------------------
async def _place(gw: Gateway, fleet: Fleet, what: LocalModel | Slot, deadline: float) -> Slot:
    """Start an engine for ``what`` (a model on disk, or a slot whose engine was
    unloaded), making room first; wait for room while every engine is busy."""
    name = what.name if isinstance(what, LocalModel) else what.models[0].name
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                await fleet.lock.acquire()
        except TimeoutError:
            raise _busy(fleet, name) from None
        try:
            slot = await _start_locked(gw, fleet, what)
        finally:
            fleet.lock.release()
        if slot is not None:
            return slot
        if deadline - time.monotonic() <= 0:
            raise _busy(fleet, name)
        await asyncio.sleep(BUSY_POLL)


async def _start_locked(gw: Gateway, fleet: Fleet, what: LocalModel | Slot) -> Slot | None:
    """Under the fleet lock: the slot now starting for ``what``, None if no room yet."""
    if isinstance(what, LocalModel):
        found = gw.catalog.find(what.name)
        joined = fleet.slot_of(found) if found is not None else None
        if joined is not None and joined.loaded:
            return joined  # another request loaded it while we waited
        if joined is not None:
            what = joined
    elif what.loaded:
        return what
    name = what.name if isinstance(what, LocalModel) else what.models[0].name
    room = await _room(gw, fleet, what if isinstance(what, Slot) else None, name)
    if room is None:
        return None
    if isinstance(what, LocalModel):
        models = _models_of(gw, what)
        if room == "new":
            engine = Supervisor(_spec(gw, models, len(fleet.slots)))
            slot = fleet.add_slot(engine, _breaker(gw))
        else:
            slot = room
            slot.engine.spec = _spec(gw, models, fleet.slots.index(slot))
        fleet.assign(slot, models)
    else:
        assert room != "new"
        slot = room
    log.info("loading %s on %s", ", ".join(m.name for m in slot.models), slot.backend.name)
    slot.loading = True
    await slot.engine.start()
    return slot


async def _room(
    gw: Gateway, fleet: Fleet, target: Slot | None, name: str
) -> Slot | Literal["new"] | None:
    """Where to start ``name``: ``target`` itself, a free slot, a new one, or one
    emptied by unloading the least recently used idle engine; None: all busy."""
    primary = fleet.slots[0]
    if gw.settings.model_switch != "add":
        if target is not None:
            return target
        if primary.loaded:
            served = ", ".join(m.name for m in primary.models)
            log.info("loading %s: restarting the engine (was serving %s)", name, served)
            await primary.engine.stop()
        return primary
    loaded = [s for s in fleet.loaded() if s is not target]
    if len(loaded) < gw.settings.max_loaded_models:
        if target is not None:
            return target
        free = [s for s in fleet.slots if not s.loaded]
        return free[0] if free else "new"
    now = time.time()
    idle = [s for s in loaded if s.idle and now - s.since() >= GRACE]
    if not idle:
        return None
    victim = min(idle, key=lambda s: s.since())
    await fleet.unload(victim, f"room for another model, max_loaded_models={len(loaded)}")
    return target if target is not None else victim


def _models_of(gw: Gateway, local: LocalModel) -> list[ServedModel]:
    """What one engine serves for ``local``: its base model and every adapter of it."""
    assert gw.models is not None
    store = gw.models.store
    base = store.get(local.adapter_of) if local.adapter_of else local
    if base is None:
        raise ModelNotFound(local.adapter_of)
    adapters = store.adapters_of(base.name)
    return [ServedModel(name=m.name, served_name=m.name, local=m) for m in [base, *adapters]]


def _spec(gw: Gateway, models: list[ServedModel], index: int) -> EngineSpec:
    base, adapters = models[0], [m.local for m in models[1:] if m.local is not None]
    assert base.local is not None
    kind: Kind = "gpu" if gw.device == "gpu" else "cpu"
    spec = vllm_spec(
        gw.settings,
        kind=kind,
        python=default_engine_python(gw.settings, kind),
        model=str(base.local.path),
        served_name=base.name,
        extra=index > 0,
        log_name="engine.log" if index == 0 else f"engine-{index + 1}.log",
    )
    return replace(spec, argv=[*spec.argv, *lora_args(adapters)])


def _breaker(gw: Gateway) -> Breaker:
    return Breaker(gw.settings.breaker_failures, gw.settings.breaker_cooldown)


def _busy(fleet: Fleet, name: str) -> EngineUnavailable:
    count = len(fleet.loaded())
    return EngineUnavailable(
        f"model '{name}' cannot be loaded now: the {count} loaded model(s) are busy "
        "(max_loaded_models), try again shortly",
        retry_after=BUSY_RETRY_AFTER,
    )


def lora_args(adapters: list[LocalModel]) -> list[str]:
    """vLLM's flags serving ``adapters`` as models of their own (vLLM's LoRA support)."""
    if not adapters:
        return []
    ranks = [_rank(a.path) for a in adapters]
    rank = next((r for r in LORA_RANKS if r >= max(ranks)), LORA_RANKS[-1])
    argv = ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", str(rank)]
    return [*argv, "--lora-modules", *(f"{a.name}={a.path}" for a in adapters)]


def _rank(folder: Path) -> int:
    try:
        rank = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError):
        return 16
    return int(rank) if isinstance(rank, int) and rank > 0 else 16


async def _wait_ready(gw: Gateway, slot: Slot, name: str, deadline: float) -> None:
    engine = slot.engine
    try:
        await engine.wait_ready(max(deadline - time.monotonic(), 0.0))
    except TimeoutError as exc:
        raise EngineUnavailable(
            f"model '{name}' is loading, try again shortly", retry_after=engine.retry_after()
        ) from exc
    except EngineFailed as exc:
        slot.loading = False
        raise EngineUnavailable(
            f"model '{name}' failed to load: {str(exc).splitlines()[0]}",
            retry_after=engine.retry_after(),
        ) from exc
    if slot.loading:
        slot.loading = False
        await _learn_lengths(gw, slot)


async def _learn_lengths(gw: Gateway, slot: Slot) -> None:
    """The context lengths the new engine reports, for /api/show and /api/ps."""
    try:
        listing = await gw.upstream.json(
            "GET", slot.engine.base_url + "/v1/models", api_key=slot.engine.api_key
        )
    except VllamaError as err:
        log.warning("could not list %s's models: %s", slot.backend.name, err.message)
        return
    gw.catalog.update_from_engine(listing)
