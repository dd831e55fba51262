"""The router's parts on their own: breaker, balance order, affinity keys,
admission queue, config shapes, and failover over fake attempts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from vllama.auth.principal import STATE_KEY, Principal
from vllama.engine.handle import AttachedEngine
from vllama.errors import (
    BadRequest,
    EngineUnavailable,
    ModelNotFound,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from vllama.models.catalog import Catalog, ServedModel
from vllama.routing.admission import BUSY, Admission, ServerBusy
from vllama.routing.backend import Backend
from vllama.routing.balance import affinity_key, order
from vllama.routing.breaker import Breaker
from vllama.routing.config import BackendConfig, ModelRouting, check_backends
from vllama.routing.router import Failover, Lease, Router
from vllama.settings import SettingsError, load_settings

MODEL = ServedModel(name="fake:latest", served_name="fake")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(name: str, **extra: object) -> Backend:
    config = BackendConfig.model_validate({"name": name, "url": f"http://{name}:1", **extra})
    return Backend(config, Breaker(2, 5.0))


def test_breaker_opens_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = Breaker(3, 10.0, clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed"
    breaker.success()  # consecutive failures only
    for _ in range(3):
        breaker.failure()
    assert (breaker.state, breaker.ready()) == ("open", False)
    clock.now += 10
    assert breaker.ready()
    breaker.begin()
    assert (breaker.state, breaker.ready()) == ("half_open", False)  # one probe at a time
    breaker.failure()
    assert (breaker.state, breaker.ready()) == ("open", False)
    clock.now += 10
    breaker.begin()
    breaker.abandon()  # the probe's client left: another may probe
    assert breaker.ready()
    breaker.begin()
    breaker.success()
    assert (breaker.state, breaker.ready(), breaker.opened) == ("closed", True, 1)


def test_order_least_outstanding_weight_then_fallbacks() -> None:
    a, b, c = make("a"), make("b", weight=2), make("c", role="fallback")
    assert [x.name for x in order([a, b, c], None)] == ["b", "a", "c"]  # tie: heavier first
    b.outstanding = 1  # 1/2 per weight unit, still more than a's 0
    assert [x.name for x in order([c, a, b], None)] == ["a", "b", "c"]
    a.outstanding = 1  # a: 1, b: 0.5
    assert [x.name for x in order([a, b, c], None)] == ["b", "a", "c"]
    a.outstanding = b.outstanding = 0
    a.last_pick, b.last_pick = 0, 5
    b.weight = 1
    assert order([a, b], None)[0] is a  # equal: the least recently picked


def test_affinity_is_sticky_and_spreads() -> None:
    backends = [make(n) for n in "abcd"]
    firsts = {order(backends, f"s{i}".encode())[0].name for i in range(40)}
    assert firsts == set("abcd")
    key = b"conversation-7"
    chosen = order(backends, key)[0]
    chosen_again = order(list(reversed(backends)), key)[0]
    assert chosen is chosen_again
    others = [b for b in backends if b is not chosen]
    for other in others:
        other.outstanding = 0
    chosen.outstanding = 5  # still preferred: affinity wins over load
    assert order(backends, key)[0] is chosen


def test_affinity_keys() -> None:
    session = ModelRouting(affinity="session")
    prefix = ModelRouting(affinity="prefix", prefix_messages=1)
    assert affinity_key(ModelRouting(), "s", {}) is None
    assert affinity_key(session, "abc", None) == b"abc"
    assert affinity_key(session, None, {"messages": []}) is None
    one = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "1"}]}
    two = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "2"}]}
    assert affinity_key(prefix, None, one) == affinity_key(prefix, None, two)
    assert affinity_key(prefix, None, {"prompt": "p" * 5000}) == b"p" * 1024


def test_config_shapes() -> None:
    listed = BackendConfig.model_validate({"name": "o", "kind": "ollama", "url": "http://h/v1/"})
    assert listed.url == "http://h"
    assert listed.health_route == "/"
    mapped = BackendConfig.model_validate({"name": "x", "url": "http://h", "models": ["a", "b"]})
    assert mapped.models == {"a": "a", "b": "b"}
    with pytest.raises(ValidationError, match="needs a url"):
        BackendConfig.model_validate({"name": "x"})
    with pytest.raises(ValidationError, match="no url"):
        BackendConfig.model_validate({"name": "e", "kind": "managed", "url": "http://h"})
    with pytest.raises(ValueError, match="unique"):
        check_backends([mapped, mapped])
    with pytest.raises(ValueError, match="managed engine"):
        check_backends([BackendConfig.model_validate({"name": "engine", "url": "http://h"})])


async def test_admission_queue_bounds_and_wakes_in_order() -> None:
    queue = Admission(limit=2, timeout=5)
    first = asyncio.ensure_future(queue.wait())
    second = asyncio.ensure_future(queue.wait())
    await asyncio.sleep(0)
    with pytest.raises(ServerBusy) as refused:
        await queue.wait()
    assert refused.value.message == BUSY
    assert refused.value.retry_after == 1
    queue.wake()
    await asyncio.sleep(0)
    assert first.done()
    assert not second.done()
    second.cancel()
    await asyncio.sleep(0)
    assert not queue.waiters
    short = Admission(limit=1, timeout=0.05)
    with pytest.raises(ServerBusy):
        await short.wait()
    assert short.rejected == 1


def _router(*backends: Backend) -> Router:
    engine = Backend(
        BackendConfig(name="engine", kind="managed"),
        Breaker(2, 5.0),
        engine=AttachedEngine("http://engine:1", None),
    )
    return Router([engine, *backends])


async def test_failover_before_the_first_byte_and_leases() -> None:
    router = _router(make("b"))
    tried: list[str] = []

    async def attempt(backend: Backend, target: str, lease: Lease) -> str:
        tried.append(backend.name)
        assert backend.outstanding == 1
        if backend.name == "engine":
            raise UpstreamUnreachable("refused")
        return f"{backend.name}:{target}"

    router.backends[1].last_pick = 1  # the engine goes first
    result, lease = await router.route(MODEL, attempt)
    assert (result, tried) == ("b:fake", ["engine", "b"])
    assert [b.outstanding for b in router.backends] == [0, 1]
    lease.release()
    lease.release()
    assert [b.outstanding for b in router.backends] == [0, 0]
    assert (router.backends[0].failures, router.backends[1].served) == (1, 1)


async def test_client_errors_are_not_failed_over_and_last_answer_is_relayed() -> None:
    router = _router(make("b"))
    tried: list[str] = []

    async def refuse(backend: Backend, target: str, lease: Lease) -> str:
        tried.append(backend.name)
        raise BadRequest("no")

    with pytest.raises(BadRequest):
        await router.route(MODEL, refuse)
    assert len(tried) == 1
    assert all(b.breaker.state == "closed" and b.outstanding == 0 for b in router.backends)

    async def fail(backend: Backend, target: str, lease: Lease) -> str:
        raise Failover(UpstreamTimeout("slow"), answer=f"answer from {backend.name}")

    result, _ = await router.route(MODEL, fail)
    assert result.startswith("answer from")
    assert all(b.failures == 1 and b.outstanding == 0 for b in router.backends)


async def test_mapped_models_and_models_only_elsewhere() -> None:
    other = make("o", kind="ollama", models={"llama3.2:1b": "llama3.2:1b-q4", "fake": "f"})
    router = _router(other)
    catalog = Catalog([MODEL])
    router.adopt(catalog)
    llama = catalog.resolve("llama3.2:1b")
    assert router.backends[0].target(llama) == "llama3.2:1b"  # attached, not yet listed
    router.adopt(catalog, {"data": [{"id": "fake"}]})
    assert router.backends[0].target(llama) is None
    assert other.target(llama) == "llama3.2:1b-q4"
    assert other.target(MODEL) == "f"
    assert router.backends[0].target(MODEL) == "fake"

    async def never(backend: Backend, target: str, lease: Lease) -> str:
        raise AssertionError

    router.backends[0].engine = Starting("http://engine:1", None)
    with pytest.raises(EngineUnavailable, match="engine is starting"):
        await router.route(MODEL, never, native_ok=False)  # the only OpenAI-speaking one
    with pytest.raises(ModelNotFound):
        await router.route(llama, never, native_ok=False)  # only Ollama serves it


class Starting(AttachedEngine):
    @property
    def is_ready(self) -> bool:
        return False

    @property
    def state(self) -> str:
        return "starting"


def test_session_key_from_the_header_or_the_api_key() -> None:
    router = Router([], {"fake": ModelRouting(affinity="session")})
    header = {"headers": [(b"x-session-id", b"chat-1")]}
    assert router.key_for(MODEL, header, None) == b"chat-1"
    keyed = {"headers": [], "state": {STATE_KEY: Principal(id="k1", name="alice")}}
    assert router.key_for(MODEL, keyed, None) == b"key:k1"
    assert router.key_for(MODEL, {"headers": []}, None) is None
    other = ServedModel(name="other:latest", served_name="other")
    assert router.key_for(other, header, None) is None  # no affinity for it


def test_backends_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "vllama.toml"
    config.write_text(
        '[[backends]]\nname = "r2"\nurl = "http://10.0.0.2:8000/v1"\nweight = 2\n'
        '[[backends]]\nname = "ol"\nkind = "ollama"\nurl = "http://h:11434"\nrole = "fallback"\n'
        'models = { "smollm2:135m" = "smollm2:135m-q4" }\n'
        '[model_routing."*"]\naffinity = "prefix"\n'
    )
    settings = load_settings(config_file=config, environ={})
    assert [(b.name, b.kind, b.url, b.role) for b in settings.backends] == [
        ("r2", "openai", "http://10.0.0.2:8000", "primary"),
        ("ol", "ollama", "http://h:11434", "fallback"),
    ]
    assert settings.model_routing["*"].affinity == "prefix"
    env = {"VLLAMA_BACKENDS": '[{"name": "x", "url": "http://x:1"}]'}
    assert load_settings(environ=env).backends[0].name == "x"
    with pytest.raises(SettingsError, match="backends"):
        load_settings(environ={"VLLAMA_BACKENDS": '[{"name": "engine", "url": "http://x:1"}]'})
