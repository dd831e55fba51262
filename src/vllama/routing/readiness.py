"""Is the gateway ready to serve? A verdict over all backends, for ``/ready``.

Ready when every model the gateway serves has at least one backend that is up
(``Backend.up``: the managed engine ready, or a backend whose health check
passed, with its breaker letting traffic through), so a load balancer keeps
sending traffic while vLLM restarts behind an Ollama fallback, and stops when
nothing could answer. A managed engine unloaded after its keep_alive counts
too: a request loads it again, so taking the gateway out of the balancer then
would leave nobody to ask. With no model known yet (an attached engine not
listed yet), one backend up is enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vllama.models.catalog import ServedModel
from vllama.routing.backend import Backend


@dataclass(frozen=True)
class Readiness:
    ready: bool
    #: Every backend by name: True when it is up.
    backends: dict[str, bool]
    #: Models no backend that is up (or loadable on demand) serves.
    unserved: list[str]
    #: Managed engines unloaded, started again by the next request for them.
    on_demand: list[str]


def readiness(backends: Iterable[Backend], models: Iterable[ServedModel]) -> Readiness:
    backends = list(backends)
    able = [b for b in backends if b.up or b.on_demand]
    unserved = [m.name for m in models if not any(b.target(m) is not None for b in able)]
    return Readiness(
        ready=bool(able) and not unserved,
        backends={b.name: b.up for b in backends},
        unserved=unserved,
        on_demand=[b.name for b in backends if b.on_demand],
    )
