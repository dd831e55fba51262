"""Passing over a backend that lacks the model, and the /ready verdict over
all backends: the router's decisions on their own, over fake attempts."""

from __future__ import annotations

import pytest

from vllama.engine.handle import AttachedEngine
from vllama.errors import BadRequest, UpstreamError, UpstreamUnreachable
from vllama.models.catalog import ServedModel
from vllama.routing.backend import Backend
from vllama.routing.breaker import Breaker
from vllama.routing.config import BackendConfig
from vllama.routing.readiness import readiness
from vllama.routing.router import Failover, Lease, Router, fails_over, model_missing

MODEL = ServedModel(name="fake:latest", served_name="fake")
OTHER = ServedModel(name="only-ollama:latest", served_name="only-ollama:latest")


class Managed(AttachedEngine):
    """A managed engine as the router sees it: ready or starting, never checked."""

    def __init__(self, ready: bool, state: str | None = None) -> None:
        super().__init__("http://engine:1", None)
        self.ready = ready
        self._state = state

    @property
    def is_ready(self) -> bool:
        return self.ready

    @property
    def state(self) -> str:
        return self._state or ("ready" if self.ready else "starting")


def engine(ready: bool = True, state: str | None = None, name: str = "engine") -> Backend:
    config = BackendConfig(name=name, kind="managed")
    return Backend(config, Breaker(2, 5.0), engine=Managed(ready, state))


def make(name: str, **extra: object) -> Backend:
    config = BackendConfig.model_validate({"name": name, "url": f"http://{name}:1", **extra})
    return Backend(config, Breaker(2, 5.0))


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (404, "The model `x` does not exist.", True),  # vLLM
        (404, "model 'x' not found", True),  # Ollama
        (404, "model 'x' not found, try pulling it first", True),
        (404, "404 page not found", False),  # a wrong path is not a missing model
        (400, "model 'x' not found", False),
        (500, "anything", True),
        (503, "engine starting", True),
        (422, "messages: Field required", False),
    ],
)
def test_which_errors_fail_over(status: int, message: str, expected: bool) -> None:
    assert fails_over(status, message) is expected
    assert model_missing(status, message) is (expected and status == 404)


async def test_a_missing_model_passes_over_without_blaming_the_backend() -> None:
    a, b, c = make("a"), make("b"), make("c")
    router = Router([a, b, c])
    tried: list[str] = []

    async def attempt(backend: Backend, target: str, lease: Lease) -> str:
        tried.append(backend.name)
        if backend.name == "a":  # the translated path: open_ok raised it
            raise UpstreamError("The model `fake` does not exist.", status=404)
        if backend.name == "b":  # the relayed path: the answer travels along
            missing = UpstreamError("model 'fake' not found", status=404)
            raise Failover(missing, answer="404 from b")
        return "served by c"

    result, lease = await router.route(MODEL, attempt)
    lease.release()
    assert (result, tried) == ("served by c", ["a", "b", "c"])
    # They answered; only the model was elsewhere: no failure, breakers closed.
    assert [(x.failures, x.breaker.consecutive) for x in (a, b)] == [(0, 0), (0, 0)]

    async def nowhere(backend: Backend, target: str, lease: Lease) -> str:
        raise Failover(UpstreamError("model not found", status=404), f"404 from {backend.name}")

    answer, lease = await router.route(MODEL, nowhere)
    lease.release()
    assert answer == "404 from c"  # only the last one's 404 reaches the client (c: least recent)
    assert all(x.outstanding == 0 and x.breaker.state == "closed" for x in (a, b, c))

    async def missing(backend: Backend, target: str, lease: Lease) -> str:
        raise UpstreamError("The model `fake` does not exist.", status=404)

    with pytest.raises(UpstreamError) as raised:
        await router.route(MODEL, missing)
    assert raised.value.status == 404


