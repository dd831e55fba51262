"""Per-principal limits and per-request ceilings, in memory, O(1) per request.

Requests and tokens per minute are token buckets (capacity = the per-minute
figure, refilled continuously), so a key may burst up to its minute's worth
and is then paced. A request is admitted while the token bucket is positive
and charged when its usage is known (after the answer), so a long answer may
overdraw it and the next requests wait until it refills. Concurrency is a
counter released when the response ends, streams included.

Limits hold per gateway process: with N replicas behind a balancer a key can
reach N times its limits (documented in docs/AUTH.md).
"""

from __future__ import annotations

import time
from typing import Any

from vllama.auth.keys import Limits
from vllama.errors import BadRequest, RateLimited


class Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> float:
        """Take one unit: 0.0 if taken, else the seconds until one is there."""
        self._refill(now)
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate

    def positive(self, now: float) -> float:
        """0.0 while the bucket holds anything, else the seconds until it does."""
        self._refill(now)
        return 0.0 if self.level > 0 else (1.0 - self.level) / self.rate

    def charge(self, amount: int, now: float) -> None:
        self._refill(now)
        self.level -= amount


class Limiter:
    """One principal's limits and the state that enforces them."""

    __slots__ = ("active", "limits", "requests", "tokens")

    def __init__(self, limits: Limits, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        self.limits = limits
        self.requests = Bucket(limits.rpm, moment) if limits.rpm else None
        self.tokens = Bucket(limits.tpm, moment) if limits.tpm else None
        self.active = 0

    def admit(self, now: float | None = None) -> None:
        """Count a request in, or raise RateLimited (429) with Retry-After.

        The caller calls ``release`` once the response has ended."""
        limit = self.limits.max_concurrency
        if limit is not None and self.active >= limit:
            raise RateLimited(
                f"too many concurrent requests for this key (limit {limit})",
                retry_after=1,
                code="concurrency_limit_exceeded",
            )
        self.pace(now)
        self.active += 1

    def pace(self, now: float | None = None) -> None:
        """Count one more request in against the rate limits only, or raise
        RateLimited: for the requests after the first on a WebSocket, whose
        connection already holds its concurrency slot."""
        moment = time.monotonic() if now is None else now
        if self.tokens is not None:
            wait = self.tokens.positive(moment)
            if wait:
                raise RateLimited(
                    f"token rate limit reached ({self.limits.tpm} tokens per minute)",
                    retry_after=wait,
                    code="rate_limit_exceeded",
                )
        if self.requests is not None:
            wait = self.requests.take(moment)
            if wait:
                raise RateLimited(
                    f"request rate limit reached ({self.limits.rpm} requests per minute)",
                    retry_after=wait,
                    code="rate_limit_exceeded",
                )

    def release(self) -> None:
        self.active -= 1

    def charge(self, tokens: int, now: float | None = None) -> None:
        if self.tokens is not None and tokens > 0:
            self.tokens.charge(tokens, time.monotonic() if now is None else now)


class Limiters:
    """Limiters by principal id; a principal whose limits changed starts afresh."""

    def __init__(self) -> None:
        self._by_id: dict[str, Limiter] = {}

    def get(self, principal_id: str, limits: Limits) -> Limiter:
        found = self._by_id.get(principal_id)
        if found is None or found.limits != limits:
            found = Limiter(limits)
            if principal_id in self._by_id:
                found.active = self._by_id[principal_id].active
            self._by_id[principal_id] = found
        return found


def requested_tokens(body: dict[str, Any]) -> Any:
    """The output cap a request asks for, in either dialect."""
    options = body.get("options")
    if isinstance(options, dict) and options.get("num_predict") is not None:
        return options["num_predict"]
    if body.get("max_completion_tokens") is not None:
        return body["max_completion_tokens"]
    return body.get("max_tokens")


def check_ceilings(
    body: dict[str, Any], *, max_messages: int | None, max_tokens: int | None
) -> None:
    """400 when a request exceeds the configured message count or output cap."""
    messages = body.get("messages")
    if max_messages is not None and isinstance(messages, list) and len(messages) > max_messages:
        raise BadRequest(
            f"too many messages: {len(messages)} (at most {max_messages})", param="messages"
        )
    asked = requested_tokens(body)
    if (
        max_tokens is not None
        and isinstance(asked, int)
        and not isinstance(asked, bool)
        and asked > max_tokens
    ):
        raise BadRequest(
            f"max_tokens {asked} is above this gateway's limit of {max_tokens}",
            param="max_tokens",
        )
