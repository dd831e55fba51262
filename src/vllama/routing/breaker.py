"""The circuit breaker of one backend, fed by passive signals.

    closed ──N consecutive failures──▶ open ──cool-down elapsed, a request──▶ half_open
      ▲                                  ▲                                     │
      └──────────── probe succeeds ──────┼─────────────────────────────────────┤
                                         └──────────── probe fails ────────────┘

Failures are what a request saw before its first byte: connection refused or
reset, no first byte in time, a 5xx status. In half-open state one request (the
probe) goes through; the others look elsewhere. Plain attributes, no lock: it
lives on the event loop, and no method awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self.state: State = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self.opened = 0  #: times it opened (a metric)

    def ready(self) -> bool:
        """Would a request be let through now (without taking the probe)?"""
        if self.state == "closed":
            return True
        if self.probing:
            return False
        return self.state == "half_open" or self._clock() - self.opened_at >= self.cooldown

    def begin(self) -> None:
        """A request goes through; in open or half-open state it is the probe."""
        if self.state == "closed":
            return
        self.state = "half_open"
        self.probing = True

    def success(self) -> None:
        self.state = "closed"
        self.consecutive = 0
        self.probing = False

    def failure(self) -> None:
        self.consecutive += 1
        if self.state != "closed" or self.consecutive >= self.threshold:
            if self.state == "closed":
                self.opened += 1
            self.state = "open"
            self.opened_at = self._clock()
        self.probing = False

    def abandon(self) -> None:
        """The request ended neither way (the client left): let another probe."""
        self.probing = False
