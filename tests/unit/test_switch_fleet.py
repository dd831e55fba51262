"""The fleet's bookkeeping without processes: keep_alive arithmetic, which backend
serves which name, and forgetting a deleted model. (Loading, unloading and
eviction with real engine processes: tests/integration/test_models_load.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from vllama.engine.spec import EngineSpec
from vllama.engine.supervisor import Supervisor
from vllama.models.catalog import Catalog, ServedModel
from vllama.routing.breaker import Breaker
from vllama.routing.config import BackendConfig
from vllama.routing.router import Router
from vllama.server.fleet import FOREVER_SECONDS, Fleet, KeepAlive
from vllama.settings import load_settings


def supervisor(tmp_path: Path, port: int) -> Supervisor:
    spec = EngineSpec(
        argv=["true"], env={}, host="127.0.0.1", port=port, api_key="k",
        log_path=tmp_path / f"engine-{port}.log",
    )  # fmt: skip
    return Supervisor(spec)


def model(name: str) -> ServedModel:
    return ServedModel(name=name, served_name=name)


def test_keep_alive_counts_from_the_later_of_the_last_request_and_activity() -> None:
    keep = KeepAlive(default_seconds=300)
    assert keep.expires_at("a", since=1000) == 1300  # never asked: the default from since
    keep.touch("A:latest", 10, now=2000)
    assert keep.expires_at("a:latest", since=1000) == 2010  # names are case-insensitive
    assert keep.expires_at("a", since=5000) == 5010  # busy until 5000
    keep.touch("a", None, now=2000)
    assert keep.expires_at("a", since=0) == 2000 + FOREVER_SECONDS
    keep.touch("a", 0, now=3000)
    assert keep.expires_at("a", since=0) == 3000


@pytest.mark.parametrize(("given", "stored"), [("-1", "-1s"), ("300", "300s"), ("5m", "5m")])
def test_keep_alive_setting_takes_ollama_forms(given: str, stored: str) -> None:
    settings = load_settings(environ={"OLLAMA_KEEP_ALIVE": given})
    assert settings.keep_alive == stored
    assert load_settings(environ={}).keep_alive == "-1s"  # never, by default


def test_bad_keep_alive_setting_stops_the_start() -> None:
    from vllama.settings import SettingsError

    with pytest.raises(SettingsError, match="keep_alive"):
        load_settings(environ={"OLLAMA_KEEP_ALIVE": "soon"})


async def test_each_engine_serves_exactly_its_own_models(tmp_path: Path) -> None:
    primary = supervisor(tmp_path, 1001)
    other = BackendConfig(name="remote", url="http://10.0.0.2:8000", models=["qwen"])
    router = Router.build(primary, [other], {}, breaker_failures=3, breaker_cooldown=5)
    catalog = Catalog([model("alpha:latest")])
    fleet = Fleet(primary, router, catalog, KeepAlive(None))  # as the Gateway does
    router.adopt(catalog)
    second = fleet.add_slot(supervisor(tmp_path, 1002), Breaker(3, 5))
    fleet.assign(second, [model("beta:latest"), model("beta-lora:latest")])

    assert second.backend.name == "engine-2"
    assert router.backends[-1] is second.backend
    targets = {
        name: [b.name for b in router.backends if b.target(catalog.resolve(name))]
        for name in ("alpha", "beta", "beta-lora", "qwen")
    }
    assert targets == {
        "alpha": ["engine"],
        "beta": ["engine-2"],
        "beta-lora": ["engine-2"],
        "qwen": ["remote"],
    }
    assert fleet.slot_of(catalog.resolve("beta-lora")) is second
    assert fleet.loaded() == []  # nothing started
    assert not fleet.expired(second, now=10**10)  # a stopped engine never "expires"


async def test_a_deleted_model_is_forgotten_by_stopped_engines(tmp_path: Path) -> None:
    primary = supervisor(tmp_path, 1001)
    router = Router.build(primary, [], {}, breaker_failures=3, breaker_cooldown=5)
    catalog = Catalog([model("alpha:latest")])
    fleet = Fleet(primary, router, catalog, KeepAlive(None))
    second = fleet.add_slot(supervisor(tmp_path, 1002), Breaker(3, 5))
    fleet.assign(second, [model("beta:latest"), model("beta-lora:latest")])
    fleet.forget("beta-lora")
    assert [m.name for m in second.models] == ["beta:latest"]
    assert catalog.find("beta-lora") is None
    fleet.forget("beta")  # the base: its slot serves nothing now
    assert second.models == []
    assert catalog.find("beta") is None
    assert catalog.find("alpha") is not None
