"""Load and switch: a request for a model on disk that the engine does not serve
restarts the managed engine with that model, as Ollama loads a model on demand.
A LoRA adapter (``ADAPTER`` in a Modelfile) is served by vLLM's LoRA support: the
engine runs its base model with every adapter of that base (``--lora-modules``),
each answering under its own name.

Policy (``model_switch``): ``restart`` (the default) or ``off`` (400, "on disk but
not loaded"). One engine, one model: a switch stops the engine (requests still
running on the old model end with an error), points the supervisor at the new
folder and starts it. Switches are serialised; a request whose model another
request is already loading just waits. A request waits for the engine up to
``model_load_wait`` seconds, then gets 503 with ``Retry-After`` while the load
goes on. Attach mode never switches: the engine is someone else's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from vllama.engine.spec import Kind, default_engine_python, vllm_spec
from vllama.engine.supervisor import EngineFailed, Supervisor
from vllama.errors import EngineUnavailable, ModelNotFound
from vllama.models.catalog import ModelNotLoaded, ServedModel
from vllama.models.store import LocalModel
from vllama.server.gateway import Gateway

log = logging.getLogger("vllama.switch")
#: The ranks vLLM accepts for --max-lora-rank.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


async def load_model(gw: Gateway, typed: str) -> ServedModel:
    """The served model for ``typed``, switching the engine to it when it is only on disk."""
    try:
        return gw.catalog.resolve(typed)
    except ModelNotLoaded:
        engine = gw.engine
        if gw.settings.model_switch == "off" or gw.models is None:
            raise
        if not isinstance(engine, Supervisor):
            raise
        local = gw.models.store.get(typed)
        if local is None:  # deleted meanwhile
            raise
    await _switch(gw, engine, local)
    await _wait_ready(gw, engine, local.name)
    return gw.catalog.resolve(typed)


async def _switch(gw: Gateway, engine: Supervisor, local: LocalModel) -> None:
    assert gw.models is not None
    store = gw.models.store
    async with gw.models.switch_lock:
        if gw.catalog.find(local.name) is not None:
            return  # another request switched to it while we waited
        base = store.get(local.adapter_of) if local.adapter_of else local
        if base is None:
            raise ModelNotFound(local.adapter_of)
        adapters = store.adapters_of(base.name)
        served = ", ".join(m.name for m in gw.catalog.all())
        log.info("loading %s: restarting the engine (was serving %s)", local.name, served)
        await engine.stop()
        kind: Kind = "gpu" if gw.device == "gpu" else "cpu"
        spec = vllm_spec(
            gw.settings,
            kind=kind,
            python=default_engine_python(gw.settings, kind),
            model=str(base.path),
            served_name=base.name,
        )
        engine.spec = replace(spec, argv=[*spec.argv, *lora_args(adapters)])
        gw.catalog.replace(
            [ServedModel(name=m.name, served_name=m.name, local=m) for m in [base, *adapters]]
        )
        await engine.start()


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


async def _wait_ready(gw: Gateway, engine: Supervisor, name: str) -> None:
    try:
        await engine.wait_ready(gw.settings.model_load_wait)
    except TimeoutError as exc:
        raise EngineUnavailable(
            f"model '{name}' is loading, try again shortly", retry_after=engine.retry_after()
        ) from exc
    except EngineFailed as exc:
        raise EngineUnavailable(
            f"model '{name}' failed to load: {str(exc).splitlines()[0]}",
            retry_after=engine.retry_after(),
        ) from exc
