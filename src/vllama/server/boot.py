"""Building a Gateway from settings: which engine, which model, which names.

Kept apart from the ``serve`` command so tests build the very same gateway
in-process. Managed mode imports the bundled model on first use (a product
feature: Ollama users expect ``create`` from a GGUF), then prepares the
supervisor; attach mode supervises nothing and learns the models from the
engine once it answers.
"""

from __future__ import annotations

from collections.abc import Callable

from vllama.engine.handle import AttachedEngine, EngineHandle
from vllama.engine.spec import default_engine_python, detect_kind, vllm_spec
from vllama.engine.supervisor import EngineState, Supervisor
from vllama.errors import VllamaError
from vllama.models.bundled import BUNDLED_NAME, ensure_bundled_model
from vllama.models.catalog import Catalog, ServedModel
from vllama.models.manager import ModelManager
from vllama.models.names import normalize
from vllama.models.store import ModelStore
from vllama.protocol.ollama import parse_keep_alive
from vllama.server.fleet import KeepAlive
from vllama.server.gateway import Gateway
from vllama.settings import Settings
from vllama.upstream.client import Timeouts, Upstream

Progress = Callable[[str], None]
StateListener = Callable[[EngineState, str], None]


class EngineNotInstalled(VllamaError):
    status = 503


async def build_gateway(
    settings: Settings,
    *,
    progress: Progress,
    on_state: StateListener | None = None,
) -> Gateway:
    upstream = Upstream(
        pool_size=settings.upstream_pool_size,
        timeouts=Timeouts(
            connect=settings.upstream_connect_timeout,
            first_byte=settings.upstream_first_byte_timeout,
            idle=settings.upstream_idle_timeout,
        ),
    )
    keep_alive = KeepAlive(parse_keep_alive(None, settings.keep_alive))
    kind = detect_kind(settings)
    python = default_engine_python(settings, kind)
    store = ModelStore(settings.models_dir)
    models = ModelManager(store, home=settings.home, engine_python=python)
    if settings.engine_url is not None:
        engine: EngineHandle = AttachedEngine(settings.engine_url, settings.engine_api_key)
        catalog = Catalog(store=store)
        return Gateway(
            settings, engine, upstream, catalog, keep_alive, device="unknown", models=models
        )

    if not python.exists():
        raise EngineNotInstalled(
            f"no engine environment at {python.parent.parent}: run `vllama engine install`"
        )
    local = store.get(settings.model)
    if local is None and normalize(settings.model) == normalize(BUNDLED_NAME):
        local = await ensure_bundled_model(store, python, progress)
    served_name = local.name if local is not None else normalize(settings.model)
    spec = vllm_spec(
        settings,
        kind=kind,
        python=python,
        model=str(local.path) if local is not None else settings.model,
        served_name=served_name,
    )
    supervisor = Supervisor(spec, on_state=on_state)
    served = ServedModel(name=served_name, served_name=served_name, local=local)
    catalog = Catalog([served], store=store)
    return Gateway(settings, supervisor, upstream, catalog, keep_alive, device=kind, models=models)