async def test_other_client_errors_still_stop_at_the_first_backend() -> None:
    router = Router([make("a"), make("b")])
    tried: list[str] = []

    async def refuse(backend: Backend, target: str, lease: Lease) -> str:
        tried.append(backend.name)
        raise UpstreamError("404 page not found", status=404)

    with pytest.raises(UpstreamError):
        await router.route(MODEL, refuse)
    assert len(tried) == 1

    async def bad(backend: Backend, target: str, lease: Lease) -> str:
        tried.append(backend.name)
        raise BadRequest("no")

    with pytest.raises(BadRequest):
        await router.route(MODEL, bad)
    assert len(tried) == 2


def test_ready_when_the_engine_is_ready_alone() -> None:
    assert readiness([engine(ready=True)], [MODEL]).ready
    starting = readiness([engine(ready=False)], [MODEL])
    assert (starting.ready, starting.backends, starting.unserved) == (
        False,
        {"engine": False},
        ["fake:latest"],
    )


def test_ready_through_another_backend_once_it_is_checked() -> None:
    ollama = make("ollama", kind="ollama", role="fallback", models=["fake", "only-ollama"])
    backends = [engine(ready=False), ollama]
    # Before its first health check, routing may try it but readiness does not count it.
    assert not readiness(backends, [MODEL, OTHER]).ready
    ollama.checked = True
    verdict = readiness(backends, [MODEL, OTHER])
    assert verdict.ready
    assert verdict.backends == {"engine": False, "ollama": True}
    ollama.healthy = False  # the last check failed
    assert readiness(backends, [MODEL, OTHER]).unserved == ["fake:latest", "only-ollama:latest"]


def test_each_model_needs_a_backend_up() -> None:
    ready_engine = engine(ready=True)
    ollama = make("ollama", kind="ollama", models=["only-ollama"], health_path="")
    ready_engine.elsewhere = frozenset({"only-ollama:latest"})
    assert readiness([ready_engine, ollama], [MODEL, OTHER]).ready  # no checks: counted up
    for _ in range(2):
        ollama.breaker.failure()  # open: no traffic, so not up
    verdict = readiness([ready_engine, ollama], [MODEL, OTHER])
    assert (verdict.ready, verdict.unserved) == (False, ["only-ollama:latest"])
    # Nothing listed yet (an attached engine before its /v1/models): one backend up will do.
    attached = Backend(
        BackendConfig(name="engine", kind="managed"),
        Breaker(2, 5.0),
        engine=AttachedEngine("http://e:1", None),
    )
    assert not readiness([attached], []).ready
    attached.checked = True
    assert readiness([attached], []).ready
    attached.healthy = False
    assert not readiness([attached], []).ready


def test_managed_engine_is_not_actively_checked() -> None:
    assert not engine().actively_checked
    assert make("b").actively_checked
    assert not make("c", health_path="").actively_checked


async def test_unreachable_still_counts_against_the_breaker() -> None:
    a, b = make("a"), make("b")
    router = Router([a, b])

    async def attempt(backend: Backend, target: str, lease: Lease) -> str:
        if backend.name == "a":
            raise UpstreamUnreachable("refused")
        return "ok"

    result, lease = await router.route(MODEL, attempt)
    lease.release()
    assert (result, a.failures, a.breaker.consecutive) == ("ok", 1, 1)


def test_an_unloaded_engine_loads_on_demand_so_the_gateway_stays_ready() -> None:
    """keep_alive stopped the engine: a request starts it again, so taking the
    gateway out of the balancer would leave nobody to send that request."""
    unloaded = engine(ready=False, state="stopped")
    verdict = readiness([unloaded], [MODEL])
    assert (verdict.ready, verdict.on_demand, verdict.backends) == (
        True,
        ["engine"],
        {"engine": False},
    )
    for state in ("starting", "failed", "restarting"):
        assert not readiness([engine(ready=False, state=state)], [MODEL]).ready, state
