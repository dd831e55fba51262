"""The caller of one request, as routes see it.

The auth middleware puts a ``Principal`` in the request's ASGI state; routes
ask it whether a model is allowed (after resolving the name) and tell it the
tokens used (when the engine reports them). A request nobody authenticated
(auth off, or an open path) has none, and both calls are then no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vllama.auth.limits import Limiter
from vllama.errors import Forbidden
from vllama.models.names import normalize

STATE_KEY = "vllama.principal"

UsageSink = Callable[[str, str, int, int], None]


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def served_name(self) -> str: ...


ModelT = TypeVar("ModelT", bound=_Named)


def model_key(name: str) -> str:
    """A model name as allow-lists compare it (Ollama's normalisation when it
    parses, else the name lower-cased)."""
    try:
        return normalize(name)
    except ValueError:
        return name.strip().lower()


@dataclass(slots=True)
class Principal:
    #: The key id, ``front:<identity>``, ``anonymous`` or ``admin``; never a secret.
    id: str
    name: str
    models: frozenset[str] = frozenset()  #: allowed model keys; empty: all
    limiter: Limiter | None = None
    sink: UsageSink | None = None

    def allows(self, *names: str) -> bool:
        return not self.models or any(model_key(n) in self.models for n in names if n)

    def check_model(self, typed: str, *names: str) -> None:
        if not self.allows(typed, *names):
            raise Forbidden(f"this key may not use model '{typed}'", code="model_not_allowed")

    def record(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One finished request: usage counted, its tokens charged to the limit."""
        if self.limiter is not None:
            self.limiter.charge(prompt_tokens + completion_tokens)
        if self.sink is not None:
            self.sink(self.id, model, prompt_tokens, completion_tokens)


def principal_of(scope: Any) -> Principal | None:
    """The request's principal, if the auth middleware set one."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if state is not None else None
    return found if isinstance(found, Principal) else None


def allow_model(scope: Any, typed: str, *names: str) -> None:
    """403 unless the request's key may use this model (no-op without a key)."""
    principal = principal_of(scope)
    if principal is not None:
        principal.check_model(typed, *names)


def visible(scope: Any, models: Iterable[ModelT]) -> list[ModelT]:
    """The models of a listing this request's key may use (all without a key)."""
    principal = principal_of(scope)
    if principal is None or not principal.models:
        return list(models)
    return [m for m in models if principal.allows(m.name, m.served_name)]


def record_usage(scope: Any, model: str, prompt_tokens: int, completion_tokens: int) -> None:
    principal = principal_of(scope)
    if principal is not None:
        principal.record(model, prompt_tokens, completion_tokens)
