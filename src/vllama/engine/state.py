"""The supervisor's states, the table of allowed transitions, and its failure.

Apart from ``supervisor.py`` so the routes and the CLI can name states without
pulling in process plumbing; ``supervisor`` re-exports all of it.
"""

from __future__ import annotations

from enum import StrEnum

from vllama.errors import EngineUnavailable

#: Retry-After when the engine will not come back by itself.
DOWN_RETRY_AFTER = 30


class EngineState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


_S = EngineState
#: Every allowed transition; anything else is a bug and raises InvalidTransition.
TRANSITIONS: dict[EngineState, frozenset[EngineState]] = {
    _S.STOPPED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.READY, _S.FAILED, _S.RESTARTING, _S.STOPPING}),
    _S.READY: frozenset({_S.RESTARTING, _S.FAILED, _S.STOPPING}),
    _S.RESTARTING: frozenset({_S.STARTING, _S.FAILED, _S.STOPPING}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.FAILED: frozenset({_S.STARTING, _S.STOPPING}),
}


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a supervisor bug, never user input."""


class EngineFailed(EngineUnavailable):
    """The engine cannot serve and will not recover by itself; the message says
    why (``diagnosis``) and quotes the engine's last lines (``tail``)."""

    def __init__(
        self, message: str, *, diagnosis: str | None = None, tail: list[str] | None = None
    ) -> None:
        super().__init__(message, retry_after=DOWN_RETRY_AFTER)
        self.diagnosis = diagnosis
        self.tail = list(tail or [])


def check_transition(old: EngineState, new: EngineState) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"engine cannot go from {old} to {new}")
